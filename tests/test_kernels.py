"""The GPU path: minialex.kernels and backend.fuse.

- On the CPU: each kernel's NumPy half equals the layer's CPU code it stands in for, and every layer's
  GPU path, run through the launch counter's stand-in (NumPy halves in the kernels' place), gives the
  CPU path's results.
- Each kernel's CUDA half equals its NumPy half: on a GPU (skipped without one), and everywhere as its C++
  compiled for the CPU (a stand-in for ``cupy.ElementwiseKernel``; skipped without g++).
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from minialex import backend, kernels, random, stand_in
from minialex.layers import Conv2D, Dense, Dropout, LocalResponseNorm, MaxPool2D, ReLU
from minialex.layers.activations import add_bias_relu, relu_backward
from minialex.layers.conv import col2im, im2col
from minialex.losses import SoftmaxCrossEntropy, gradient
from minialex.models import alexnet_mnist
from minialex.optimizers import Adam


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


# ---- each NumPy half against the layer's CPU code ---------------------------------------------

@pytest.mark.parametrize("shape,kernel,strides,pads", CONV_CASES)
def test_im2col_numpy_is_conv_im2col_of_the_padded_input(shape, kernel, strides, pads):
    x = rng().standard_normal(shape).astype(np.float32)
    size = out_size(shape, kernel, strides, pads)
    expected = im2col(np.pad(x, ((0, 0),) + pads + ((0, 0),)), kernel, strides, size)
    np.testing.assert_array_equal(kernels.im2col_numpy(x, pads, kernel, strides, size), expected)


@pytest.mark.parametrize("shape,kernel,strides,pads", CONV_CASES)
def test_col2im_numpy_is_conv_col2im_cropped(shape, kernel, strides, pads):
    size = out_size(shape, kernel, strides, pads)
    dcols = rng(1).standard_normal((shape[0] * size[0] * size[1], kernel[0] * kernel[1] * shape[3]))
    padded = (shape[0], shape[1] + sum(pads[0]), shape[2] + sum(pads[1]), shape[3])
    (top, _), (left, _) = pads
    expected = col2im(dcols, padded, kernel, strides, size)[:, top:top + shape[1], left:left + shape[2]]
    np.testing.assert_allclose(kernels.col2im_numpy(dcols, shape, pads, kernel, strides, size), expected, rtol=1e-12)


@pytest.mark.parametrize("radius,bias,alpha,beta", [(2, 1.0, 2e-5, 0.75), (1, 2.0, 0.5, 0.6), (3, 1.5, 0.3, 1.0)])
def test_lrn_numpy_halves_are_the_layer(radius, bias, alpha, beta):
    x, dout = rng(2).standard_normal((2, 3, 4, 7)), rng(3).standard_normal((2, 3, 4, 7))
    layer = LocalResponseNorm(radius, bias, alpha, beta)
    y = layer.forward(x, training=True)
    numpy_y, numpy_den = kernels.lrn_numpy(x, radius, bias, alpha, beta)
    np.testing.assert_allclose(numpy_y, y, rtol=1e-13)
    np.testing.assert_allclose(numpy_den, layer._den, rtol=1e-13)
    np.testing.assert_allclose(kernels.lrn_backward_numpy(dout, x, y, numpy_den, radius, alpha, beta),
                               layer.backward(dout), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("shape,pool,strides,padding", POOL_CASES)
def test_max_pool_numpy_halves_are_the_layer_ties_included(shape, pool, strides, padding):
    x = rng(4).integers(0, 3, shape).astype(np.float32)        # many ties: the routing rule must agree
    layer = MaxPool2D(pool, strides=strides, padding=padding)
    y = layer.forward(x, training=True)
    dout = rng(5).standard_normal(y.shape).astype(np.float32)
    size = y.shape[1:3]
    np.testing.assert_array_equal(kernels.max_pool_numpy(x, pool, strides, layer._pads(x), size), y)
    np.testing.assert_allclose(kernels.max_pool_backward_numpy(dout, x, y, pool, strides, layer._pads(x), size),
                               layer.backward(dout), rtol=1e-6)      # overlapping windows add in another order


def test_dropout_numpy_draws_the_layer_s_mask():
    x = rng(6).standard_normal((64, 84)).astype(np.float32)
    layer = Dropout(0.5)
    random.set_seed(7)
    y = layer.forward(x, training=True)
    generator = random.set_seed(7)
    numpy_y, numpy_mask = kernels.dropout_numpy(x, 0.5, generator)
    np.testing.assert_array_equal(numpy_y, y)
    np.testing.assert_array_equal(numpy_mask, layer._mask)
    assert generator.position == random.get_rng().position == x.size


def test_dropout_numpy_draws_on_its_input_s_backend_not_the_active_one():
    """With another backend active (in the CuPy leg: CuPy), a NumPy input gets a NumPy mask, not a
    device array that ``x * mask`` would mix with a host one."""
    x = rng(6).standard_normal((8, 5)).astype(np.float32)
    expected = kernels.dropout_numpy(x, 0.5, random.Generator(3))
    with stand_in.counting():
        got = kernels.dropout_numpy(x, 0.5, random.Generator(3))
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


def test_softmax_cross_entropy_numpy_is_the_loss():
    logits, targets = rng(8).standard_normal((16, 10)), np.eye(10)[rng(9).integers(0, 10, 16)]
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, targets)
    row_losses, probs = kernels.softmax_cross_entropy_numpy(logits, targets)
    np.testing.assert_allclose(row_losses.sum(), value, rtol=1e-13)
    np.testing.assert_allclose(probs, loss._probs, rtol=1e-13)


def test_adam_numpy_is_the_optimiser():
    param, grad = rng(10).standard_normal(50), rng(11).standard_normal(50)
    optimizer, state = Adam(1e-2), [param.copy(), np.zeros(50), np.zeros(50)]     # parameters, m, v
    expected = param.copy()
    for step in (1, 2, 3):
        optimizer.apply([expected], [grad * step])
        alpha = 1e-2 * (1 - 0.999 ** step) ** 0.5 / (1 - 0.9 ** step)
        kernels.adam_numpy(state[0], grad * step, state[1], state[2], alpha, 0.9, 0.999, 1e-7)
    np.testing.assert_allclose(state[0], expected, rtol=1e-14)
    np.testing.assert_allclose(state[1], optimizer.slots["m"][0], rtol=1e-14)


# ---- the GPU path, run on the CPU through the launch counter's stand-in ------------------------

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


# ---- each CUDA half against its NumPy half: on a GPU (the CuPy leg), and as C++ on the CPU ----------

class CppElementwiseKernel:
    """A stand-in for ``cupy.ElementwiseKernel`` that compiles the same operation as plain C++ for the
    CPU: a loop over ``i``, non-raw arrays bound to their i-th element, raw ones indexed freely (the
    arrays here are C-contiguous, so a flat index is an offset, as CuPy's CArray makes it)."""

    CTYPES = {"int32": "int", "uint64": "unsigned long long", "float32": "float", "float64": "double"}

    def __init__(self, in_params, out_params, operation, name):
        self.params = [p.split() for p in (in_params + "," + out_params).split(",")]   # [("raw",) type, name]
        self.operation, self.libraries = operation, {}

    def _library(self, dtype, is_array):
        """The compiled loop for T = dtype, with the parameters that are arrays (not scalars) marked."""
        import ctypes
        import subprocess
        import tempfile

        key = (dtype, is_array)
        if key not in self.libraries:
            args, binds = ["ptrdiff_t _n"], []
            for words, array in zip(self.params, is_array):
                kind, name = words[-2], words[-1]
                c = self.CTYPES[dtype] if kind == "T" else self.CTYPES[kind]
                if words[0] == "raw":
                    args.append(f"{c}* {name}")
                elif array:
                    args.append(f"{c}* _raw_{name}")
                    binds.append(f"{c}& {name} = _raw_{name}[i];")
                else:
                    args.append(f"{c} {name}")
            source = (f"#include <cmath>\n#include <cstddef>\n#include <algorithm>\nusing namespace std;\n"
                      f"typedef {self.CTYPES[dtype]} T;\nextern \"C\" void run({', '.join(args)}) {{\n"
                      f"for (ptrdiff_t i = 0; i < _n; ++i) {{ {' '.join(binds)}\n{self.operation}\n}} }}\n")
            folder = Path(tempfile.mkdtemp(prefix="minialex_cpp_"))
            (folder / "k.cpp").write_text(source)
            subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(folder / "k.so"), str(folder / "k.cpp")],
                           check=True, capture_output=True)
            self.libraries[key] = ctypes.CDLL(str(folder / "k.so"))
        return self.libraries[key]

    def __call__(self, *args):
        import ctypes

        assert len(args) == len(self.params), "give every input and every output"
        is_array = tuple(isinstance(a, np.ndarray) for a in args)
        dtype = next(str(a.dtype) for words, a in zip(self.params, args) if words[-2] == "T" and hasattr(a, "dtype"))
        values, size = [], None
        for words, a in zip(self.params, args):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                values.append(ctypes.c_void_p(a.ctypes.data))
                size = a.size if words[0] != "raw" else size
            elif words[-2] in ("int32", "uint64"):
                values.append({"int32": ctypes.c_int, "uint64": ctypes.c_ulonglong}[words[-2]](int(a)))
            else:
                values.append((ctypes.c_float if dtype == "float32" else ctypes.c_double)(float(a)))
        self._library(dtype, is_array).run(ctypes.c_ssize_t(size), *values)


