"""MaxPool2D: the largest value of each (PH, PW) window, windows every (SH, SW) pixels.

    y[n, oh, ow, c] = max_{i < PH, j < PW} xpad[n, oh*SH + i, ow*SW + j, c]

Sizes follow Keras: 'valid' floor((H - PH) / SH) + 1 (so 15 -> 7 for 2x2 pools, stride 2; the last
row and column are never read), 'same' ceil(H / SH) with -inf padding (never 0: a zero would beat
all-negative windows).

Forward and backward loop over the PH*PW taps (4 for 2x2), never over pixels: each tap (i, j) is
one strided view ``xpad[:, i::SH, j::SW, :]`` of shape (N, OH, OW, C).
Backward routes each dout to the single input that won its window: a tap wins where it equals y and
no earlier tap (in row-major order: top-left first) has won. So ties go to the first maximum, as
argmax would choose, and the gradient is never duplicated. Disjoint windows (stride >= pool, the
usual case) write their taps straight into dx; overlapping ones (stride < pool) add up.
"""
from __future__ import annotations

from .. import backend
from .base import Layer, check_padding, normalize_pair, output_length, same_padding


class MaxPool2D(Layer):
    input_ndim = 4

    def __init__(self, pool_size=2, strides=None, padding="valid", input_shape=None, name=None):
        self.pool_size = normalize_pair(pool_size, "pool_size")
        self.strides = normalize_pair(strides if strides is not None else pool_size, "strides")
        self.padding = check_padding(padding)
        super().__init__(input_shape=input_shape, name=name)

    def compute_output_shape(self, input_shape):
        h, w, c = input_shape
        out = tuple(output_length(length, p, s, self.padding)
                    for length, p, s in zip((h, w), self.pool_size, self.strides))
        if min(out) < 1:
            raise ValueError(f"{self.name}: input {h}x{w} is smaller than the pool "
                             f"{self.pool_size[0]}x{self.pool_size[1]}")
        return out + (c,)

    def _taps(self, xpad, out_size):
        """Yield ((i, j), the strided view of tap (i, j)): every window's element at (i, j)."""
        (ph, pw), (sh, sw), (oh, ow) = self.pool_size, self.strides, out_size
        for i in range(ph):
            for j in range(pw):
                yield (i, j), xpad[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]

    def _pad(self, x):
        if self.padding == "valid":
            return x, (0, 0)
        xp = backend.get_array_module(x)
        h, w, _ = x.shape[1:]
        pad_h = same_padding(h, self.pool_size[0], self.strides[0])
        pad_w = same_padding(w, self.pool_size[1], self.strides[1])
        return xp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=-xp.inf), (pad_h[0], pad_w[0])

    def forward(self, x, training=False):
        x = self._prepare(x)
        xp = backend.get_array_module(x)
        out_size = self.compute_output_shape(x.shape[1:])[:2]
        xpad, corner = self._pad(x)
        y = None
        for _, tap in self._taps(xpad, out_size):
            y = tap.copy() if y is None else xp.maximum(y, tap, out=y)
        self._x_shape, self._xpad, self._y, self._corner = x.shape, xpad, y, corner
        return y

    def backward(self, dout):
        xp = backend.get_array_module(dout)
        xpad, y = self._xpad, self._y
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        overlapping = sh < ph or sw < pw
        dxpad = xp.zeros(xpad.shape, dtype=dout.dtype)
        taken = xp.zeros(y.shape, dtype=bool)
        for (i, j), tap in self._taps(xpad, y.shape[1:3]):
            winner = tap == y
            xp.greater(winner, taken, out=winner)          # winner and not yet taken
            taken |= winner
            target = dxpad[:, i:i + sh * y.shape[1]:sh, j:j + sw * y.shape[2]:sw, :]
            if overlapping:
                target += dout * winner
            else:                                          # disjoint windows: write, no add
                xp.multiply(dout, winner, out=target)
        top, left = self._corner
        _, h, w, _ = self._x_shape
        return dxpad[:, top:top + h, left:left + w, :]
