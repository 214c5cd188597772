"""The whole training step, inference on the 10,000 MNIST test images, an epoch's projected time,
NumPy's own GEMM rate (the yardstick), and memory: no growth from step to step."""
import os
import resource

import common
from compare import STEPS_PER_EPOCH, load_test_images
from minialex import backend


def test_training_step(run, benchmark, model, batch):
    x, y = batch
    run(lambda: model.train_on_batch(x, y), rounds=20)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info["gflop_per_step"] = common.step_flops(model) / 1e9
    benchmark.extra_info["gflop_per_s"] = common.step_flops(model) / seconds / 1e9
    benchmark.extra_info["epoch_seconds_projected"] = STEPS_PER_EPOCH * seconds


def test_gemm_rate(run, benchmark, bench_backend):
    function, flops = common.gemm_function()
    run(function, rounds=30)
    benchmark.extra_info["gflop_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_inference_on_mnist_test_images(run, benchmark, model):
    data_dir = os.environ.get("MINIALEX_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mnist"))
    images, source = load_test_images(data_dir)
    images = backend.to_device(images)
    run(lambda: model.predict(images, batch_size=128), rounds=3)
    benchmark.extra_info["images_per_s"] = len(images) / benchmark.stats.stats.median
    benchmark.extra_info["images"] = source


def test_no_memory_growth_from_step_to_step(benchmark, model, batch):
    """Resident memory after 20 and after 120 steps: the difference is what each step leaks."""
    x, y = batch

    def steps(count):
        for _ in range(count):
            model.train_on_batch(x, y)
        backend.synchronize()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # MB (Linux reports KB)

    after_warmup = steps(20)
    after_more = benchmark.pedantic(steps, args=(100,), rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = after_more
    benchmark.extra_info["growth_mb_per_100_steps"] = after_more - after_warmup
    assert after_more - after_warmup < 5, f"peak RSS grew {after_more - after_warmup:.1f} MB over 100 steps"
