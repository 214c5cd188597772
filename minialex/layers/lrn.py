"""LocalResponseNorm: TensorFlow's ``tf.nn.local_response_normalization``, channels-last.

    sqr_sum[n, h, w, d] = sum_{k = max(0, d - r)}^{min(C - 1, d + r)} x[n, h, w, k]^2
    y = x / (bias + alpha * sqr_sum) ** beta                      r = depth_radius

The window is 2r + 1 channels, clipped at the edges. Written with a banded C x C matrix
B[k, d] = 1 if |k - d| <= r, the window sum is one matrix product over the channel axis:
sqr_sum = (x * x) @ B. With den = bias + alpha * sqr_sum and B symmetric, the exact backward is

    dx = dout / den^beta  -  2 * alpha * beta * x * ((dout * y / den) @ B)

(the second term: every output d whose window holds channel k sends its share back to x_k).
On a GPU each pass is one kernel that sums the 2r + 1 channels itself (``kernels.lrn_cuda``).

Two conventions for the same layer:
- TensorFlow and the AlexNet paper (Krizhevsky et al., 2012: k, n, alpha, beta) put alpha on the
  plain sum: bias = k, depth_radius = (n - 1) / 2, alpha = alpha.
- Caffe and PyTorch (``torch.nn.LocalResponseNorm(size, alpha, beta, k)``) divide alpha by the
  window: size = 2 * depth_radius + 1, k = bias, and their alpha = alpha_tf * size.
``caffe_to_tf`` and ``tf_to_caffe`` convert. (Caffe's own AlexNet got this wrong and trained with
an alpha 5x too small.) The tutorial's depth_radius=2, bias=1, alpha=2e-5, beta=0.75 is
PyTorch's LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1).
"""
from __future__ import annotations

import functools

from .. import backend, kernels
from .base import Layer


def caffe_to_tf(size, alpha, beta=0.75, k=1.0):
    """PyTorch/Caffe (size, alpha, beta, k) -> keyword arguments of LocalResponseNorm."""
    if size % 2 != 1:
        raise ValueError(f"only odd window sizes map onto a depth_radius, got size={size}")
    return {"depth_radius": (size - 1) // 2, "bias": k, "alpha": alpha / size, "beta": beta}


def tf_to_caffe(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """LocalResponseNorm's parameters -> PyTorch/Caffe's (size, alpha, beta, k) as a dict."""
    size = 2 * depth_radius + 1
    return {"size": size, "alpha": alpha * size, "beta": beta, "k": bias}


@functools.lru_cache(maxsize=None)
def band_matrix(C, depth_radius, dtype, xp, weight=1.0):
    """weight * B, the C x C matrix B[k, d] = 1 where |k - d| <= depth_radius: (x * x) @ B sums each
    channel's window. Made once for each (C, depth_radius, dtype, array module, weight)."""
    index = xp.arange(C)
    return (xp.abs(index[:, None] - index[None, :]) <= depth_radius).astype(dtype) * weight


def window_sum(values, depth_radius, weight):
    """weight * (sum over each channel's window): one (pixels, C) @ (C, C) product with weight * B."""
    C = values.shape[-1]
    band = band_matrix(C, depth_radius, values.dtype, backend.get_array_module(values), weight)
    return (values.reshape(-1, C) @ band).reshape(values.shape)


def power(den, beta):
    """den ** beta. The general power is costly (an exp and a log per element), so the common exponents
    take square roots instead: den^0.75 = sqrt(den * sqrt(den)), den^0.5 = sqrt(den). For the tutorial's
    two LRN layers at batch 64: 2.8 against 16.3 ms for ``den ** 0.75`` (one thread, AMD EPYC Zen 3 (AVX2),
    7 December 2026, ``benchmarks/bench_tricks.py``, timed in turns under a load average of 4)."""
    xp = backend.get_array_module(den)
    if beta == 0.75:
        root = xp.sqrt(den)
        root *= den
        return xp.sqrt(root, out=root)
    if beta == 0.5:
        return xp.sqrt(den)
    if beta == 1.0:
        return den.copy()
    return den ** beta


@kernels.gpu(kernels.lrn_cuda)
def lrn(x, depth_radius, bias, alpha, beta):
    """(y, den, den^beta): den = bias + alpha * (x * x) @ B, y = x / den^beta."""
    den = window_sum(x * x, depth_radius, alpha)     # alpha * sqr_sum, then + bias in place
    den += bias
    den_beta = power(den, beta)
    return x / den_beta, den, den_beta


@kernels.gpu(kernels.lrn_backward_cuda)
def lrn_backward(dout, x, y, den, den_beta, depth_radius, alpha, beta):
    """dx = dout / den^beta - 2 alpha beta x * ((dout * y / den) @ B)."""
    ratio = dout * y
    ratio /= den
    outputs_sum = window_sum(ratio, depth_radius, 2.0 * alpha * beta)   # the outputs whose window holds k
    outputs_sum *= x
    dx = backend.get_array_module(dout).divide(dout, den_beta, out=ratio)   # ratio is spent: reuse it
    dx -= outputs_sum
    return dx


class LocalResponseNorm(Layer):
    input_ndim = 4

    def __init__(self, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75, input_shape=None, name=None):
        if not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(f"depth_radius must be a non-negative int, got {depth_radius!r}")
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta
        super().__init__(input_shape=input_shape, name=name)

    def forward(self, x, training=False):
        x = self._prepare(x)
        y, den, den_beta = lrn(x, self.depth_radius, self.bias, self.alpha, self.beta)
        if training:
            self._x, self._y, self._den, self._den_beta = x, y, den, den_beta
        return y

    def backward(self, dout, input_grad=True):
        return lrn_backward(dout, self._x, self._y, self._den, self._den_beta, self.depth_radius, self.alpha,
                            self.beta)
