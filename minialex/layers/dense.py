"""Dense: a fully connected layer, ``y = activation(x @ kernel + bias)``.

Shapes: x (N, D_in), kernel (D_in, D_out) as Keras lays it out, bias (D_out,), y (N, D_out).

Backward, with dz the gradient after the activation's own backward:
    d kernel = x^T @ dz        d bias = sum_n dz        dx = dz @ kernel^T
"""
from __future__ import annotations

from .. import backend
from .activations import WithActivation
from .base import glorot_uniform, matmul


class Dense(WithActivation):
    input_ndim = 2

    def __init__(self, units, activation=None, use_bias=True, input_shape=None, dtype="float32", name=None):
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = use_bias
        super().__init__(activation=activation, input_shape=input_shape, dtype=dtype, name=name)

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def create_params(self, input_shape):
        (D_in,) = input_shape
        self.add_param("kernel", glorot_uniform((D_in, self.units), D_in, self.units, self.dtype))
        if self.use_bias:
            self.add_param("bias", backend.xp().zeros(self.units, dtype=self.dtype))

    def forward(self, x, training=False, logits=False):
        x = self._prepare(x)
        if training:
            self._x = x
        return self._activate(matmul(x, self.params["kernel"]), training, logits)     # + bias, then the activation

    def backward(self, dout, input_grad=True):
        dz = self._activation_backward(dout)
        matmul(self._x.T, dz, out=self.grads["kernel"])     # written straight into place (no copy)
        if self.use_bias:
            dz.sum(axis=0, out=self.grads["bias"])
        return matmul(dz, self.params["kernel"].T) if input_grad else None
