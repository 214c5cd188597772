"""The whole training step, inference on the 10,000 MNIST test images, an epoch's projected time,
NumPy's own GEMM rate (the yardstick), and memory: no growth from step to step."""
import os
import resource
import statistics

import common
from compare import STEPS_PER_EPOCH, load_test_images
from minialex import backend


def test_training_step(run, benchmark, model, batch):
    x, y = batch
    seconds = run(lambda: model.train_on_batch(x, y), rounds=20)
    benchmark.extra_info["gflop_per_step"] = common.step_flops(model) / 1e9
    if seconds:
        benchmark.extra_info["gflop_per_s"] = common.step_flops(model) / seconds / 1e9
        benchmark.extra_info["epoch_seconds_projected"] = STEPS_PER_EPOCH * seconds


def test_gemm_rate(run, benchmark, bench_backend):
    function, flops = common.gemm_function()
    seconds = run(function, rounds=30)
    if seconds:
        benchmark.extra_info["gflop_per_s"] = flops / seconds / 1e9


def test_inference_on_mnist_test_images(run, benchmark, model):
    data_dir = os.environ.get("MINIALEX_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mnist"))
    images, source = load_test_images(data_dir)
    images = backend.to_device(images)
    seconds = run(lambda: model.predict(images, batch_size=128), rounds=3)
    benchmark.extra_info["images"] = source
    if seconds:
        benchmark.extra_info["images_per_s"] = len(images) / seconds


def resident_mb():
    """This process's resident memory now, in MB (Linux's /proc; peak memory is ru_maxrss)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_no_memory_growth_from_step_to_step(benchmark, model, batch):
    """Resident memory sampled every 10 steps over 200 steps, after 100 to reach steady state: a
    leak of even 100 kB a step would add 20 MB between the first and the last samples."""
    x, y = batch

    def samples():
        rss = []
        for step in range(200):
            model.train_on_batch(x, y)
            if step % 10 == 0:
                backend.synchronize()
                rss.append(resident_mb())
        return rss

    for _ in range(100):
        model.train_on_batch(x, y)
    rss = benchmark.pedantic(samples, rounds=1, iterations=1)
    growth = statistics.mean(rss[-5:]) - statistics.mean(rss[:5])
    benchmark.extra_info.update(resident_mb=rss[-1], growth_mb_over_200_steps=growth,
                                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    assert growth < 8, f"resident memory grew {growth:.1f} MB over 200 steps: {rss}"
