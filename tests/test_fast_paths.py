"""Each fast path against the plain version it replaces, in float32, on each backend."""
import numpy as np
import pytest

from minialex import backend
from minialex.layers.conv import col2im, col2im_by_taps
from minialex.layers.lrn import power


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6])
def test_power_equals_exp_of_beta_log(xp_backend, beta):
    """Every branch of power() (square roots, a copy, the general power) against exp(beta * log(den))
    computed in float64 on the host: an independent formula, so a wrong branch fails."""
    host = np.random.default_rng(0).uniform(1.0, 50.0, (64, 5, 5, 32)).astype(np.float32)
    fast = backend.to_numpy(power(backend.to_device(host), beta))
    assert fast.dtype == np.float32 and fast.shape == host.shape
    np.testing.assert_allclose(fast, np.exp(beta * np.log(host.astype(np.float64))), rtol=4e-7)


def test_power_returns_a_new_array(xp_backend):
    den = backend.to_device(np.full((3, 4), 16.0, np.float32))
    for beta in (0.75, 0.5, 1.0, 0.6):
        result = power(den, beta)
        result[...] = 0.0
        assert float(den.min()) == 16.0, beta     # LRN keeps den for backward: power must not write into it


@pytest.mark.parametrize("n,h,w,c,f,kernel,strides,pads", [
    (64, 15, 15, 32, 64, (3, 3), (1, 1), ((1, 1), (1, 1))), (2, 7, 7, 128, 128, (3, 3), (1, 1), ((1, 1), (1, 1))),
    (2, 9, 9, 4, 5, (3, 3), (1, 1), ((0, 0), (0, 0))), (2, 6, 5, 3, 4, (2, 2), (1, 1), ((0, 1), (0, 1))),
    (2, 6, 6, 3, 4, (5, 5), (1, 1), ((2, 2), (2, 2))), (3, 9, 8, 5, 7, (3, 3), (2, 2), ((1, 1), (0, 1))),
    (1, 6, 7, 4, 3, (2, 3), (1, 2), ((0, 1), (1, 1))), (2, 4, 5, 3, 2, (3, 3), (3, 2), ((2, 2), (1, 0))),
])
def test_col2im_by_taps_equals_cropped_col2im_of_dcols(xp_backend, n, h, w, c, f, kernel, strides, pads):
    rng = np.random.default_rng(1)
    (top, bottom), (left, right) = pads
    hp, wp = h + top + bottom, w + left + right
    oh, ow = (hp - kernel[0]) // strides[0] + 1, (wp - kernel[1]) // strides[1] + 1
    dz = backend.to_device(rng.standard_normal((n * oh * ow, f)), dtype="float32")
    k = backend.to_device(rng.standard_normal(kernel + (c, f)), dtype="float32")
    plain = col2im(dz @ k.reshape(-1, f).T, (n, hp, wp, c), kernel, strides, (oh, ow))[:, top:top + h, left:left + w]
    fast = col2im_by_taps(dz, k, (n, h, w, c), pads, strides, (oh, ow))
    assert fast.shape == (n, h, w, c) and fast.flags.c_contiguous
    np.testing.assert_allclose(backend.to_numpy(fast), backend.to_numpy(plain), rtol=1e-4, atol=1e-4)
