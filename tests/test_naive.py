"""The plain twins (minialex.naive): every fast layer equals its twin, forward and backward, and every
twin's backward equals central finite differences; float64 throughout.

The fast layer runs on the active backend, its twin on host copies of the same arrays, so a CuPy run
holds the GPU code to the loops. ``test_a_wrong_twin_fails_the_comparison`` shows the comparison can fail.
"""
import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from minialex import backend, naive
from minialex.gradcheck import TOLERANCE, numerical_gradient, relative_error, tie_free
from minialex.layers import Conv2D, Dense, Dropout, LocalResponseNorm, MaxPool2D, ReLU, Softmax
from minialex.losses import SoftmaxCrossEntropy

from .test_properties import window_setups

TWIN_TOLERANCE = 1e-12   # fast layer vs twin: max |difference| relative to the tensor's largest entry
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def host(a):
    return backend.to_numpy(a)


def inputs(shape, seed, kind="normal"):
    """Host float64 inputs: 'normal' draws, or 'integers' in [-2, 2] (ties everywhere, zeros too)."""
    rng = np.random.default_rng(seed)
    if kind == "integers":
        return rng.integers(-2, 3, shape).astype(np.float64)
    return rng.standard_normal(shape)


def run_fast(layer, x, seed):
    """A training forward and backward of ``layer`` on the active backend, fed the host array ``x`` and a
    random upstream gradient. Returns host copies: y, the upstream gradient, dx and the layer's grads."""
    y = layer.forward(backend.to_device(x), training=True)
    dout = inputs(y.shape, seed + 1)
    dx = layer.backward(backend.to_device(dout))
    return host(y), dout, host(dx), {name: host(grad) for name, grad in layer.grads.items()}


def mismatch(fast, twin):
    """max |fast - twin| relative to the larger tensor's largest entry (0 when both are all zero: equal)."""
    scale = max(np.abs(fast).max(initial=0.0), np.abs(twin).max(initial=0.0))
    return 0.0 if scale == 0.0 else float(np.abs(fast - twin).max() / scale)


def assert_twins(**pairs):
    """Each name=(fast, twin) pair has one shape and agrees to TWIN_TOLERANCE."""
    for name, (fast, twin) in pairs.items():
        fast, twin = host(fast), host(twin)
        assert fast.shape == twin.shape, f"{name}: {fast.shape} != {twin.shape}"
        error = mismatch(fast, twin)
        assert error <= TWIN_TOLERANCE, f"{name}: fast and twin differ by {error:.3g} (relative)"


def host_params(layer):
    return {name: host(value) for name, value in layer.params.items()}


# ---- (a) every fast layer equals its twin ------------------------------------------------------

@SETTINGS
@given(setup=window_setups(max_window=4, max_batch=2), use_bias=st.booleans(),
       activation=st.sampled_from([None, "relu"]))
@example(setup=dict(n=2, h=7, w=6, c=3, window=(3, 3), strides=(1, 1), padding="valid", f=4, seed=1),
         use_bias=True, activation=None)
@example(setup=dict(n=2, h=7, w=6, c=3, window=(3, 3), strides=(1, 1), padding="same", f=4, seed=2),
         use_bias=True, activation=None)
@example(setup=dict(n=2, h=8, w=7, c=2, window=(3, 3), strides=(2, 2), padding="valid", f=3, seed=3),
         use_bias=False, activation=None)
@example(setup=dict(n=1, h=8, w=7, c=2, window=(3, 2), strides=(2, 2), padding="same", f=3, seed=4),
         use_bias=True, activation="relu")
