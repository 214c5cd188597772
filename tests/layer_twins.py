"""How each layer of ``minialex.layers`` runs through its plain twin (``minialex.naive``): what the
recipe's check that a layer equals its twin compares it with (tests/test_layer_recipe.py).

``TWIN_CALLS`` maps a layer's class name to ``call(layer, x, dout)``: from the layer's own settings and
weights (after its training forward: its dropout mask, its moving statistics), what its twin computes
for the host array ``x`` and the upstream gradient ``dout``, as a dict: "y" the training output, "dx",
"d" + name the gradient of each of the layer's ``params``, and "inference" the output at inference.
"""
from __future__ import annotations

import numpy as np

from minialex import backend, naive


def host(array):
    return backend.to_numpy(array)


def weights(layer):
    return {name: host(value) for name, value in layer.params.items()}


def activated(layer, z, dout):
    """(y, dz): the activation of Dense or Conv2D (None: none) through its own twin, on z."""
    if layer.activation is None:
        return z, dout
    twin = naive.TWINS[type(layer.activation).__name__]
    forward, backward = getattr(naive, f"{twin}_forward"), getattr(naive, f"{twin}_backward")
    return forward(z), backward(dout, z)


def affine(forward, backward):
    """The call of Conv2D's or Dense's twin: ``forward(x, kernel, bias)`` then the activation's twin."""
    def call(layer, x, dout):
        w = weights(layer)
        y, dz = activated(layer, forward(layer, x, w["kernel"], w.get("bias")), dout)
        dx, dkernel, dbias = backward(layer, dz, x, w["kernel"])
        grads = {"dkernel": dkernel, **({"dbias": dbias} if "bias" in w else {})}
        return {"y": y, "dx": dx, **grads, "inference": y}
    return call


def plain(*settings):
    """The call of a twin that takes x and the layer's ``settings`` (attribute names), in order."""
    def call(layer, x, dout):
        twin = naive.TWINS[type(layer).__name__]
        forward, backward = getattr(naive, f"{twin}_forward"), getattr(naive, f"{twin}_backward")
        values = [getattr(layer, name) for name in settings]
        y = forward(x, *values)
        return {"y": y, "dx": backward(dout, x, *values), "inference": y}
    return call


def batchnorm(layer, x, dout):
    C = x.shape[-1]
    w = weights(layer)
    gamma, beta = w.get("gamma", np.ones(C)), w.get("beta", np.zeros(C))
    dx, dgamma, dbeta = naive.batchnorm_backward(dout, x, gamma, layer.epsilon)
    moving = [host(layer.state[name]) for name in ("moving_mean", "moving_variance")]
    return {"y": naive.batchnorm_forward(x, gamma, beta, layer.epsilon), "dx": dx,
            **{f"d{name}": grad for name, grad in (("gamma", dgamma), ("beta", dbeta)) if name in w},
            "inference": naive.batchnorm_normalize(x, *moving, gamma, beta, layer.epsilon)}


def dropout(layer, x, dout):
    mask = host(layer._mask)          # the mask the layer drew: the twin is given it
    return {"y": naive.dropout_forward(x, mask), "dx": naive.dropout_backward(dout, mask), "inference": x}


TWIN_CALLS = {
    "Conv2D": affine(lambda layer, x, kernel, bias: naive.conv2d_forward(x, kernel, bias, layer.strides, layer.padding),
                     lambda layer, dz, x, kernel: naive.conv2d_backward(dz, x, kernel, layer.strides, layer.padding)),
    "Dense": affine(lambda layer, x, kernel, bias: naive.dense_forward(x, kernel, bias),
                    lambda layer, dz, x, kernel: naive.dense_backward(dz, x, kernel)),
    "MaxPool2D": plain("pool_size", "strides", "padding"),
    "LocalResponseNorm": plain("depth_radius", "bias", "alpha", "beta"),
    "BatchNormalization": batchnorm,
    "Dropout": dropout,
    "ReLU": plain(),
    "Softmax": plain(),
    "Flatten": plain(),
}
