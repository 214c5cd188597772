"""Flat buffers: every parameter of a model in one array, every gradient in another.

A layer keeps its parameters in ``params`` (a dict of arrays) and updates them in place. Packing
copies them all into one flat buffer and makes each ``params[k]`` a view of its stretch, ``grads``
likewise; the layers work on exactly as before, while the optimiser updates all weights with a
handful of array operations over two long arrays instead of a few per tensor. The weights that are
not trained (a layer's ``state``) get a flat buffer of their own, which no optimiser sees.
"""
from __future__ import annotations

from . import backend


def pack(layers):
    """Copy the layers' parameters into one flat buffer and point ``params`` / ``grads`` into flat ones.

    Returns (flat parameters, flat gradients), or (None, None) for layers without parameters.
    """
    flat_params = _pack([layer.params for layer in layers])
    if flat_params is None:
        return None, None
    flat_grads = backend.get_array_module(flat_params).zeros_like(flat_params)
    point_grads_at(layers, flat_grads)
    return flat_params, flat_grads


def pack_state(layers):
    """Copy the layers' ``state`` (weights not trained: BatchNormalization's moving statistics) into a
    flat buffer of its own and point ``state`` into it; None when no layer has any. The optimiser never
    sees this buffer; the non-finite guard copies it with the parameters."""
    return _pack([layer.state for layer in layers])


def _pack(dicts):
    """One flat buffer holding every array of ``dicts`` (each replaced by a view of its stretch), or None."""
    entries = [(arrays, key) for arrays in dicts for key in arrays]
    if not entries:
        return None
    dtypes = {str(arrays[key].dtype) for arrays, key in entries}
    if len(dtypes) > 1:
        raise TypeError(f"all layers of a model must share one dtype, got {sorted(dtypes)}")
    first = entries[0][0][entries[0][1]]
    xp = backend.get_array_module(first)
    flat = xp.empty(sum(int(arrays[key].size) for arrays, key in entries), dtype=first.dtype)
    offset = 0
    for arrays, key in entries:
        array = arrays[key]
        view = flat[offset:offset + array.size].reshape(array.shape)
        view[...] = array
        arrays[key] = view
        offset += array.size
    return flat


def point_grads_at(layers, flat_grads):
    """Make every layer's ``grads[k]`` a view of ``flat_grads``, in the order the parameters are packed."""
    offset = 0
    for layer in layers:
        for key, param in layer.params.items():
            layer.grads[key] = flat_grads[offset:offset + param.size].reshape(param.shape)
            offset += param.size

