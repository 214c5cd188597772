"""MaxPool2D: the largest value of each (PH, PW) window, windows every (SH, SW) pixels.

    y[n, oh, ow, c] = max_{i < PH, j < PW} xpad[n, oh*SH + i, ow*SW + j, c]

Sizes follow Keras: 'valid' floor((H - PH) / SH) + 1 (so 15 -> 7 for 2x2 pools, stride 2; the last
row and column are never read), 'same' ceil(H / SH) with -inf padding (never 0: a zero would beat
all-negative windows).

The maximum is taken in two passes, each a loop over a window's taps (2 for a 2x2 pool), never over
pixels: first down the window's columns, ``column_max[n, oh, w, c] = max_i xpad[n, oh*SH + i, w, c]``,
then across them, ``y = max_j column_max[n, oh, ow*SW + j, c]``. Each tap is one strided view of the
array, and the first pass reads whole rows (W*C contiguous values), which is what makes it cheap.
Alone, this separable forward is no faster than one max over all PH*PW taps (1.50 against 1.46 ms for
the tutorial's two pools at batch 64; 0.7x on an Intel Xeon): it is kept for the pair, because its
column maxima let backward route in two passes, 2.3x faster than routing over all taps (4.45 against
9.88 ms). Both from ``benchmarks/bench_tricks.py``, one thread, AMD EPYC Zen 3 (AVX2), 7 December 2026.

Backward retraces the two passes: each dout goes to the first column (from the left) whose maximum
won, then within that column to the first row (from the top) holding it. So a window with ties
sends its whole gradient to ONE input: the leftmost column's topmost maximum. Overlapping windows
(stride < pool) add up. On a GPU each way is one kernel with the same rule (``minialex.kernels``).
"""
from __future__ import annotations

from .. import backend, kernels
from .base import Layer, check_padding, normalize_pair, same_padding, window_output_size


class MaxPool2D(Layer):
    input_ndim = 4

    def __init__(self, pool_size=2, strides=None, padding="valid", input_shape=None, name=None):
        self.pool_size = normalize_pair(pool_size, "pool_size")
        self.strides = normalize_pair(strides if strides is not None else pool_size, "strides")
        self.padding = check_padding(padding)
        super().__init__(input_shape=input_shape, name=name)

    def compute_output_shape(self, input_shape):
        out = window_output_size(self.name, input_shape[:2], self.pool_size, self.strides, self.padding, "pool")
        return out + (input_shape[2],)

    def _pads(self, x):
        """((top, bottom), (left, right)): 'same' padding as TensorFlow places it, or none."""
        if self.padding == "valid":
            return (0, 0), (0, 0)
        (H, W), (PH, PW), (SH, SW) = x.shape[1:3], self.pool_size, self.strides
        return same_padding(H, PH, SH), same_padding(W, PW, SW)

    def forward(self, x, training=False):
        x = self._prepare(x)
        OH, OW, _ = self.compute_output_shape(x.shape[1:])
        y, column_max = max_pool(x, self.pool_size, self.strides, self._pads(x), (OH, OW))
        if training:
            self._x, self._column_max, self._y = x, column_max, y
        return y

    def backward(self, dout, input_grad=True):
        x, y = self._x, self._y
        return max_pool_backward(dout, x, self._column_max, y, self.pool_size, self.strides, self._pads(x),
                                 y.shape[1:3])


def pad_with_minus_infinity(x, pads):
    """x with ``pads`` = ((top, bottom), (left, right)) rows and columns of -inf around it (x itself if none)."""
    if not any(map(any, pads)):
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-xp.inf)


@kernels.gpu(kernels.max_pool_cuda)
def max_pool(x, pool_size, strides, pads, out_size):
    """(y, column_max): the maxima of the windows' columns first (N, OH, Wp, C), then across them."""
    (PH, PW), (SH, SW), (OH, OW) = pool_size, strides, out_size
    column_max = max_over_taps(pad_with_minus_infinity(x, pads), axis=1, size=PH, stride=SH, length=OH)
    return max_over_taps(column_max, axis=2, size=PW, stride=SW, length=OW), column_max


