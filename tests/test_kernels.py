"""The GPU path: each kernel's CUDA half against its NumPy half (the layer's own CPU code), and backend.fuse.

- Every ``kernels.Kernel`` of the package has a case in ``CASES``, and its CUDA half gives its NumPy
  half's results: on a GPU (the 'cupy' leg, skipped without one) and everywhere as its C++ compiled for
  the CPU (the 'cpp' leg, ``tests/cpp_kernels.py``; skipped without g++; the halves that reduce with
  ``cupy.ReductionKernel`` run on a GPU only).
- Every layer's GPU path, run on the CPU through ``minialex.stand_in`` (which takes every branch a GPU
  takes, each kernel's NumPy half in its place), gives the CPU path's results, a whole training step
  included.
"""
import copy
import functools
import importlib
import pkgutil

import numpy as np
import pytest

import minialex
from minialex import backend, kernels, random, stand_in
from minialex.layers import Conv2D, Dense, Dropout, LocalResponseNorm, MaxPool2D, ReLU
from minialex import graphs
from minialex.layers import activations, batchnorm, conv, dropout, lrn, pool
from minialex.layers.base import matmul, same_padding
from minialex.losses import gradient, softmax_cross_entropy
from minialex.models import alexnet_mnist
from minialex.optimizers import adam
from minialex.step_values import StepDraws, StepValues

from .cpp_kernels import CPP_CUPY, have_compiler