class CppCupy:
    """Just enough of the cupy module for kernels' CUDA halves: NumPy arrays, C++ kernels."""
    __name__ = "cupy"
    empty, empty_like = staticmethod(np.empty), staticmethod(np.empty_like)
    uint64, ElementwiseKernel = np.uint64, CppElementwiseKernel


CPP_CUPY = CppCupy()      # one, so that each kernel compiles once (minialex.kernels keeps them per module)


@pytest.fixture(params=["cupy", "cpp"])
def cuda(request):
    """Where the kernels' CUDA halves run: 'cupy', on a GPU (skipped without one; ``pytest --backend cupy``
    runs this leg only); 'cpp', their operation compiled as plain C++ for the CPU (skipped without g++),
    so that their logic is tested everywhere."""
    if request.param == "cpp":
        if shutil.which("g++") is None:
            pytest.skip("no C++ compiler")
        yield request.param
        return
    choice = request.config.getoption("--backend")
    if choice == "numpy" or (choice != "cupy" and not backend.cupy_available()):
        pytest.skip("CuPy or a CUDA device is not available")
    with backend.set_backend("cupy"):
        yield request.param


def run_cuda(cuda, kernel, *args):
    """kernel's CUDA half on the arguments (moved to the GPU for 'cupy'), results as NumPy arrays."""
    if cuda == "cpp":
        return as_tuple(kernel.cuda_half(CPP_CUPY, *args))
    result = kernel(*[backend.to_device(a) if isinstance(a, np.ndarray) else a for a in args])
    return tuple(backend.to_numpy(r) for r in as_tuple(result))


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def same_as_numpy_half(cuda, kernel, *args, rtol=1e-5, atol=1e-6):
    for got, expected in zip(run_cuda(cuda, kernel, *args), as_tuple(kernel.numpy_half(*args))):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape,kernel,strides,pads", CONV_CASES)