@kernels.gpu(kernels.max_pool_backward_cuda)
def max_pool_backward(dout, x, column_max, y, pool_size, strides, pads, out_size):
    """dx: each dout to the first column whose maximum won, then to the first row of it that holds it."""
    (PH, PW), (SH, SW), (OH, OW) = pool_size, strides, out_size
    dcolumn_max = route_to_first_max(dout, column_max, y, axis=2, size=PW, stride=SW, length=OW)
    dxpad = route_to_first_max(dcolumn_max, pad_with_minus_infinity(x, pads), column_max, axis=1, size=PH,
                               stride=SH, length=OH)
    (top, _), (left, _) = pads
    return dxpad[:, top:top + x.shape[1], left:left + x.shape[2], :]


def taps(ndim, axis, size, stride, length):
    """Index tuples of the ``size`` strided views a[..., k : k + stride*(length-1) + 1 : stride, ...]."""
    for k in range(size):
        index = [slice(None)] * ndim
        index[axis] = slice(k, k + stride * (length - 1) + 1, stride)
        yield tuple(index)


def max_over_taps(a, axis, size, stride, length):
    """out[..., l, ...] = max_k a[..., l*stride + k, ...] along ``axis``."""
    xp = backend.get_array_module(a)
    views = [a[index] for index in taps(a.ndim, axis, size, stride, length)]
    if size == 1:
        return views[0].copy()
    out = xp.maximum(views[0], views[1])
    for view in views[2:]:
        xp.maximum(out, view, out=out)
    return out


def route_to_first_max(dout, source, result, axis, size, stride, length):
    """The backward of ``max_over_taps``: each dout goes to the first tap k where source equals result.

    ``remaining`` is the gradient not yet routed: a tap that holds the maximum takes all of it, so
    later ties get nothing, and the last tap takes whatever is left (some tap must hold the maximum).
    Overlapping windows (stride < size) share inputs, so their shares add up (``route_by_adding``);
    disjoint ones are written straight into place (``route_in_place``).
    """
    if stride < size:
        return route_by_adding(dout, source, result, axis, size, stride, length)
    return route_in_place(dout, source, result, axis, size, stride, length)


def route_by_adding(dout, source, result, axis, size, stride, length):
    """``route_to_first_max`` for any windows: from zeros, each tap's share added into its place."""
    xp = backend.get_array_module(dout)
    indices = list(taps(source.ndim, axis, size, stride, length))
    dsource = xp.zeros(source.shape, dtype=dout.dtype)
    remaining = dout
    for index in indices[:-1]:
        share = remaining * (source[index] == result)
        dsource[index] += share
        remaining = remaining - share
    dsource[indices[-1]] += remaining
    return dsource


def route_in_place(dout, source, result, axis, size, stride, length):
    """``route_to_first_max`` for disjoint windows (stride >= size): each place is written once, no
    temporaries. What a tap does not take moves on, parked in the next tap's place, and the rest is its
    share; only what no window reads is zeroed. 1.5x faster than ``route_by_adding`` on the tutorial's
    pools (4.53 against 6.84 ms for both passes of both pools, batch 64, one thread, AMD EPYC Zen 3 (AVX2),
    7 December 2026, ``benchmarks/bench_tricks.py``)."""
    xp = backend.get_array_module(dout)
    indices = list(taps(source.ndim, axis, size, stride, length))
    dsource = xp.empty(source.shape, dtype=dout.dtype)
    if stride > size or source.shape[axis] > stride * length:
        _zero_unread(dsource, axis, size, stride, length)
    remaining = dout
    for index, next_index in zip(indices[:-1], indices[1:]):
        passed_on = xp.multiply(remaining, source[index] != result, out=dsource[next_index])
        xp.subtract(remaining, passed_on, out=dsource[index])
        remaining = passed_on
    if size == 1:
        dsource[indices[0]] = dout
    return dsource


def _zero_unread(array, axis, size, stride, length):
    """Zero the positions along ``axis`` that no window of disjoint pooling reads."""
    for start in range(size, stride):
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, None, stride)
        array[tuple(index)] = 0
    index = [slice(None)] * array.ndim
    index[axis] = slice(stride * length, None)
    array[tuple(index)] = 0