CONV_CASES = [  # (input shape, kernel, strides, pads)
    ((2, 8, 8, 1), (3, 3), (1, 1), ((0, 0), (0, 0))),
    ((2, 7, 9, 3), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ((3, 8, 7, 2), (3, 3), (2, 2), ((0, 1), (1, 1))),
    ((1, 6, 7, 4), (2, 3), (1, 2), ((0, 1), (1, 1))),
    ((2, 4, 5, 3), (3, 3), (3, 2), ((2, 2), (1, 0))),
]
POOL_CASES = [  # (input shape, pool, strides, padding)
    ((2, 15, 15, 3), (2, 2), (2, 2), "valid"), ((1, 7, 6, 2), (3, 3), (2, 2), "same"),
    ((2, 5, 9, 1), (2, 3), (1, 2), "valid"), ((1, 4, 4, 5), (2, 2), (1, 1), "same"),
]


def out_size(shape, kernel, strides, pads):
    return tuple((shape[1 + a] + sum(pads[a]) - kernel[a]) // strides[a] + 1 for a in range(2))


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, seed, dtype="float32"):
    return rng(seed).standard_normal(shape).astype(dtype)


# ---- one case per kernel: its arguments, which of them it writes in place, and the tolerance ---------

def conv_cases():
    for shape, kernel, strides, pads in CONV_CASES:
        size = out_size(shape, kernel, strides, pads)
        yield conv.im2col, (normal(shape, 14), pads, kernel, strides, size), {"rtol": 0, "atol": 0}
        dz = normal((shape[0] * size[0] * size[1], 4), 15)
        yield conv.col2im_by_taps, (dz, normal(kernel + (shape[3], 4), 16), shape, pads, strides, size), {}


def lrn_cases():
    for dtype in ("float32", "float64"):
        for radius, channels in ((2, 32), (1, 3), (3, 5)):
            x, dout = normal((2, 5, 6, channels), 16, dtype), normal((2, 5, 6, channels), 17, dtype)
            yield lrn.lrn, (x, radius, 1.0, 0.1, 0.75), {}
            y, den, den_beta = lrn.lrn(x, radius, 1.0, 0.1, 0.75)
            yield lrn.lrn_backward, (dout, x, y, den, den_beta, radius, 0.1, 0.75), {}


def pool_cases():
    for shape, window, strides, padding in POOL_CASES:
        x = rng(18).integers(0, 3, shape).astype(np.float32)      # many ties: the same winners, or a big error
        pads = ((0, 0), (0, 0)) if padding == "valid" else tuple(
            same_padding(length, k, s) for length, k, s in zip(shape[1:3], window, strides))
        size = out_size(shape, window, strides, pads)
        y, column_max = pool.max_pool(x, window, strides, pads, size)
        yield pool.max_pool, (x, window, strides, pads, size), {"rtol": 0, "atol": 0}
        yield pool.max_pool_backward, (normal(y.shape, 19), x, column_max, y, window, strides, pads, size), \
            {"rtol": 1e-6, "atol": 0}


def step_draws(seed=21, drawn=5):
    """A step's draws (``StepDraws``) starting where Generator(seed) is after ``drawn`` draws, and that generator."""
    generator = random.Generator(seed)
    generator.bits(drawn)
    draws = StepDraws(StepValues(like=np.zeros(1)))
    draws.start_step(generator)
    return draws, generator


def matmul_cases():
    a, b = normal((7, 5), 30), normal((5, 3), 31)
    for left, right in ((a, b), (np.asfortranarray(a), b), (a, np.asfortranarray(b)), (a.T.copy().T, b.T.copy().T),
                        (a[:1], b), (a, b[:, :1]), (normal((6, 10), 32)[:, ::2], b), (a[:, :1], b[:1])):
        yield matmul, (left, right), {}
    yield matmul, (a, b, np.empty((7, 3), dtype=np.float32)), {"in_place": (2,)}
    yield matmul, (a.astype(np.float64).T, normal((7, 4), 33, "float64")), {"rtol": 1e-12, "atol": 1e-12}


def elementwise_cases():
    for dtype in ("float32", "float64"):
        generator = random.Generator(21)
        generator.bits(5)
        yield dropout.dropout, (normal((64, 84), 20, dtype), 0.3, generator), {"rtol": 0, "atol": 0}
        yield dropout.dropout, (normal((64, 84), 20, dtype), 0.3, step_draws()[0]), {"rtol": 0, "atol": 0}
    product = normal((6, 5), 27)
    product[0, 0] = np.nan                                      # NaN stays NaN, as np.maximum keeps it
    yield activations.add_bias_relu, (product, normal(5, 28)), {"in_place": (0,), "rtol": 0, "atol": 0}
    logits, targets = 5 * normal((64, 10), 22), np.eye(10, dtype=np.float32)[rng(23).integers(0, 10, 64)]
    yield softmax_cross_entropy, (logits, targets), {}
    param, grad, m = normal(1000, 24), normal(1000, 25), normal(1000, 26)
    yield adam, (param, grad, m, np.abs(m), np.empty_like(param), 1e-3, 0.9, 0.999, 1e-7), \
        {"in_place": (0, 2, 3), "rtol": 1e-5, "atol": 1e-7}
    values = StepValues(like=param)
    values["alpha"] = 1e-3
    yield adam, (param, grad, m, np.abs(m), np.empty_like(param), values.view("alpha"), 0.9, 0.999, 1e-7), \
        {"in_place": (0, 2, 3), "rtol": 1e-5, "atol": 1e-7}
    loss, correct = np.asarray(0.75, dtype=np.float32), np.asarray(5, dtype=np.int64)
    sums = (np.asarray(2.5, dtype=np.float32), np.asarray(7, dtype=np.int64))
    yield graphs.add_to_sums, (loss, correct, 16, *sums), {"in_place": (3, 4), "rtol": 0, "atol": 0}
    values["step"] = 2
    yield graphs.record_step, (loss, correct, 16, values.view("step"), np.zeros(4, dtype=np.float32), *sums), \
        {"in_place": (4, 5, 6), "rtol": 0, "atol": 0}


def batchnorm_cases():
    for dtype in ("float32", "float64"):
        rows, dout = normal((12, 4), 8, dtype) + 2.0, normal((12, 4), 9, dtype)
        mean, variance = batchnorm.batch_statistics(rows)
        for gamma, beta in ((normal(4, 10, dtype) + 2.0, normal(4, 11, dtype)), (1.0, 0.0)):
            yield batchnorm.normalize, (rows, mean, variance, gamma, beta, 1e-3), {}
            yield batchnorm.normalize_for_inference, (rows, mean, variance, gamma, beta, 1e-3), {}
            y, xhat = batchnorm.normalize(rows, mean, variance, gamma, beta, 1e-3)
            dbeta, dgamma = batchnorm.parameter_gradients(dout, xhat, None, None)
            # these 12 rows as one shard of a batch of 30
            yield batchnorm.batchnorm_backward, (dout, xhat, dbeta, dgamma, gamma, variance, 1e-3, 30), {}
        yield batchnorm.update_moving_statistics, (mean, variance, 0.9, np.zeros(4, dtype), np.ones(4, dtype)), \
            {"in_place": (3, 4)}
        yield batchnorm.batch_statistics, (rows,), {"reduces": True}
        yield batchnorm.parameter_gradients, (dout, rows, np.empty(4, dtype), None), {"reduces": True}


@functools.lru_cache(maxsize=None)
def all_cases():
    """[(kernel, arguments, options)]: the tests copy the arguments before each call."""
    return [*conv_cases(), *lrn_cases(), *pool_cases(), *matmul_cases(), *elementwise_cases(), *batchnorm_cases()]


def package_kernels():
    """Every ``kernels.Kernel`` defined in a module of minialex."""
    found = set()
    for module_info in pkgutil.walk_packages(minialex.__path__, "minialex."):
        module = importlib.import_module(module_info.name)
        found |= {value for value in vars(module).values() if isinstance(value, kernels.Kernel)}
    return found


def test_every_kernel_of_the_package_has_a_case():
    assert package_kernels() - {kernel for kernel, _, _ in all_cases()} == set()


# ---- each CUDA half against its NumPy half: on a GPU (the CuPy leg), and as C++ on the CPU ----------

@pytest.fixture(params=["cupy", "cpp"])
def cuda(request):
    """Where the kernels' CUDA halves run: 'cupy', on a GPU (skipped without one; ``pytest --backend cupy``
    runs this leg only); 'cpp', their operation compiled as plain C++ for the CPU (skipped without g++),
    so that their logic is tested everywhere."""
    if request.param == "cpp":
        if not have_compiler():
            pytest.skip("no C++ compiler")
        yield request.param
        return
    choice = request.config.getoption("--backend")
    if choice == "numpy" or (choice != "cupy" and not backend.cupy_available()):
        pytest.skip("CuPy or a CUDA device is not available")
    with backend.set_backend("cupy"):
        yield request.param


def run_cuda_half(cuda, kernel, args):
    """(results, arguments after the call) of kernel's CUDA half, as NumPy arrays."""
    if cuda == "cpp":
        return kernel.cuda_half(CPP_CUPY, *args), args
    on_device = [backend.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    return kernel(*on_device), on_device


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", range(len(all_cases())), ids=lambda k: f"{all_cases()[k][0].__name__}-{k}")
def test_each_cuda_half_gives_its_numpy_half_s_results(cuda, case):
    kernel, args, options = all_cases()[case]
    options = {"rtol": 1e-5, "atol": 1e-6, "in_place": (), "reduces": False, **options}
    if options["reduces"] and cuda == "cpp":
        pytest.skip("a reduction (cupy.ReductionKernel): on a GPU only")
    expected_args, cuda_args = copy.deepcopy(args), copy.deepcopy(args)     # generators too: the same draws
    expected = as_tuple(kernel.numpy_half(*expected_args))
    got, cuda_args = run_cuda_half(cuda, kernel, cuda_args)
    pairs = list(zip(as_tuple(got), expected))
    pairs += [(cuda_args[k], expected_args[k]) for k in options["in_place"]]
    for got_array, expected_array in pairs:
        if got_array is None:             # what only the CPU's backward uses (den^beta, column maxima)
            continue
        np.testing.assert_allclose(backend.to_numpy(got_array), expected_array, rtol=options["rtol"],
                                   atol=options["atol"])
    generators = [(a, b) for a, b in zip(cuda_args, expected_args) if isinstance(a, random.Generator)]
    assert all(a.position == b.position for a, b in generators)


def test_fused_functions_on_the_gpu(cuda):
    if cuda == "cpp":
        pytest.skip("cupy.fuse compiles these; nothing to compile here")
    dout, y = normal((8, 5), 27), normal((8, 5), 28)
    np.testing.assert_array_equal(backend.to_numpy(activations.relu_backward(backend.to_device(dout),
                                                                             backend.to_device(y))),
                                  activations.relu_backward(dout, y))
    np.testing.assert_allclose(backend.to_numpy(gradient(backend.to_device(dout), backend.to_device(y), 64)),
                               gradient(dout, y, 64), rtol=1e-7)
    relu = ReLU()
    relu.forward(backend.to_device(y), training=True)
    np.testing.assert_array_equal(backend.to_numpy(relu.backward(backend.to_device(dout))), dout * (y > 0))


# ---- what the NumPy halves draw and where --------------------------------------------------------------

def test_dropout_draws_on_its_input_s_backend_not_the_active_one():
    """With another backend active (in the CuPy leg: CuPy), a NumPy input gets a NumPy mask, not a
    device array that ``x * mask`` would mix with a host one."""
    x = normal((8, 5), 6)
    expected = dropout.dropout(x, 0.5, random.Generator(3))
    with stand_in.counting():
        got = dropout.dropout(x, 0.5, random.Generator(3))
    for array, expected_array in zip(got, expected):
        assert type(array) is np.ndarray
        np.testing.assert_array_equal(array, expected_array)


def splitmix_finaliser(z):
    """The SplitMix64 finaliser, as the dropout kernel runs it on ``start + i * GOLDEN_GAMMA``."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def test_generator_reserve_gives_what_bits_would_draw():
    generator = random.Generator(11)
    generator.bits(5)
    start = generator.reserve((10, 10))
    assert generator.position == 105
    expected = random.Generator(11).bits_at(5, 1)[0]
    assert splitmix_finaliser(np.array([start], dtype=np.uint64))[0] == expected


def test_row_sliced_reserve_gives_the_rows_of_the_whole_draw():
    whole = random.Generator(11)
    whole.bits(5)
    expected = whole.bits((10, 3))
    parent = random.Generator(11)
    parent.bits(5)
    with parent.split_rows([slice(0, 6), slice(6, 10)], 10) as (top, bottom):
        starts = [bottom.reserve((4, 3)), top.reserve((6, 3))]        # any order
    gamma = np.uint64(random.GOLDEN_GAMMA)
    for start, rows in zip(starts, (slice(6, 10), slice(0, 6))):
        z = np.uint64(start) + np.arange(expected[rows].size, dtype=np.uint64) * gamma
        np.testing.assert_array_equal(splitmix_finaliser(z), expected[rows].ravel())
    assert parent.position == whole.position


# ---- the GPU path, run on the CPU through the stand-in --------------------------------------------------

def through_gpu_path(run, *arrays):
    """run(*arrays) with the arrays on the counting stand-in (so every layer takes its GPU path),
    results back as NumPy arrays."""
    with stand_in.counting():
        result = run(*[backend.to_device(a) for a in arrays])
        return [np.asarray(r).copy() for r in (result if isinstance(result, tuple) else (result,))]


def forward_backward(make, x, dout_seed=0, training=True):
    def run(x):
        layer = make()
        y = layer.forward(x, training=training)
        dout = backend.to_device(rng(dout_seed).standard_normal(y.shape).astype(y.dtype))
        return y, layer.backward(dout)
    return run


@pytest.mark.parametrize("make", [
    lambda: Conv2D(4, 3, activation="relu", dtype="float64"),
    lambda: Conv2D(3, 3, padding="same", dtype="float64"),
    lambda: Conv2D(3, (2, 3), strides=(2, 1), padding="same", activation="relu", dtype="float64"),
    lambda: LocalResponseNorm(2, 1.0, 0.1, 0.75),
    lambda: MaxPool2D(2),
    lambda: MaxPool2D(3, strides=2, padding="same"),
    lambda: MaxPool2D(2, strides=1),
], ids=["conv", "conv-same", "conv-strided", "lrn", "pool", "pool-same", "pool-overlapping"])
def test_each_layer_s_gpu_path_gives_its_cpu_results(make):
    x = rng(12).standard_normal((2, 9, 8, 3))
    random.set_seed(1)
    run = forward_backward(make, x)
    cpu = run(x)
    random.set_seed(1)
    gpu = through_gpu_path(run, x)
    for expected, got in zip(cpu, gpu):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_dense_relu_dropout_gpu_path_gives_the_cpu_results():
    def make():
        return Dense(6, activation="relu", dtype="float64")

    x = rng(13).standard_normal((5, 4))
    for layer_run in (forward_backward(make, x), forward_backward(lambda: Dropout(0.4), x)):
        random.set_seed(2)
        cpu = layer_run(x)
        random.set_seed(2)
        for expected, got in zip(cpu, through_gpu_path(layer_run, x)):
            np.testing.assert_array_equal(got, expected)


def tutorial_model(seed):
    random.set_seed(seed)
    model = alexnet_mnist()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_training_step_s_gpu_path_gives_the_cpu_gradients():
    x = rng(3).random((24, 32, 32, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng(3).integers(0, 10, 24)]
    model = tutorial_model(seed=4)
    random.set_seed(5)
    model.train_step(x, y)
    expected = model.flat_gradients.copy()
    with stand_in.counting():
        model = tutorial_model(seed=4)
        random.set_seed(5)
        model.train_step(backend.to_device(x), backend.to_device(y))
        got = np.asarray(model.flat_gradients).copy()
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-6)