def test_conv2d_equals_its_twin(xp_backend, setup, use_bias, activation):
    s = setup
    layer = Conv2D(s["f"], s["window"], strides=s["strides"], padding=s["padding"], activation=activation,
                   use_bias=use_bias, dtype="float64")
    x = inputs((s["n"], s["h"], s["w"], s["c"]), s["seed"])
    layer.build(x.shape[1:])
    if use_bias:
        layer.params["bias"][...] = backend.to_device(inputs(s["f"], s["seed"] + 2))
    params = host_params(layer)
    y, dout, dx, grads = run_fast(layer, x, s["seed"])

    z = naive.conv2d_forward(x, params["kernel"], params.get("bias"), s["strides"], s["padding"])
    dz = dout
    if activation == "relu":
        z, dz = naive.relu_forward(z), naive.relu_backward(dout, z)
    twin_dx, twin_dkernel, twin_dbias = naive.conv2d_backward(dz, x, params["kernel"], s["strides"], s["padding"])
    assert_twins(y=(y, z), dx=(dx, twin_dx), dkernel=(grads["kernel"], twin_dkernel))
    if use_bias:
        assert_twins(dbias=(grads["bias"], twin_dbias))


@SETTINGS
@given(setup=window_setups(max_window=3, max_batch=2), kind=st.sampled_from(["integers", "normal"]))
@example(setup=dict(n=2, h=6, w=6, c=3, window=(2, 2), strides=(2, 2), padding="valid", f=1, seed=5),
         kind="integers")
@example(setup=dict(n=2, h=7, w=6, c=3, window=(3, 3), strides=(2, 2), padding="same", f=1, seed=6),
         kind="integers")
@example(setup=dict(n=1, h=5, w=7, c=2, window=(3, 2), strides=(1, 1), padding="same", f=1, seed=7),
         kind="integers")
def test_maxpool2d_equals_its_twin_even_with_ties(xp_backend, setup, kind):
    s = setup
    layer = MaxPool2D(s["window"], strides=s["strides"], padding=s["padding"])
    x = inputs((s["n"], s["h"], s["w"], s["c"]), s["seed"], kind)
    y, dout, dx, _ = run_fast(layer, x, s["seed"])
    assert_twins(y=(y, naive.maxpool2d_forward(x, s["window"], s["strides"], s["padding"])),
                 dx=(dx, naive.maxpool2d_backward(dout, x, s["window"], s["strides"], s["padding"])))


@SETTINGS
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 9)),
       radius=st.integers(0, 3), bias=st.sampled_from([1.0, 2.0, 0.5]), alpha=st.floats(0.1, 1.0),
       beta=st.sampled_from([0.75, 0.5, 1.0, 0.6]), seed=st.integers(0, 1000))
@example(shape=(2, 3, 3, 7), radius=2, bias=1.0, alpha=2e-5, beta=0.75, seed=0)     # the tutorial's LRN
def test_lrn_equals_its_twin(xp_backend, shape, radius, bias, alpha, beta, seed):
    x = inputs(shape, seed) * 2.0
    y, dout, dx, _ = run_fast(LocalResponseNorm(radius, bias, alpha, beta), x, seed)
    assert_twins(y=(y, naive.lrn_forward(x, radius, bias, alpha, beta)),
                 dx=(dx, naive.lrn_backward(dout, x, radius, bias, alpha, beta)))


@SETTINGS
@given(n=st.integers(1, 4), d_in=st.integers(1, 8), d_out=st.integers(1, 6), use_bias=st.booleans(),
       activation=st.sampled_from([None, "relu", "softmax"]), seed=st.integers(0, 1000))
def test_dense_equals_its_twin(xp_backend, n, d_in, d_out, use_bias, activation, seed):
    layer = Dense(d_out, activation=activation, use_bias=use_bias, input_shape=(d_in,), dtype="float64")
    if use_bias:
        layer.params["bias"][...] = backend.to_device(inputs(d_out, seed + 2))
    params = host_params(layer)
    x = inputs((n, d_in), seed)
    y, dout, dx, grads = run_fast(layer, x, seed)

    z = naive.dense_forward(x, params["kernel"], params.get("bias"))
    dz = dout
    if activation == "relu":
        z, dz = naive.relu_forward(z), naive.relu_backward(dout, z)
    elif activation == "softmax":
        z, dz = naive.softmax_forward(z), naive.softmax_backward(dout, z)
    twin_dx, twin_dkernel, twin_dbias = naive.dense_backward(dz, x, params["kernel"])
    assert_twins(y=(y, z), dx=(dx, twin_dx), dkernel=(grads["kernel"], twin_dkernel))
    if use_bias:
        assert_twins(dbias=(grads["bias"], twin_dbias))


