"""Activations: ReLU and Softmax, as layers and as the ``activation=`` of Dense and Conv2D.

ReLU:    y = max(x, 0)                      dx = dout * [y > 0]
Softmax: y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j  (shifting changes nothing but
         keeps exp from overflowing), over the last axis.
         dx_i = y_i * (dout_i - sum_j dout_j y_j)   (the Jacobian diag(y) - y y^T applied to dout)

A network that ends in softmax and trains with cross-entropy should not run this backward at all:
``losses.SoftmaxCrossEntropy`` fuses the two into the stable form whose gradient is (p - y) / N.
"""
from __future__ import annotations

from .. import backend, kernels
from .base import Layer


class ReLU(Layer):
    def forward(self, x, training=False, inplace=False):
        """``inplace=True`` overwrites x (Dense and Conv2D pass it for the product they just made)."""
        x = self._prepare(x)
        xp = backend.get_array_module(x)
        y = xp.maximum(x, 0, out=x if inplace else None)
        if training:
            self._y = y
        return y

    def forward_after_bias(self, product, bias, training=False):
        """max(product + bias, 0), written into ``product``: Dense's and Conv2D's bias and ReLU (one kernel
        on a GPU)."""
        y = add_bias_relu(self._prepare(product), bias)
        if training:
            self._y = y
        return y

    def backward(self, dout, input_grad=True):
        return relu_backward(dout, self._y)


@kernels.gpu(kernels.add_bias_relu_cuda)
def add_bias_relu(product, bias):
    """max(product + bias, 0), written into ``product`` (a layer's fresh product); one kernel on a GPU."""
    product += bias
    return backend.get_array_module(product).maximum(product, 0, out=product)


@backend.fuse
def relu_backward(dout, y):
    """dout * [y > 0]: one kernel on a GPU (``backend.fuse``)."""
    return dout * (y > 0)


class Softmax(Layer):
    def forward(self, x, training=False, inplace=False):
        """``inplace=True`` overwrites x with the result."""
        x = self._prepare(x)
        xp = backend.get_array_module(x)
        e = xp.subtract(x, x.max(axis=-1, keepdims=True), out=x if inplace else None)
        xp.exp(e, out=e)
        y = xp.divide(e, e.sum(axis=-1, keepdims=True), out=e)
        if training:
            self._y = y
        return y

    def backward(self, dout, input_grad=True):
        y = self._y
        return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


ACTIVATIONS = {"relu": ReLU, "softmax": Softmax}


def get_activation(name):
    """None -> None; 'relu' / 'softmax' -> a fresh activation layer."""
    if name is None or name == "linear":
        return None
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose None, 'relu' or 'softmax'")
    return ACTIVATIONS[name]()


class WithActivation(Layer):
    """Base of Dense and Conv2D: an affine map z = (product) + bias, then the optional ``activation``.

    ``forward(..., logits=True)`` returns z itself: Sequential asks for that when the loss is the
    fused softmax cross-entropy, which applies the softmax itself.
    """

    def __init__(self, activation=None, **kwargs):
        self.activation_name = activation
        self.activation = get_activation(activation)
        self._activated = False
        super().__init__(**kwargs)

    def _activate(self, product, training, logits):
        """Add the bias (if any) to the layer's own fresh ``product``, then apply the activation, both in
        place. A bias and a ReLU go together (``add_bias_relu``: one kernel on a GPU, not two)."""
        activated = self.activation is not None and not logits
        if training:
            self._activated = activated
        bias = self.params.get("bias")
        if activated and bias is not None and isinstance(self.activation, ReLU):
            return self.activation.forward_after_bias(product, bias, training)
        if bias is not None:
            product += bias
        return self.activation.forward(product, training, inplace=True) if activated else product

    def _activation_backward(self, dout):
        return self.activation.backward(dout) if self._activated else dout
