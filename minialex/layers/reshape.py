"""Flatten: (N, d1, d2, ...) -> (N, d1 * d2 * ...), in C order (channels-last stays last-fastest,
as Keras flattens NHWC). Backward reshapes the gradient back."""
from __future__ import annotations

import math

from .base import Layer


class Flatten(Layer):
    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        x = self._prepare(x)
        if x.ndim < 2:
            raise ValueError(f"{self.name}: expects a batch axis and at least one more, got shape {tuple(x.shape)}")
        if training:
            self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout, input_grad=True):
        return dout.reshape(self._x_shape)