@pytest.mark.parametrize("shape", [(5, 7), (2, 4, 3, 6)])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_equals_its_twin_given_its_mask(xp_backend, shape, rate):
    layer = Dropout(rate)
    x = inputs(shape, 3)
    y, dout, dx, _ = run_fast(layer, x, 3)
    mask = host(layer._mask)
    assert 0 < (mask > 0).sum() < mask.size
    assert_twins(y=(y, naive.dropout_forward(x, mask)), dx=(dx, naive.dropout_backward(dout, mask)))


@pytest.mark.parametrize("kind", ["integers", "normal"])      # integers: zeros, ReLU's kink, included
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 5)])
def test_relu_equals_its_twin(xp_backend, shape, kind):
    x = inputs(shape, 4, kind)
    y, dout, dx, _ = run_fast(ReLU(), x, 4)
    assert_twins(y=(y, naive.relu_forward(x)), dx=(dx, naive.relu_backward(dout, x)))


@pytest.mark.parametrize("scale", [1.0, 4.0])    # not saturated: there dx is tiny and rounding decides it
@pytest.mark.parametrize("shape", [(1, 1), (4, 6), (3, 10)])
def test_softmax_equals_its_twin(xp_backend, shape, scale):
    x = inputs(shape, 5) * scale
    y, dout, dx, _ = run_fast(Softmax(), x, 5)
    assert_twins(y=(y, naive.softmax_forward(x)), dx=(dx, naive.softmax_backward(dout, x)))


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("n,classes", [(1, 2), (6, 10)])
def test_softmax_cross_entropy_equals_its_twin(xp_backend, n, classes, scale):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((n, classes)) * scale
    y_onehot = np.eye(classes)[rng.integers(0, classes, n)]
    loss = SoftmaxCrossEntropy()
    value = loss.forward(backend.to_device(logits), backend.to_device(y_onehot))
    assert_twins(loss=(value, naive.softmax_cross_entropy_forward(logits, y_onehot)),
                 dlogits=(loss.backward(), naive.softmax_cross_entropy_backward(logits, y_onehot)))


# ---- the twins run on the active backend too --------------------------------------------------

def twin_calls(x, kernel, bias, dense_kernel):
    """One call of every twin on small arrays, on whatever module the arrays belong to."""
    conv, pool, lrn = ((2, 1), "same"), ((2, 2), (1, 1), "same"), (1, 1.0, 0.5, 0.75)
    z = naive.conv2d_forward(x, kernel, bias, *conv)              # (1, 2, 2, 2)
    rows = z.reshape(1, -1)                                       # (1, 8)
    h = naive.dense_forward(rows, dense_kernel, bias)             # (1, 2)
    return [z, *naive.conv2d_backward(z, x, kernel, *conv),
            naive.maxpool2d_forward(x, *pool), naive.maxpool2d_backward(x, x, *pool),
            naive.lrn_forward(x, *lrn), naive.lrn_backward(x, x, *lrn),
            h, *naive.dense_backward(h, rows, dense_kernel),
            naive.dropout_forward(x, x > 0), naive.dropout_backward(x, x > 0),
            naive.relu_forward(x), naive.relu_backward(x, x),
            naive.softmax_forward(rows), naive.softmax_backward(rows, rows),
            naive.softmax_cross_entropy_forward(rows, rows > 0), naive.softmax_cross_entropy_backward(rows, rows > 0)]


