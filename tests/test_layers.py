"""Every layer: forward against the loop references, backward against finite differences (float64),
and the layer contract; on each backend."""
import re

import numpy as np
import pytest

from minialex import backend, naive, random
from minialex.gradcheck import TOLERANCE, check_layer, check_loss, layer_cases, tie_free
from minialex.layers import base as layer_base
from minialex.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D,
                             ReLU, Softmax, caffe_to_tf, tf_to_caffe)
from minialex.losses import SoftmaxCrossEntropy


def host(a):
    return backend.to_numpy(a)


def assert_gradients(layer, x, samples=None):
    errors = check_layer(layer, x, samples=samples)
    assert errors, "nothing was checked"
    worst = max(errors.values())
    assert worst <= TOLERANCE, f"{layer.name}: {errors}"


# ---- forward references ----------------------------------------------------------------------

CONV_CASES = [  # (input shape, filters, kernel, strides, padding)
    ((1, 5, 5, 1), 2, (3, 3), (1, 1), "valid"),
    ((2, 7, 9, 3), 5, (3, 3), (1, 1), "same"),
    ((3, 8, 7, 2), 3, (3, 3), (2, 2), "same"),
    ((2, 9, 8, 5), 7, (3, 3), (2, 2), "valid"),
    ((1, 6, 7, 4), 3, (2, 3), (1, 2), "same"),
    ((2, 4, 4, 3), 2, (1, 1), (1, 1), "valid"),
]


@pytest.mark.parametrize("shape,filters,kernel,strides,padding", CONV_CASES)
def test_conv_forward_matches_direct_convolution(xp_backend, shape, filters, kernel, strides, padding):
    layer = Conv2D(filters, kernel, strides=strides, padding=padding, dtype="float64")
    x = tie_free(shape, seed=3)
    bias = np.linspace(-0.5, 0.5, filters)
    layer.build(shape[1:])
    layer.params["bias"][...] = backend.to_device(bias)
    expected = naive.conv2d_forward(host(x), host(layer.params["kernel"]), bias, strides, padding)
    got = host(layer.forward(x))
    assert got.shape == expected.shape == (shape[0],) + layer.output_shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,kernel,stride,padding,expected", [
    (32, 3, 1, "valid", 30), (15, 3, 1, "same", 15), (15, 3, 2, "same", 8), (15, 3, 2, "valid", 7),
    (8, 3, 2, "same", 4), (7, 2, 2, "same", 4), (6, 3, 2, "valid", 2),
])
def test_conv_output_sizes_are_keras(length, kernel, stride, padding, expected):
    layer = Conv2D(1, kernel, strides=stride, padding=padding, input_shape=(length, length, 1))
    assert layer.output_shape == (expected, expected, 1)


@pytest.mark.parametrize("shape,pool,strides,padding", [
    ((2, 15, 15, 3), (2, 2), (2, 2), "valid"),
    ((1, 7, 6, 2), (3, 3), (2, 2), "same"),
    ((2, 5, 9, 1), (2, 3), (1, 2), "valid"),
    ((1, 4, 4, 5), (2, 2), (1, 1), "same"),
])
def test_maxpool_forward_matches_window_max(xp_backend, shape, pool, strides, padding):
    x = tie_free(shape, seed=5)
    layer = MaxPool2D(pool, strides=strides, padding=padding)
    np.testing.assert_array_equal(host(layer.forward(x)), naive.maxpool2d_forward(host(x), pool, strides, padding))


def test_maxpool_floor_sizes_like_keras():
    assert MaxPool2D(2, input_shape=(15, 15, 32)).output_shape == (7, 7, 32)
    assert MaxPool2D(2, input_shape=(30, 30, 32)).output_shape == (15, 15, 32)


