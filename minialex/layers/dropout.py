"""Dropout, inverted as Keras does it.

Training:  mask = [u >= rate] / (1 - rate),  u ~ U[0, 1) per element;   y = x * mask
Inference: y = x.
Kept units are scaled up by 1 / (1 - rate) during training, so nothing changes at inference time.
Backward: dx = dout * mask (the same mask). Masks come from the run's generator
(``minialex.random.get_rng()``), so a seed fixes them. On a GPU one kernel draws the same numbers,
makes the mask and applies it (``kernels.dropout_cuda``).
"""
from __future__ import annotations

from .. import kernels, random
from .base import Layer


@kernels.gpu(kernels.dropout_cuda)
def dropout(x, rate, rng):
    """(y, mask): mask = [u >= rate] / (1 - rate), u the generator's next x.size draws; y = x * mask."""
    keep = rng.random(x.shape, x.dtype, like=x) >= rate
    mask = keep.astype(x.dtype) * (1.0 / (1.0 - rate))
    return x * mask, mask


class Dropout(Layer):
    def __init__(self, rate, input_shape=None, name=None):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        super().__init__(input_shape=input_shape, name=name)

    def forward(self, x, training=False):
        x = self._prepare(x)
        if not training:
            return x
        if self.rate == 0.0:
            self._mask = None
            return x
        y, self._mask = dropout(x, self.rate, random.get_rng())
        return y

    def backward(self, dout, input_grad=True):
        return dout if self._mask is None else dout * self._mask
