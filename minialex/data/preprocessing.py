"""The tutorial's preprocessing, vectorised and memory-lean.

The notebook pads each 28x28 digit with zeros to 32x32 (the input size AlexNet's first layers
expect), scales pixels to [0, 1] and adds a channel axis; labels become one-hot rows::

    x = numpy.pad(x, ((0, 0), (2, 2), (2, 2))).astype("float32") / 255   # then reshape (N, 32, 32, 1)
    y = keras.utils.to_categorical(y, 10)

``preprocess_images`` gives bit-for-bit the same float32 values (one float32 division per pixel)
without the padded uint8 copy or any float64 intermediate: it allocates the float32 output once,
writes the pixels into its centre and divides in place.
"""
from __future__ import annotations

import numpy

__all__ = ["pad_images", "preprocess_images", "to_categorical"]


def _check_images(x, pad: int) -> numpy.ndarray:
    """``x`` as a uint8 (N, H, W) array, with ``pad`` checked."""
    x = numpy.asarray(x)
    if x.dtype != numpy.uint8:
        raise TypeError(f"images must be uint8 pixels 0..255 as loaded, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"images must be shaped (N, height, width), got {x.shape}")
    if not isinstance(pad, (int, numpy.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    return x


def pad_images(x, pad: int = 2) -> numpy.ndarray:
    """uint8 images (N, H, W) -> (N, H + 2 pad, W + 2 pad), with a border of ``pad`` zeros."""
    x = _check_images(x, pad)
    n, height, width = x.shape
    out = numpy.zeros((n, height + 2 * pad, width + 2 * pad), dtype=numpy.uint8)
    out[:, pad:pad + height, pad:pad + width] = x
    return out


def preprocess_images(x, pad: int = 2) -> numpy.ndarray:
    """uint8 images (N, H, W) -> float32 (N, H + 2 pad, W + 2 pad, 1): padded pixels / 255."""
    x = _check_images(x, pad)
    n, height, width = x.shape
    out = numpy.zeros((n, height + 2 * pad, width + 2 * pad, 1), dtype=numpy.float32)
    out[:, pad:pad + height, pad:pad + width, 0] = x
    numpy.divide(out, numpy.float32(255), out=out)
    return out


def to_categorical(y, num_classes: int | None = None) -> numpy.ndarray:
    """Integer labels -> float32 one-hot rows, as ``keras.utils.to_categorical``.

    ``num_classes`` defaults to the largest label + 1. Labels shaped (N,) or (N, 1) give (N, C);
    other shapes gain a trailing axis of C. Negative labels, and labels >= ``num_classes``, raise
    ValueError naming them.
    """
    y = numpy.asarray(y)
    if not numpy.issubdtype(y.dtype, numpy.integer):
        raise TypeError(f"labels must be integers, got {y.dtype}")
    shape = y.shape[:-1] if y.ndim > 1 and y.shape[-1] == 1 else y.shape
    y = y.ravel()
    if num_classes is None:
        if y.size == 0:
            raise ValueError("cannot infer num_classes from an empty label array; pass num_classes")
        num_classes = int(y.max()) + 1
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; found {bad.size} outside: "
                         f"{sorted(set(bad.tolist()))[:10]}")
    out = numpy.zeros((y.size, num_classes), dtype=numpy.float32)
    out[numpy.arange(y.size), y] = 1
    return out.reshape(*shape, num_classes)
