"""What the benchmarks share: the tutorial network's layers at their real shapes, FLOP counts,
NumPy's own GEMM rate, threads, and a timer that alternates the things it compares.

Timing rules (shared/design/BENCHMARKING.md): warm up first, take medians, compare A and B by
alternating them in one process, and say how loaded the machine was.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy

from minialex import backend, random, training
from minialex.models import alexnet_mnist

BATCH = 64
GEMM_SHAPE = (3136, 1152, 128)   # conv2d_3's forward product, the network's largest


def set_threads(threads):
    """Limit BLAS (and OpenMP) threads in this process; returns what the BLAS now uses."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None
    if threads:
        threadpool_limits(threads)
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return counts[0] if counts else None


def machine_load():
    """The 1-minute load average (other work on the machine ruins two-thread timings)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def tutorial_model(seed=0, norm="lrn"):
    """The tutorial network, compiled as the notebook does (``norm='batchnorm'``: its BatchNorm chapter's)."""
    random.set_seed(seed)
    model = alexnet_mnist(norm=norm)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def tutorial_batch(batch=BATCH, seed=0):
    """A batch shaped like preprocessed MNIST: x (batch, 32, 32, 1) in [0, 1], one-hot y, on the device."""
    rng = numpy.random.default_rng(seed)
    x = rng.random((batch, 32, 32, 1), dtype=numpy.float32)
    y = numpy.eye(10, dtype=numpy.float32)[rng.integers(0, 10, batch)]
    return backend.to_device(x), backend.to_device(y)


DATA_DIR = os.environ.get("MINIALEX_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mnist"))


def mnist_training_images(count=BATCH, data_dir=DATA_DIR):
    """((x, y), source): the first ``count`` real MNIST training images, preprocessed as the tutorial
    does (32x32x1, /255, one-hot labels), as host NumPy arrays; random ones of the same shape if
    MNIST is not there (real images matter: LRN of real activations, denormals)."""
    from minialex.data import load_mnist, preprocess_images, to_categorical

    try:
        (x, y), _ = load_mnist(data_dir, progress=False, mirrors=[])
    except Exception as exc:  # noqa: BLE001 - no files and no download: still measure, on stand-in images
        print(f"(MNIST not found: {exc}; random images)")
        rng = numpy.random.default_rng(0)
        return (rng.random((count, 32, 32, 1), dtype=numpy.float32),
                numpy.eye(10, dtype=numpy.float32)[rng.integers(0, 10, count)]), "random images"
    return (preprocess_images(x[:count]), to_categorical(y[:count], 10)), "MNIST training images"


def fit_steps(model, x, y, warmup=3, batch=BATCH):
    """(what ``fit`` runs its steps over (x, y) through: ``training.EagerSteps`` on the CPU,
    ``graphs.TrainingSteps`` on a GPU; a function running one step on the first ``batch`` rows), after
    ``warmup`` such steps (on a GPU: eager, captured, replayed)."""
    guard = training.NonFiniteGuard(model, -(-x.shape[0] // batch), x)
    steps = model.training_steps(x, y, guard)
    steps.start_epoch()

    def run():
        steps.run(0, slice(0, batch))

    for _ in range(warmup):
        run()
    return steps, run


def layer_inputs(model, x):
    """[(layer, its input during a forward pass of x)] for every layer of the model."""
    pairs = []
    for layer in model.layers:
        pairs.append((layer, x))
        x = layer.forward(x, training=True)
    return pairs


def layer_flops(layer, batch, backward=True, input_grad=True):
    """Multiply-adds x 2 of a Conv2D's or Dense's matrix products (others: 0)."""
    if "kernel" not in layer.params:
        return 0
    kernel = layer.params["kernel"]
    rows = batch * (layer.output_shape[0] * layer.output_shape[1] if kernel.ndim == 4 else 1)
    one = 2 * rows * int(numpy.prod(kernel.shape))
    return one * (1 + (1 + input_grad if backward else 0))


def step_flops(model, batch=BATCH):
    """FLOPs of one training step: forward, then backward (no input gradient for the first layer)."""
    return sum(layer_flops(layer, batch, input_grad=i > 0) for i, layer in enumerate(model.layers))


def forward_flops(model, batch=BATCH):
    return sum(layer_flops(layer, batch, backward=False) for layer in model.layers)


def timed(function, repeat):
    """Run ``function`` ``repeat`` times; per-call seconds, the device synchronised around each."""
    times = []
    for _ in range(repeat):
        backend.synchronize()
        start = time.perf_counter()
        function()
        backend.synchronize()
        times.append(time.perf_counter() - start)
    return times


def alternate(functions, rounds, block=5, warmup=3):
    """Time several functions in turns, ``block`` calls at a time (AAAAA BBBBB AAAAA ...).

    Returns {name: [seconds per call]}. A block's first call pays for the switch (the other
    library's thread pool still spinning, or its own asleep); taking the median over blocks of
    back-to-back calls measures each the way a training loop runs it.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    results = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            results[name].extend(timed(function, block))
    return results


def blockwise_ratios(ours, theirs, block=5):
    """Median of per-round ratios: the median of our block over the median of theirs."""
    pairs = zip(range(0, len(ours), block), range(0, len(theirs), block))
    return statistics.median(statistics.median(ours[i:i + block]) / statistics.median(theirs[j:j + block])
                             for i, j in pairs)


def median_ms(times):
    return 1000.0 * statistics.median(times)


def gemm_function():
    """(a closure multiplying the network's largest product in float32, its FLOPs)."""
    m, k, n = GEMM_SHAPE
    xp = backend.xp()
    a = xp.asarray(numpy.random.default_rng(0).random((m, k), dtype=numpy.float32))
    b = xp.asarray(numpy.random.default_rng(1).random((k, n), dtype=numpy.float32))
    return (lambda: a @ b), 2.0 * m * k * n


def gemm_rate(repeat=20):
    """NumPy's float32 matrix-multiply rate on the network's largest product, GFLOP/s (median)."""
    function, flops = gemm_function()
    return flops / statistics.median(alternate({"gemm": function}, repeat)["gemm"]) / 1e9
