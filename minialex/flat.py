"""Flat buffers: every parameter of a model in one array, every gradient in another.

A layer keeps its parameters in ``params`` (a dict of arrays) and updates them in place. Packing
copies them all into one flat buffer and makes each ``params[k]`` a view of its stretch, ``grads``
likewise; the layers work on exactly as before, while the optimiser updates all weights with a
handful of array operations over two long arrays instead of a few per tensor.
"""
from __future__ import annotations

from . import backend


def pack(layers):
    """Copy the layers' parameters into one flat buffer and point ``params`` / ``grads`` into flat ones.

    Returns (flat parameters, flat gradients), or (None, None) for layers without parameters.
    """
    entries = [(layer, key) for layer in layers for key in layer.params]
    if not entries:
        return None, None
    dtypes = {str(layer.params[key].dtype) for layer, key in entries}
    if len(dtypes) > 1:
        raise TypeError(f"all layers of a model must share one dtype, got {sorted(dtypes)}")
    first = entries[0][0].params[entries[0][1]]
    xp = backend.get_array_module(first)
    total = sum(int(layer.params[key].size) for layer, key in entries)
    flat_params = xp.empty(total, dtype=first.dtype)
    offset = 0
    for layer, key in entries:
        param = layer.params[key]
        view = flat_params[offset:offset + param.size].reshape(param.shape)
        view[...] = param
        layer.params[key] = view
        offset += param.size
    flat_grads = xp.zeros(total, dtype=first.dtype)
    point_grads_at(layers, flat_grads)
    return flat_params, flat_grads


def point_grads_at(layers, flat_grads):
    """Make every layer's ``grads[k]`` a view of ``flat_grads``, in the order the parameters are packed."""
    offset = 0
    for layer in layers:
        for key, param in layer.params.items():
            layer.grads[key] = flat_grads[offset:offset + param.size].reshape(param.shape)
            offset += param.size

