"""Slow, obvious float64 references written with loops, independent of the im2col trick.

Everything here is NumPy on the host: a test moves the layer's output back with to_numpy.
"""
import numpy as np


def pad_same(x, window, stride, fill=0.0):
    """Pad (N, H, W, C) for 'same' as TensorFlow does (odd padding at the bottom/right)."""
    pads = []
    for length, k, s in zip(x.shape[1:3], window, stride):
        out = -(-length // s)
        total = max((out - 1) * s + k - length, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)


def conv2d(x, kernel, bias, stride=(1, 1), padding="valid"):
    """Direct cross-correlation: for every output pixel, sum over the window and the channels."""
    kh, kw, _, f = kernel.shape
    if padding == "same":
        x = pad_same(x, (kh, kw), stride)
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    out = np.zeros((n, oh, ow, f))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                window = x[b, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw, :]
                for o in range(f):
                    out[b, i, j, o] = np.sum(window * kernel[:, :, :, o]) + bias[o]
    return out


def maxpool(x, pool=(2, 2), stride=(2, 2), padding="valid"):
    """The maximum of every window, one window at a time."""
    if padding == "same":
        x = pad_same(x, pool, stride, fill=-np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1
    out = np.empty((n, oh, ow, c))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    out[b, i, j, ch] = x[b, i * stride[0]:i * stride[0] + pool[0],
                                         j * stride[1]:j * stride[1] + pool[1], ch].max()
    return out


def lrn(x, depth_radius, bias, alpha, beta):
    """TensorFlow's local_response_normalization by its definition, channel by channel."""
    out = np.empty_like(x, dtype=np.float64)
    channels = x.shape[-1]
    for d in range(channels):
        lo, hi = max(0, d - depth_radius), min(channels - 1, d + depth_radius)
        sqr_sum = np.sum(x[..., lo:hi + 1].astype(np.float64) ** 2, axis=-1)
        out[..., d] = x[..., d] / (bias + alpha * sqr_sum) ** beta
    return out
