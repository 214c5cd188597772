"""Property-based tests (hypothesis): conv and pooling over random shapes and hyper-parameters,
forward against the loop references and backward against finite differences."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minialex import backend, naive
from minialex.gradcheck import TOLERANCE, check_layer, tie_free
from minialex.layers import Conv2D, MaxPool2D

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def window_setups(draw, max_window, max_batch):
    """A window (kernel or pool) with strides and padding, and an input it fits: batch, H, W, C."""
    kh, kw = draw(st.integers(1, max_window)), draw(st.integers(1, max_window))
    padding = draw(st.sampled_from(["valid", "same"]))
    h = draw(st.integers(kh if padding == "valid" else 1, 9))
    w = draw(st.integers(kw if padding == "valid" else 1, 9))
    return dict(n=draw(st.integers(1, max_batch)), h=h, w=w, c=draw(st.integers(1, 5)), window=(kh, kw),
                strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=padding,
                f=draw(st.integers(1, 5)), seed=draw(st.integers(0, 1000)))


@SETTINGS
@given(setup=window_setups(max_window=4, max_batch=3))
def test_conv_matches_reference_and_finite_differences(xp_backend, setup):
    s = setup
    layer = Conv2D(s["f"], s["window"], strides=s["strides"], padding=s["padding"], dtype="float64")
    x = tie_free((s["n"], s["h"], s["w"], s["c"]), seed=s["seed"])
    y = backend.to_numpy(layer.forward(x))
    expected = naive.conv2d_forward(backend.to_numpy(x), backend.to_numpy(layer.params["kernel"]),
                                    backend.to_numpy(layer.params["bias"]), s["strides"], s["padding"])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert max(check_layer(layer, x, seed=s["seed"]).values()) <= TOLERANCE


@SETTINGS
@given(setup=window_setups(max_window=3, max_batch=2))
def test_maxpool_matches_reference_and_finite_differences(xp_backend, setup):
    s = setup
    layer = MaxPool2D(s["window"], strides=s["strides"], padding=s["padding"])
    x = tie_free((s["n"], s["h"], s["w"], s["c"]), seed=s["seed"])
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)),
                                  naive.maxpool2d_forward(backend.to_numpy(x), s["window"], s["strides"], s["padding"]))
    assert max(check_layer(layer, x, seed=s["seed"]).values()) <= TOLERANCE