def test_twins_run_on_the_active_backend(xp_backend):
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(shape) for shape in [(1, 3, 2, 2), (2, 2, 2, 2), (2,), (8, 2)]]
    on_host = twin_calls(*arrays)
    on_device = twin_calls(*[backend.to_device(a) for a in arrays])
    for k, (device_result, host_result) in enumerate(zip(on_device, on_host)):
        assert backend.get_array_module(device_result) is backend.xp(), f"result {k} left the backend"
        np.testing.assert_allclose(host(device_result), host_result, rtol=1e-12, atol=1e-15, err_msg=str(k))


def test_naive_imports_no_array_library_itself():
    tree = ast.parse((Path(naive.__file__)).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert not {name.split(".")[0] for name in imported} & {"numpy", "cupy", "cupyx"}, imported


# ---- (b) every twin's backward equals finite differences ---------------------------------------

def assert_backward_matches_finite_differences(forward, backward, arrays, seed=0):
    """``forward()`` reads ``arrays``; ``backward(g)`` returns the gradients of <g, forward()> with respect
    to each of them, in order. Every entry is checked by central differences (arrays perturbed in place)."""
    y = forward()
    g = inputs(np.shape(y), seed)
    analytic = backward(g)
    assert len(analytic) == len(arrays)
    for k, (array, grad) in enumerate(zip(arrays, analytic)):
        numeric = numerical_gradient(lambda: float((forward() * g).sum()), array, np.arange(array.size))
        assert np.abs(numeric).max() > 1e-3, f"input {k}: no signal to check"
        error = relative_error(grad, numeric)
        assert error <= TOLERANCE, f"input {k}: backward and finite differences differ by {error:.3g}"


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 5, 5, 2), (3, 3), (1, 1), "valid"), ((1, 5, 6, 2), (3, 3), (1, 1), "same"),
    ((2, 6, 5, 1), (3, 2), (2, 2), "valid"), ((1, 6, 5, 2), (3, 3), (2, 2), "same"),
    ((1, 4, 4, 2), (2, 2), (2, 1), "same"),
])
def test_conv2d_twin_backward(shape, kernel, strides, padding):
    x, w, b = inputs(shape, 1), inputs(kernel + (shape[-1], 3), 2), inputs(3, 3)
    assert_backward_matches_finite_differences(lambda: naive.conv2d_forward(x, w, b, strides, padding),
                                               lambda g: naive.conv2d_backward(g, x, w, strides, padding),
                                               [x, w, b])


@pytest.mark.parametrize("shape,pool,strides,padding", [
    ((2, 4, 6, 2), (2, 2), (2, 2), "valid"), ((1, 5, 5, 2), (3, 3), (2, 2), "same"),
    ((1, 4, 5, 2), (2, 3), (1, 1), "same"), ((1, 7, 7, 1), (2, 2), (3, 3), "valid"),
])
def test_maxpool2d_twin_backward(shape, pool, strides, padding):
    x = host(tie_free(shape, seed=4))      # distinct values: a step of 1e-6 never swaps a window's winner
    assert_backward_matches_finite_differences(lambda: naive.maxpool2d_forward(x, pool, strides, padding),
                                               lambda g: [naive.maxpool2d_backward(g, x, pool, strides, padding)],
                                               [x])


@pytest.mark.parametrize("radius,bias,alpha,beta", [(2, 1.0, 0.5, 0.75), (1, 2.0, 1.0, 0.6), (0, 1.0, 0.3, 1.0),
                                                    (3, 1.0, 2e-5, 0.75)])
def test_lrn_twin_backward(radius, bias, alpha, beta):
    x = inputs((1, 2, 2, 7), 5) * 2.0
    assert_backward_matches_finite_differences(lambda: naive.lrn_forward(x, radius, bias, alpha, beta),
                                               lambda g: [naive.lrn_backward(g, x, radius, bias, alpha, beta)],
                                               [x])


def test_dense_twin_backward():
    x, w, b = inputs((3, 5), 6), inputs((5, 4), 7), inputs(4, 8)
    assert_backward_matches_finite_differences(lambda: naive.dense_forward(x, w, b),
                                               lambda g: naive.dense_backward(g, x, w), [x, w, b])


