"""Property-based tests (hypothesis): conv and pooling over random shapes and hyper-parameters,
forward against the loop references and backward against finite differences."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minialex import backend
from minialex.gradcheck import TOLERANCE, check_layer, tie_free
from minialex.layers import Conv2D, MaxPool2D

from . import reference

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_setups(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["valid", "same"]))
    h = draw(st.integers(kh if padding == "valid" else 1, 9))
    w = draw(st.integers(kw if padding == "valid" else 1, 9))
    return dict(n=draw(st.integers(1, 3)), h=h, w=w, c=draw(st.integers(1, 5)), f=draw(st.integers(1, 5)),
                kernel=(kh, kw), strides=(sh, sw), padding=padding, seed=draw(st.integers(0, 1000)))


@st.composite
def pool_setups(draw):
    ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["valid", "same"]))
    h = draw(st.integers(ph if padding == "valid" else 1, 9))
    w = draw(st.integers(pw if padding == "valid" else 1, 9))
    return dict(n=draw(st.integers(1, 2)), h=h, w=w, c=draw(st.integers(1, 4)), pool=(ph, pw),
                strides=(sh, sw), padding=padding, seed=draw(st.integers(0, 1000)))


@SETTINGS
@given(setup=conv_setups())
def test_conv_matches_reference_and_finite_differences(xp_backend, setup):
    s = setup
    layer = Conv2D(s["f"], s["kernel"], strides=s["strides"], padding=s["padding"], dtype="float64")
    x = tie_free((s["n"], s["h"], s["w"], s["c"]), seed=s["seed"])
    y = backend.to_numpy(layer.forward(x))
    expected = reference.conv2d(backend.to_numpy(x), backend.to_numpy(layer.params["kernel"]),
                                backend.to_numpy(layer.params["bias"]), s["strides"], s["padding"])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert max(check_layer(layer, x, seed=s["seed"]).values()) <= TOLERANCE


@SETTINGS
@given(setup=pool_setups())
def test_maxpool_matches_reference_and_finite_differences(xp_backend, setup):
    s = setup
    layer = MaxPool2D(s["pool"], strides=s["strides"], padding=s["padding"])
    x = tie_free((s["n"], s["h"], s["w"], s["c"]), seed=s["seed"])
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)),
                                  reference.maxpool(backend.to_numpy(x), s["pool"], s["strides"], s["padding"]))
    assert max(check_layer(layer, x, seed=s["seed"]).values()) <= TOLERANCE