def test_cuda_im2col_and_col2im(cuda, shape, kernel, strides, pads):
    size = out_size(shape, kernel, strides, pads)
    x = rng(14).standard_normal(shape).astype(np.float32)
    same_as_numpy_half(cuda, kernels.im2col, x, pads, kernel, strides, size, rtol=0, atol=0)
    dcols = rng(15).standard_normal((shape[0] * size[0] * size[1], kernel[0] * kernel[1] * shape[3]))
    same_as_numpy_half(cuda, kernels.col2im, dcols.astype(np.float32), shape, pads, kernel, strides, size)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("radius,channels", [(2, 32), (1, 3), (3, 5)])
def test_cuda_lrn(cuda, dtype, radius, channels):
    x, dout = (rng(s).standard_normal((2, 5, 6, channels)).astype(dtype) for s in (16, 17))
    y, den = kernels.lrn_numpy(x, radius, 1.0, 0.1, 0.75)
    same_as_numpy_half(cuda, kernels.lrn, x, radius, 1.0, 0.1, 0.75)
    same_as_numpy_half(cuda, kernels.lrn_backward, dout, x, y, den, radius, 0.1, 0.75)


@pytest.mark.parametrize("shape,pool,strides,padding", POOL_CASES)
def test_cuda_max_pool_ties_included(cuda, shape, pool, strides, padding):
    x = rng(18).integers(0, 3, shape).astype(np.float32)        # many ties: the same winners, or a big error
    layer = MaxPool2D(pool, strides=strides, padding=padding)
    y = layer.forward(x)
    pads, size = layer._pads(x), y.shape[1:3]
    dout = rng(19).standard_normal(y.shape).astype(np.float32)
    same_as_numpy_half(cuda, kernels.max_pool, x, pool, strides, pads, size, rtol=0, atol=0)
    same_as_numpy_half(cuda, kernels.max_pool_backward, dout, x, y, pool, strides, pads, size, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_dropout_draws_the_numpy_masks_bit_for_bit(cuda, dtype):
    x = rng(20).standard_normal((64, 84)).astype(dtype)
    first, second = random.Generator(21), random.Generator(21)
    first.bits(5), second.bits(5)
    for got, expected in zip(run_cuda(cuda, kernels.dropout, x, 0.3, first), kernels.dropout_numpy(x, 0.3, second)):
        np.testing.assert_array_equal(got, expected)
    assert first.position == second.position == 5 + x.size


def test_cuda_softmax_cross_entropy(cuda):
    logits = (5 * rng(22).standard_normal((64, 10))).astype(np.float32)
    targets = np.eye(10, dtype=np.float32)[rng(23).integers(0, 10, 64)]
    same_as_numpy_half(cuda, kernels.softmax_cross_entropy, logits, targets)


def test_cuda_adam_in_place(cuda):
    param, grad, m = (rng(s).standard_normal(1000).astype(np.float32) for s in (24, 25, 26))
    on_host = [param, grad, m, np.abs(m)]                       # parameters, gradient, m, v >= 0
    arrays = [a.copy() if cuda == "cpp" else backend.to_device(a) for a in on_host]
    adam = kernels.adam if cuda == "cupy" else lambda *args: kernels.adam.cuda_half(CPP_CUPY, *args)
    for _ in range(3):
        adam(*arrays, 1e-3, 0.9, 0.999, 1e-7)
        kernels.adam_numpy(*on_host, 1e-3, 0.9, 0.999, 1e-7)
    for got, expected in zip(arrays, on_host):
        np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-5, atol=1e-7)


def test_fused_functions_on_the_gpu(cuda):
    if cuda == "cpp":
        pytest.skip("cupy.fuse compiles these; nothing to compile here")
    dout, y = rng(27).standard_normal((8, 5)).astype(np.float32), rng(28).standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_array_equal(backend.to_numpy(relu_backward(backend.to_device(dout), backend.to_device(y))),
                                  relu_backward(dout, y))
    bias = y[0]
    np.testing.assert_array_equal(backend.to_numpy(add_bias_relu(backend.to_device(dout), backend.to_device(bias))),
                                  np.maximum(dout + bias, 0))
    np.testing.assert_allclose(backend.to_numpy(gradient(backend.to_device(dout), backend.to_device(y), 64)),
                               gradient(dout, y, 64), rtol=1e-7)
    relu = ReLU()
    relu.forward(backend.to_device(y), training=True)
    np.testing.assert_array_equal(backend.to_numpy(relu.backward(backend.to_device(dout))), dout * (y > 0))