def test_dropout_twin_backward():
    x, mask = inputs((4, 6), 9), (inputs((4, 6), 10) > 0) / 0.5
    assert_backward_matches_finite_differences(lambda: naive.dropout_forward(x, mask),
                                               lambda g: [naive.dropout_backward(g, mask)], [x])


def test_relu_twin_backward():
    x = host(tie_free((3, 4, 5), seed=11))     # no entry within a step of the kink at 0
    assert_backward_matches_finite_differences(lambda: naive.relu_forward(x),
                                               lambda g: [naive.relu_backward(g, x)], [x])


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_softmax_twin_backward(scale):
    x = inputs((3, 6), 12) * scale
    assert_backward_matches_finite_differences(lambda: naive.softmax_forward(x),
                                               lambda g: [naive.softmax_backward(g, x)], [x])


def test_softmax_cross_entropy_twin_backward():
    logits, y_onehot = inputs((5, 7), 13) * 3.0, np.eye(7)[[0, 3, 3, 6, 1]]
    assert_backward_matches_finite_differences(
        lambda: naive.softmax_cross_entropy_forward(logits, y_onehot),
        lambda g: [g * naive.softmax_cross_entropy_backward(logits, y_onehot)], [logits])


# ---- (c) the comparison can fail ---------------------------------------------------------------

def lrn_backward_without_window_term(dout, x, *lrn):
    """Wrong: forgets that every output's denominator depends on its neighbours' inputs."""
    return dout * naive.lrn_forward(x, *lrn) / x        # dout / den^beta


def maxpool_backward_to_last_tie(dout, x, *pool):
    """Wrong: the last tie wins (the right rule with the images turned around; windows must tile x)."""
    return naive.maxpool2d_backward(dout[:, ::-1, ::-1], x[:, ::-1, ::-1], *pool)[:, ::-1, ::-1]


def maxpool_backward_by_argmax(dout, x, pool_size, strides, padding):
    """Wrong: the first maximum in reading order (row by row), not the first column's topmost one."""
    (ph, pw), dx = pool_size, np.zeros_like(x)
    for n, oh, ow, c in np.ndindex(dout.shape):
        window = x[n, oh * ph:(oh + 1) * ph, ow * pw:(ow + 1) * pw, c]
        i, j = np.unravel_index(window.argmax(), window.shape)
        dx[n, oh * ph + i, ow * pw + j, c] += dout[n, oh, ow, c]
    return dx


@pytest.mark.parametrize("wrong", [maxpool_backward_to_last_tie, maxpool_backward_by_argmax])
def test_a_wrong_maxpool_twin_fails_only_where_there_are_ties(xp_backend, wrong):
    pool = ((2, 2), (2, 2), "valid")
    for kind, caught in [("normal", False), ("integers", True)]:
        x = inputs((2, 6, 8, 3), 14, kind)
        _, dout, dx, _ = run_fast(MaxPool2D(*pool), x, 14)
        assert_twins(dx=(dx, naive.maxpool2d_backward(dout, x, *pool)))
        if caught:
            with pytest.raises(AssertionError, match="fast and twin differ"):
                assert_twins(dx=(dx, wrong(dout, x, *pool)))
        else:      # tie-free inputs cannot tell the rules apart: that is why the ties are tested
            assert_twins(dx=(dx, wrong(dout, x, *pool)))


@pytest.mark.parametrize("alpha", [0.5, 2e-5])
def test_a_wrong_lrn_twin_fails_the_comparison(xp_backend, alpha):
    lrn = (2, 1.0, alpha, 0.75)
    x = host(tie_free((2, 2, 3, 7), seed=15, low=-2.0, high=2.0))       # no zeros: the wrong twin divides by x
    _, dout, dx, _ = run_fast(LocalResponseNorm(*lrn), x, 15)
    assert_twins(dx=(dx, naive.lrn_backward(dout, x, *lrn)))
    with pytest.raises(AssertionError, match="fast and twin differ"):
        assert_twins(dx=(dx, lrn_backward_without_window_term(dout, x, *lrn)))