def test_maxpool_sends_a_tie_to_one_winner_the_first(xp_backend):
    x = backend.to_device(np.ones((1, 2, 2, 1)))
    layer = MaxPool2D(2)
    layer.forward(x, training=True)
    dx = host(layer.backward(backend.to_device(np.full((1, 1, 1, 1), 3.0))))
    assert dx[0, :, :, 0].tolist() == [[3.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("window,winner", [
    ([[1, 3], [3, 2]], (1, 0)),                     # column 0 holds a 3: its topmost 3 wins over (0, 1)
    ([[3, 1], [2, 3]], (0, 0)),
    ([[1, 2], [0, 2]], (0, 1)),                     # both 2s in column 1: the top one
    ([[0, 5, 5], [5, 1, 5], [2, 5, 0]], (1, 0)),    # 3x3: column 0's only 5 beats the 5s to its right
    ([[0, 1, 7], [0, 7, 7], [0, 7, 2]], (1, 1)),    # columns 1 and 2 tie; column 1 first, then its top 7
])
def test_maxpool_sends_a_partial_tie_to_the_leftmost_column_topmost_row(xp_backend, window, winner):
    x = backend.to_device(np.array(window, dtype=np.float64)[None, :, :, None])
    size = len(window)
    layer = MaxPool2D(size)
    layer.forward(x, training=True)
    dx = host(layer.backward(backend.to_device(np.full((1, 1, 1, 1), 5.0))))[0, :, :, 0]
    expected = np.zeros((size, size))
    expected[winner] = 5.0
    np.testing.assert_array_equal(dx, expected)
    np.testing.assert_array_equal(dx, naive.maxpool2d_backward(np.full((1, 1, 1, 1), 5.0), host(x), (size, size),
                                                              (size, size))[0, :, :, 0])


def test_maxpool_same_pads_with_minus_infinity(xp_backend):
    x = backend.to_device(-np.arange(1.0, 10.0).reshape(1, 3, 3, 1))
    y = host(MaxPool2D(2, padding="same").forward(x))
    assert y[0, :, :, 0].tolist() == [[-1.0, -3.0], [-7.0, -9.0]]


@pytest.mark.parametrize("radius,bias,alpha,beta", [(2, 1.0, 2e-5, 0.75), (2, 1.0, 0.1, 0.75),
                                                    (1, 2.0, 0.5, 0.6), (0, 1.0, 1.0, 0.5), (3, 1.5, 0.3, 1.0)])
def test_lrn_forward_matches_tensorflow_definition(xp_backend, radius, bias, alpha, beta):
    x = tie_free((2, 3, 4, 7), seed=2, low=-3.0, high=3.0)
    got = host(LocalResponseNorm(radius, bias, alpha, beta).forward(x))
    np.testing.assert_allclose(got, naive.lrn_forward(host(x), radius, bias, alpha, beta), rtol=1e-13)


def test_lrn_known_value():
    # one pixel, channels (1, 2, 3): window sums with radius 1 are 5, 14, 13
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    y = LocalResponseNorm(depth_radius=1, bias=1.0, alpha=0.5, beta=1.0).forward(x).ravel()
    np.testing.assert_allclose(y, [1 / 3.5, 2 / 8.0, 3 / 7.5])


def test_lrn_convention_converters_round_trip():
    torch_style = tf_to_caffe(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)
    assert torch_style == {"size": 5, "alpha": pytest.approx(1e-4), "beta": 0.75, "k": 1.0}
    back = caffe_to_tf(**torch_style)
    assert back["depth_radius"] == 2 and back["alpha"] == pytest.approx(2e-5) and back["bias"] == 1.0
    with pytest.raises(ValueError, match="odd"):
        caffe_to_tf(size=4, alpha=1e-4)


def test_dropout_is_inverted_and_identity_at_inference(xp_backend):
    x = backend.to_device(np.ones((200, 50), dtype=np.float32))
    layer = Dropout(0.5)
    assert layer.forward(x) is x
    y = host(layer.forward(x, training=True))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.45 < (y > 0).mean() < 0.55
    dx = host(layer.backward(backend.to_device(np.ones((200, 50), dtype=np.float32))))
    np.testing.assert_array_equal(dx, y)


def test_dropout_masks_follow_the_seed(xp_backend):
    x = backend.to_device(np.ones((4, 30), dtype=np.float32))
    random.set_seed(7)
    first = host(Dropout(0.3).forward(x, training=True))
    random.set_seed(7)
    again = host(Dropout(0.3).forward(x, training=True))
    np.testing.assert_array_equal(first, again)


def test_dense_forward_and_softmax(xp_backend):
    layer = Dense(4, activation="softmax", input_shape=(3,), dtype="float64")
    x = tie_free((5, 3), seed=1)
    z = host(x) @ host(layer.params["kernel"]) + host(layer.params["bias"])
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(host(layer.forward(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(host(layer.forward(x, logits=True)), z, rtol=1e-12)


def test_softmax_is_stable_for_huge_logits(xp_backend):
    y = host(Softmax().forward(backend.to_device(np.array([[1000.0, 0.0, -1000.0]]))))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])


def test_fused_loss_value_and_stability(xp_backend):
    loss = SoftmaxCrossEntropy()
    logits = backend.to_device(np.array([[2.0, 1.0, 0.1], [1000.0, -1000.0, 0.0]]))
    y = backend.to_device(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    value = float(loss.forward(logits, y))
    first = -np.log(np.exp(2.0) / np.exp([2.0, 1.0, 0.1]).sum())
    assert np.isfinite(value)
    assert value == pytest.approx((first + 2000.0) / 2)
    probs = np.array([np.exp([2.0, 1.0, 0.1]) / np.exp([2.0, 1.0, 0.1]).sum(), [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(host(loss.backward()), (probs - host(y)) / 2, atol=1e-12)


def test_flatten_keeps_channels_last_order(xp_backend):
    x = backend.to_device(np.arange(24.0).reshape(1, 2, 3, 4))
    np.testing.assert_array_equal(host(Flatten().forward(x)), np.arange(24.0).reshape(1, 24))


# ---- backward by finite differences -----------------------------------------------------------

@pytest.mark.parametrize("case", layer_cases(), ids=lambda case: case[0])
def test_gradcheck_table_cases(xp_backend, case):
    _, make_layer, shape = case
    assert_gradients(make_layer(), tie_free(shape, seed=11))


@pytest.mark.parametrize("shape,filters,kernel,strides,padding", CONV_CASES)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv_gradients(xp_backend, shape, filters, kernel, strides, padding, activation):
    layer = Conv2D(filters, kernel, strides=strides, padding=padding, activation=activation, dtype="float64")
    assert_gradients(layer, tie_free(shape, seed=4))


def test_conv_without_bias_gradients(xp_backend):
    layer = Conv2D(3, 3, use_bias=False, dtype="float64")
    assert_gradients(layer, tie_free((2, 5, 6, 2), seed=9))
    assert set(layer.params) == {"kernel"}


@pytest.mark.parametrize("shape,pool,strides,padding", [
    ((1, 2, 2, 1), (2, 2), (2, 2), "valid"), ((2, 15, 15, 3), (2, 2), (2, 2), "valid"),
    ((2, 7, 5, 3), (3, 3), (2, 2), "valid"), ((1, 5, 7, 2), (2, 2), (1, 1), "same"),
    ((1, 7, 6, 2), (3, 2), (2, 1), "same"),
])
def test_maxpool_gradients(xp_backend, shape, pool, strides, padding):
    assert_gradients(MaxPool2D(pool, strides=strides, padding=padding), tie_free(shape, seed=6))


@pytest.mark.parametrize("alpha", [2e-5, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 3, 5), (2, 3, 3, 13)])
def test_lrn_gradients(xp_backend, alpha, shape):
    assert_gradients(LocalResponseNorm(2, 1.0, alpha, 0.75), tie_free(shape, seed=8, low=-2.0, high=2.0))


def test_lrn_gradcheck_catches_a_wrong_backward(xp_backend):
    """At alpha=0.1 a backward that forgets the window term fails; at 2e-5 it would nearly pass."""
    class ForgetfulLRN(LocalResponseNorm):
        def backward(self, dout, input_grad=True):
            return dout / self._den ** self.beta      # _den_beta is the CPU's alone (the contract's table)

    x = tie_free((1, 2, 2, 7), seed=1, low=-2.0, high=2.0)
    assert max(check_layer(ForgetfulLRN(2, 1.0, 0.1, 0.75), x).values()) > 1e-3


@pytest.mark.parametrize("activation", [None, "relu", "softmax"])
@pytest.mark.parametrize("batch", [1, 4])
def test_dense_gradients(xp_backend, activation, batch):
    assert_gradients(Dense(7, activation=activation, dtype="float64"), tie_free((batch, 11), seed=2))


def test_fused_loss_gradient(xp_backend):
    rng = np.random.default_rng(0)
    logits = backend.to_device(rng.standard_normal((6, 10)) * 4)
    y = backend.to_device(np.eye(10)[rng.integers(0, 10, 6)])
    assert check_loss(SoftmaxCrossEntropy(), logits, y)["logits"] <= TOLERANCE


# ---- the contract -----------------------------------------------------------------------------

def all_layers():
    return [Conv2D(4, 3), MaxPool2D(2), LocalResponseNorm(), BatchNormalization(), Dropout(0.5), Dense(3), ReLU(),
            Softmax(), Flatten()]


def test_layer_contract(xp_backend):
    for layer in all_layers():
        x = tie_free((2, 6, 6, 3) if not isinstance(layer, Dense) else (2, 5), seed=1).astype("float32")
        y = layer.forward(x, training=True)
        assert y.dtype == np.float32, layer.name
        assert set(layer.params) == set(layer.grads)
        dx = layer.backward(backend.xp().ones_like(y))
        assert dx.shape == x.shape and dx.dtype == np.float32, layer.name
        for key, param in layer.params.items():
            assert param.dtype == np.float32 and layer.grads[key].shape == param.shape


def documented_saved_state():
    """{layer class name: (attributes kept on any device, attributes that are None on a GPU)}, read
    from the table in minialex/layers/base.py's docstring."""
    doc = layer_base.__doc__
    table = doc[doc.index("kept from a training forward for backward"):doc.index("(``tests/test_layers.py``")]
    documented = {}
    for line in table.splitlines()[1:]:
        if not line.strip():
            continue
        names, kept = re.match(r"\s*([A-Za-z0-9, ]+?)\s{2,}(.*)", line).groups()
        kept = re.sub(r"\([^)]*\)", "", kept.replace("; its activation's own", ""))
        attributes = {name.strip() for name in kept.split(",") if name.strip()}
        gpu_none = set(re.findall(r"(_\w+) \([^)]*None on a GPU", line))
        for name in names.split(","):
            documented[name.strip()] = (attributes, gpu_none)
    return documented


def test_each_layer_keeps_what_the_contract_table_says(xp_backend):
    """A training forward keeps exactly the attributes base.py's table lists (an activation held by a
    layer, its own), an inference forward keeps none: the table is one place a reader can trust."""
    documented = documented_saved_state()
    for layer in all_layers():
        x = tie_free((2, 6, 6, 3) if not isinstance(layer, Dense) else (2, 5), seed=1).astype("float32")
        layer.forward(x)                                   # builds; inference keeps nothing
        before = set(vars(layer))
        layer.forward(x, training=True)
        kept = {name for name in set(vars(layer)) - before if name.startswith("_")}
        attributes, gpu_none = documented[type(layer).__name__]
        kept |= {"_activated"} & set(vars(layer)) & attributes        # set at construction, rewritten here
        assert kept == attributes, type(layer).__name__
        for name in gpu_none:
            assert (getattr(layer, name) is None) == (xp_backend == "cupy"), (type(layer).__name__, name)


def test_params_update_in_place_changes_the_layer(xp_backend):
    layer = Dense(2, input_shape=(3,))
    x = backend.to_device(np.ones((1, 3), dtype=np.float32))
    before = host(layer.forward(x))
    layer.params["bias"][...] += 1.0
    np.testing.assert_allclose(host(layer.forward(x)), before + 1.0)


def test_parameters_from_input_shape_or_first_forward():
    eager = Conv2D(8, 3, input_shape=(10, 10, 2))
    assert eager.built and eager.params["kernel"].shape == (3, 3, 2, 8) and eager.params["bias"].shape == (8,)
    lazy = Dense(5)
    assert not lazy.built and lazy.params == {}
    lazy.forward(np.zeros((2, 4), dtype=np.float32))
    assert lazy.params["kernel"].shape == (4, 5)


def test_glorot_uniform_limits_and_zero_bias():
    layer = Conv2D(64, 3, input_shape=(15, 15, 32))
    limit = np.sqrt(6 / (9 * 32 + 9 * 64))
    kernel = host(layer.params["kernel"])
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.mean()) < 0.1 * limit and not host(layer.params["bias"]).any()


@pytest.mark.parametrize("make,bad,message", [
    (lambda: Conv2D(2, 3, input_shape=(8, 8, 1)), np.zeros((2, 8, 8, 3), np.float32),
     r"shape \(batch,\) \+ \(8, 8, 1\)"),
    (lambda: Conv2D(2, 3), np.zeros((8, 8, 1), np.float32), "4 axes"),
    (lambda: Dense(2, input_shape=(5,)), np.zeros((3, 4), np.float32), r"\(batch,\) \+ \(5,\)"),
    (lambda: Dense(2, input_shape=(5,)), np.zeros((3, 5), np.float64), "dtype float64"),
    (lambda: MaxPool2D(2), np.zeros((1, 1, 1, 1), np.float32), "smaller than the pool"),
    (lambda: Conv2D(2, 3), np.zeros((1, 2, 2, 1), np.float32), "smaller than the kernel"),
    (lambda: ReLU(), np.zeros((2, 3), np.int32), "floating-point"),
])
def test_bad_inputs_get_clear_errors(make, bad, message):
    layer = make()          # made here, not at collection (see tests/conftest.py)
    with pytest.raises((ValueError, TypeError), match=message):
        layer.forward(bad)


@pytest.mark.parametrize("make,message", [
    (lambda: Conv2D(0, 3), "filters"), (lambda: Conv2D(2, (3, 0)), "kernel_size"),
    (lambda: Conv2D(2, 3, padding="full"), "padding"), (lambda: Dense(-1), "units"),
    (lambda: Dropout(1.0), "rate"), (lambda: Dense(3, activation="tanh"), "activation"),
    (lambda: LocalResponseNorm(depth_radius=-1), "depth_radius"),
])
def test_bad_hyperparameters_get_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
