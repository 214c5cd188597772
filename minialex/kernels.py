"""Fused GPU kernels: one CUDA kernel each where NumPy takes several steps, each beside its NumPy half.

On a GPU every array operation is a kernel launch, and the host spends roughly 10 microseconds on
each: for a network this small that, not the arithmetic, sets the time of a step
(``benchmarks/launch_count.py`` counts them). So where a layer's NumPy code takes several steps, its
GPU path calls one of these instead (``backend.on_cpu(x)`` chooses; the CPU path stays as it is).

Each kernel has two halves, called with the same arguments:

- its *NumPy half* (``im2col_numpy``, ``lrn_numpy``, ...): the same maths in plain NumPy, written to be
  read (not for speed); tests hold it equal to the layer's CPU path, and the CUDA half to it;
- its CUDA half: a ``cupy.ElementwiseKernel``, C++ for ONE output element that CuPy runs once per
  element (``i`` is the element's flat index; ``raw`` arrays are read at any flat index). Without a
  GPU, tests/test_nvrtc.py has NVRTC compile the source CuPy writes for it.

On NumPy a kernel runs its NumPy half; on CuPy its CUDA half, exactly one launch; on another array
module (the launch counter's stand-in) its NumPy half, counted as one launch. Simple elementwise
chains need no hand-written kernel: ``backend.fuse`` compiles the NumPy lines themselves with
``cupy.fuse``.
"""
from __future__ import annotations

import functools
import math

from . import backend


class Kernel:
    """A GPU kernel: its NumPy half (``numpy_half(*args)``) and its CUDA half (``cuda_half(cupy, *args)``)."""

    def __init__(self, numpy_half, cuda_half):
        self.numpy_half, self.cuda_half = numpy_half, cuda_half
        functools.update_wrapper(self, numpy_half)

    def __call__(self, *args, **kwargs):
        if backend.on_cpu(args[0]):
            return self.numpy_half(*args, **kwargs)
        module = backend.get_array_module(args[0])
        if module.__name__ == "cupy":
            return self.cuda_half(module, *args, **kwargs)
        return module.fuse(self.numpy_half)(*args, **kwargs)


_compiled: dict = {}


def _elementwise(cupy, source):
    """``cupy.ElementwiseKernel`` for ``source`` = (name, in_params, out_params, operation), made once."""
    key = (cupy, source[0])
    if key not in _compiled:
        name, in_params, out_params, operation = source
        _compiled[key] = cupy.ElementwiseKernel(in_params, out_params, operation, "minialex_" + name)
    return _compiled[key]


def _pad_spec(pads):
    """np.pad's widths for (N, H, W, C) images padded by pads = ((top, bottom), (left, right))."""
    return ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0))


# ---- Conv2D: im2col with its padding, col2im cropped ---------------------------------------------

def im2col_numpy(x, pads, kernel_size, strides, out_size):
    """cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*SH + i, ow*SW + j, c], xpad = x with ``pads`` zeros
    (conv.im2col of the padded input: the same matrix)."""
    xp = backend.get_array_module(x)
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    xpad = xp.pad(x, _pad_spec(pads))
    taps = [xpad[:, i:i + SH * OH:SH, j:j + SW * OW:SW, :] for i in range(KH) for j in range(KW)]
    return xp.stack(taps, axis=3).reshape(x.shape[0] * OH * OW, -1)       # (N, OH, OW, tap, C) rows


IM2COL = ("im2col", "raw T x, int32 H, int32 W, int32 C, int32 KH, int32 KW, int32 SH, int32 SW, "
          "int32 OH, int32 OW, int32 top, int32 left", "T cols", """
    const int width = KH * KW * C;
    const ptrdiff_t row = i / width;                       // the output pixel (img, oh, ow)
    const int col = i % width;                             // the tap (ki, kj) and channel c
    const int c = col % C, kj = (col / C) % KW, ki = col / C / KW;
    const int ow = row % OW, oh = (row / OW) % OH;
    const ptrdiff_t img = row / OW / OH;
    const int h = oh * SH + ki - top, w = ow * SW + kj - left;
    cols = (0 <= h && h < H && 0 <= w && w < W) ? x[((img * H + h) * W + w) * C + c] : (T)0;
""")


def _im2col_cuda(cupy, x, pads, kernel_size, strides, out_size):
    N, H, W, C = x.shape
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    cols = cupy.empty((N * OH * OW, KH * KW * C), dtype=x.dtype)
    _elementwise(cupy, IM2COL)(x, H, W, C, KH, KW, SH, SW, OH, OW, pads[0][0], pads[1][0], cols)
    return cols


im2col = Kernel(im2col_numpy, _im2col_cuda)


def col2im_numpy(dcols, input_shape, pads, kernel_size, strides, out_size):
    """im2col's adjoint, cropped to the input: each input pixel gets the sum of the entries of dcols
    that im2col copied it into. Written as just that: im2col of the pixels' numbers (1, 2, ...; the
    padding's zeros are 0), then dcols summed by number."""
    xp = backend.get_array_module(dcols)
    size = math.prod(input_shape)
    numbers = xp.arange(1, size + 1).reshape(input_shape)
    copied_from = im2col_numpy(numbers, pads, kernel_size, strides, out_size)
    sums = xp.bincount(copied_from.ravel(), weights=dcols.ravel(), minlength=size + 1)
    return sums[1:].reshape(input_shape).astype(dcols.dtype)


COL2IM = ("col2im", "raw T dcols, int32 H, int32 W, int32 C, int32 KH, int32 KW, int32 SH, int32 SW, "
          "int32 OH, int32 OW, int32 top, int32 left", "T dx", """
    const int c = i % C, w = (i / C) % W, h = (i / C / W) % H;
    const ptrdiff_t img = i / C / W / H;
    T sum = 0;
    for (int ki = 0; ki < KH; ++ki) {                      // tap (ki, kj) of output (oh, ow) read
        const int at_h = h + top - ki;                     // input (h, w) if at_h = oh * SH, ...
        if (at_h < 0 || at_h % SH != 0 || at_h / SH >= OH) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int at_w = w + left - kj;
            if (at_w < 0 || at_w % SW != 0 || at_w / SW >= OW) continue;
            const ptrdiff_t row = (img * OH + at_h / SH) * OW + at_w / SW;
            sum += dcols[row * (KH * KW * C) + (ki * KW + kj) * C + c];
        }
    }
    dx = sum;
""")


def _col2im_cuda(cupy, dcols, input_shape, pads, kernel_size, strides, out_size):
    N, H, W, C = input_shape
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    dx = cupy.empty(input_shape, dtype=dcols.dtype)
    _elementwise(cupy, COL2IM)(dcols, H, W, C, KH, KW, SH, SW, OH, OW, pads[0][0], pads[1][0], dx)
    return dx


col2im = Kernel(col2im_numpy, _col2im_cuda)


# ---- LocalResponseNorm ------------------------------------------------------------------------

def _window_sums(values, depth_radius):
    """sum_{k = d - r}^{d + r} values[..., k] for each channel d (the window clipped at the edges)."""
    xp = backend.get_array_module(values)
    channels, r = values.shape[-1], depth_radius
    padded = xp.pad(values, [(0, 0)] * (values.ndim - 1) + [(r, r)])
    return sum(padded[..., k:k + channels] for k in range(2 * r + 1))


def lrn_numpy(x, depth_radius, bias, alpha, beta):
    """(y, den): den = bias + alpha * (sum of x^2 over the channel window), y = x / den^beta."""
    den = bias + alpha * _window_sums(x * x, depth_radius)
    return x / den ** beta, den


LRN = ("lrn", "raw T x, int32 C, int32 R, T bias, T alpha, T beta", "T y, T den", """
    const int d = i % C;
    const ptrdiff_t pixel = i - d;
    T sum = 0;
    for (int k = max(d - R, 0); k <= min(d + R, C - 1); ++k) sum += x[pixel + k] * x[pixel + k];
    den = bias + alpha * sum;
    y = x[i] / pow(den, beta);
""")


def _lrn_cuda(cupy, x, depth_radius, bias, alpha, beta):
    y, den = cupy.empty_like(x), cupy.empty_like(x)
    _elementwise(cupy, LRN)(x, x.shape[-1], depth_radius, bias, alpha, beta, y, den)
    return y, den


lrn = Kernel(lrn_numpy, _lrn_cuda)


def lrn_backward_numpy(dout, x, y, den, depth_radius, alpha, beta):
    """dx = dout / den^beta - 2 alpha beta x * (sum over the channel window of dout * y / den)."""
    return dout / den ** beta - 2.0 * alpha * beta * x * _window_sums(dout * y / den, depth_radius)


LRN_BACKWARD = ("lrn_backward", "raw T dout, raw T x, raw T y, raw T den, int32 C, int32 R, T alpha, T beta",
                "T dx", """
    const int k = i % C;
    const ptrdiff_t pixel = i - k;
    T sum = 0;                                             // outputs d whose window holds channel k
    for (int d = max(k - R, 0); d <= min(k + R, C - 1); ++d) sum += dout[pixel + d] * y[pixel + d] / den[pixel + d];
    dx = dout[i] / pow(den[i], beta) - 2 * alpha * beta * x[i] * sum;
""")


def _lrn_backward_cuda(cupy, dout, x, y, den, depth_radius, alpha, beta):
    dx = cupy.empty(x.shape, dtype=x.dtype)
    _elementwise(cupy, LRN_BACKWARD)(dout, x, y, den, x.shape[-1], depth_radius, alpha, beta, dx)
    return dx


lrn_backward = Kernel(lrn_backward_numpy, _lrn_backward_cuda)


# ---- MaxPool2D ----------------------------------------------------------------------------------

def _pool_taps(xpad, pool_size, strides, out_size):
    """[(index, view)] of each tap (i, j) of every window, column by column (j), top to bottom (i)."""
    (PH, PW), (SH, SW), (OH, OW) = pool_size, strides, out_size
    for j in range(PW):
        for i in range(PH):
            index = (slice(None), slice(i, i + SH * OH, SH), slice(j, j + SW * OW, SW))
            yield index, xpad[index]


def max_pool_numpy(x, pool_size, strides, pads, out_size):
    """y[n, oh, ow, c] = max over the window's taps; padding (-inf) never wins."""
    xp = backend.get_array_module(x)
    xpad = xp.pad(x, _pad_spec(pads), constant_values=-xp.inf)
    return xp.stack([view for _, view in _pool_taps(xpad, pool_size, strides, out_size)]).max(axis=0)


MAX_POOL = ("max_pool", "raw T x, int32 H, int32 W, int32 C, int32 PH, int32 PW, int32 SH, int32 SW, "
            "int32 OH, int32 OW, int32 top, int32 left", "T y", """
    const int c = i % C, ow = (i / C) % OW, oh = (i / C / OW) % OH;
    const ptrdiff_t img = i / C / OW / OH;
    T best = 0;
    bool found = false;
    for (int pj = 0; pj < PW; ++pj) {
        const int w = ow * SW + pj - left;
        for (int pi = 0; pi < PH; ++pi) {
            const int h = oh * SH + pi - top;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;          // padding never wins
            const T value = x[((img * H + h) * W + w) * C + c];
            if (!found || value > best || value != value) best = value;  // NaN stays, as np.maximum
            found = true;
        }
    }
    y = best;
""")


def _max_pool_cuda(cupy, x, pool_size, strides, pads, out_size):
    N, H, W, C = x.shape
    y = cupy.empty((N,) + tuple(out_size) + (C,), dtype=x.dtype)
    _elementwise(cupy, MAX_POOL)(x, H, W, C, *pool_size, *strides, *out_size, pads[0][0], pads[1][0], y)
    return y


max_pool = Kernel(max_pool_numpy, _max_pool_cuda)


def max_pool_backward_numpy(dout, x, y, pool_size, strides, pads, out_size):
    """Each dout goes to its window's FIRST maximum, taps taken column by column (left to right), top
    to bottom within a column: the rule of MaxPool2D's two passes. Overlapping windows add up."""
    xp = backend.get_array_module(dout)
    (top, _), (left, _) = pads
    xpad = xp.pad(x, _pad_spec(pads), constant_values=-xp.inf)
    dxpad = xp.zeros(xpad.shape, dtype=dout.dtype)
    remaining = dout                                       # what no earlier tap has taken
    for index, view in _pool_taps(xpad, pool_size, strides, out_size):
        taken = remaining * (view == y)
        dxpad[index] += taken
        remaining = remaining - taken
    return dxpad[:, top:top + x.shape[1], left:left + x.shape[2], :]


MAX_POOL_BACKWARD = ("max_pool_backward", "raw T dout, raw T x, raw T y, int32 H, int32 W, int32 C, int32 PH, "
                     "int32 PW, int32 SH, int32 SW, int32 OH, int32 OW, int32 top, int32 left", "T dx", """
    const int c = i % C, w = (i / C) % W, h = (i / C / W) % H;
    const ptrdiff_t img = i / C / W / H;
    const T value = x[i];
    T sum = 0;
    // the windows (oh, ow) that hold (h, w): oh * SH <= h + top < oh * SH + PH, and the same across
    const int last_h = min((h + top) / SH, OH - 1), last_w = min((w + left) / SW, OW - 1);
    const int from_h = h + top - PH + 1, from_w = w + left - PW + 1;
    for (int oh = from_h > 0 ? (from_h + SH - 1) / SH : 0; oh <= last_h; ++oh) {
        for (int ow = from_w > 0 ? (from_w + SW - 1) / SW : 0; ow <= last_w; ++ow) {
            const ptrdiff_t out = ((img * OH + oh) * OW + ow) * C + c;
            if (value != y[out]) continue;
            // (h, w) is tap (mine_i, mine_j); does an earlier tap (column first) hold the maximum too?
            const int mine_i = h + top - oh * SH, mine_j = w + left - ow * SW;
            bool first = true;
            for (int pj = 0; pj <= mine_j && first; ++pj) {
                const int w2 = ow * SW + pj - left;
                for (int pi = 0; pi < (pj == mine_j ? mine_i : PH); ++pi) {
                    const int h2 = oh * SH + pi - top;
                    if (h2 < 0 || h2 >= H || w2 < 0 || w2 >= W) continue;
                    if (x[((img * H + h2) * W + w2) * C + c] == value) { first = false; break; }
                }
            }
            if (first) sum += dout[out];
        }
    }
    dx = sum;
""")


def _max_pool_backward_cuda(cupy, dout, x, y, pool_size, strides, pads, out_size):
    N, H, W, C = x.shape
    dx = cupy.empty(x.shape, dtype=dout.dtype)
    _elementwise(cupy, MAX_POOL_BACKWARD)(dout, x, y, H, W, C, *pool_size, *strides, *out_size,
                                           pads[0][0], pads[1][0], dx)
    return dx


max_pool_backward = Kernel(max_pool_backward_numpy, _max_pool_backward_cuda)


# ---- Dropout ------------------------------------------------------------------------------------

def dropout_numpy(x, rate, rng):
    """(y, mask): mask = [u >= rate] / (1 - rate) from the generator's next draws u, and y = x * mask."""
    mask = (rng.random(x.shape, x.dtype, like=x) >= rate).astype(x.dtype) * (1.0 / (1.0 - rate))
    return x * mask, mask


DROPOUT = ("dropout", "T x, uint64 start, T rate, T scale", "T y, T mask", """
    unsigned long long z = start + (unsigned long long)i * 0x9E3779B97F4A7C15ull;   // SplitMix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const int bits = sizeof(T) == 4 ? 24 : 53;             // as minialex.random: the top 24 or 53 bits
    const T u = (T)(z >> (64 - bits)) * (T)(1.0 / (double)(1ull << bits));
    mask = u >= rate ? scale : (T)0;
    y = x * mask;
""")


def _dropout_cuda(cupy, x, rate, rng):
    y, mask = cupy.empty_like(x), cupy.empty_like(x)
    _elementwise(cupy, DROPOUT)(x, cupy.uint64(rng.reserve(x.shape)), rate, 1.0 / (1.0 - rate), y, mask)
    return y, mask


dropout = Kernel(dropout_numpy, _dropout_cuda)


# ---- the loss: softmax cross-entropy --------------------------------------------------------------

def softmax_cross_entropy_numpy(logits, targets):
    """(each row's loss / N, probabilities) of softmax cross-entropy: the mean loss is their sum."""
    xp = backend.get_array_module(logits)
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= xp.log(xp.exp(log_probs).sum(axis=1, keepdims=True))
    return -(targets * log_probs).sum(axis=1) / logits.shape[0], xp.exp(log_probs)


SOFTMAX_CROSS_ENTROPY = ("softmax_cross_entropy", "raw T z, raw T t, int32 K, T inv_n", "T row_loss, raw T probs", """
    const ptrdiff_t row = i * K;                           // one row (sample) per element of row_loss
    T m = z[row];
    for (int k = 1; k < K; ++k) m = z[row + k] > m ? z[row + k] : m;
    T sum = 0;
    for (int k = 0; k < K; ++k) sum += exp(z[row + k] - m);
    const T log_sum = log(sum);
    T loss = 0;
    for (int k = 0; k < K; ++k) {
        const T log_p = z[row + k] - m - log_sum;
        probs[row + k] = exp(log_p);
        loss -= t[row + k] * log_p;
    }
    row_loss = loss * inv_n;
""")


def _softmax_cross_entropy_cuda(cupy, logits, targets):
    N, K = logits.shape
    row_losses = cupy.empty(N, dtype=logits.dtype)
    probs = cupy.empty((N, K), dtype=logits.dtype)
    _elementwise(cupy, SOFTMAX_CROSS_ENTROPY)(logits, targets, K, 1.0 / N, row_losses, probs)
    return row_losses, probs


softmax_cross_entropy = Kernel(softmax_cross_entropy_numpy, _softmax_cross_entropy_cuda)


# ---- Adam over the flat buffer ------------------------------------------------------------------

def adam_numpy(param, grad, m, v, alpha, beta_1, beta_2, epsilon):
    """Keras's Adam step, in place: m, v move towards g, g^2; p -= alpha_t * m / (sqrt(v) + epsilon)."""
    xp = backend.get_array_module(param)
    m += (1.0 - beta_1) * (grad - m)
    v += (1.0 - beta_2) * (grad * grad - v)
    param -= alpha * m / (xp.sqrt(v) + epsilon)


ADAM = ("adam", "T grad, T alpha, T one_minus_beta_1, T one_minus_beta_2, T epsilon", "T param, T m, T v", """
    m += one_minus_beta_1 * (grad - m);
    v += one_minus_beta_2 * (grad * grad - v);
    param -= alpha * m / (sqrt(v) + epsilon);
""")


def _adam_cuda(cupy, param, grad, m, v, alpha, beta_1, beta_2, epsilon):
    _elementwise(cupy, ADAM)(grad, alpha, 1.0 - beta_1, 1.0 - beta_2, epsilon, param, m, v)


adam = Kernel(adam_numpy, _adam_cuda)


# ---- BatchNormalization: sums over the rows (CuPy reductions) and fused elementwise kernels ----------

def _reduction(cupy, source):
    """``cupy.ReductionKernel`` for ``source`` = (name, in_params, out_params, map, reduce, post_map, identity),
    made once: for each output, ``a`` starts at identity and takes ``reduce`` of itself and ``b``, the
    map of one input element, over the reduced axis; post_map writes the result."""
    key = (cupy, source[0])
    if key not in _compiled:
        name, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity = source
        _compiled[key] = cupy.ReductionKernel(in_params, out_params, map_expr, reduce_expr, post_map_expr,
                                              identity, "minialex_" + name)
    return _compiled[key]


def batchnorm_variance_numpy(rows, mean):
    """The batch's (biased) variance of each column: (1/M) sum over the M rows of (rows - mean)^2."""
    return ((rows - mean) ** 2).mean(axis=0)


BATCHNORM_VARIANCE = ("batchnorm_variance", "T x, T mean, T inv_m", "T variance",
                      "(x - mean) * (x - mean)", "a + b", "variance = inv_m * a", "0")


def _batchnorm_variance_cuda(cupy, rows, mean):
    return _reduction(cupy, BATCHNORM_VARIANCE)(rows, mean.reshape(1, -1), 1.0 / rows.shape[0], axis=0)


batchnorm_variance = Kernel(batchnorm_variance_numpy, _batchnorm_variance_cuda)


def batchnorm_normalize_numpy(rows, mean, variance, gamma, beta, epsilon):
    """(y, xhat): xhat = (rows - mean) / sqrt(variance + epsilon) and y = gamma * xhat + beta, column by
    column (gamma and beta may be the numbers 1 and 0)."""
    xp = backend.get_array_module(rows)
    xhat = (rows - mean) / xp.sqrt(variance + epsilon)
    return gamma * xhat + beta, xhat


BATCHNORM_NORMALIZE = ("batchnorm_normalize", "T x, T mean, T variance, T gamma, T beta, T epsilon", "T y, T xhat", """
    xhat = (x - mean) / sqrt(variance + epsilon);
    y = gamma * xhat + beta;
""")


def _batchnorm_normalize_cuda(cupy, rows, mean, variance, gamma, beta, epsilon):
    y, xhat = cupy.empty_like(rows), cupy.empty_like(rows)
    _elementwise(cupy, BATCHNORM_NORMALIZE)(rows, mean, variance, gamma, beta, epsilon, y, xhat)
    return y, xhat


batchnorm_normalize = Kernel(batchnorm_normalize_numpy, _batchnorm_normalize_cuda)


def batchnorm_moving_average_numpy(mean, variance, momentum, moving_mean, moving_variance):
    """In place: moving = momentum * moving + (1 - momentum) * the batch's, for the mean and the variance."""
    for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
        moving *= momentum
        moving += (1.0 - momentum) * batch


BATCHNORM_MOVING_AVERAGE = ("batchnorm_moving_average", "T mean, T variance, T momentum, T one_minus_momentum",
                            "T moving_mean, T moving_variance", """
    moving_mean = momentum * moving_mean + one_minus_momentum * mean;
    moving_variance = momentum * moving_variance + one_minus_momentum * variance;
""")


def _batchnorm_moving_average_cuda(cupy, mean, variance, momentum, moving_mean, moving_variance):
    _elementwise(cupy, BATCHNORM_MOVING_AVERAGE)(mean, variance, momentum, 1.0 - momentum, moving_mean,
                                                 moving_variance)


batchnorm_moving_average = Kernel(batchnorm_moving_average_numpy, _batchnorm_moving_average_cuda)


def batchnorm_dgamma_numpy(dout, xhat, out=None):
    """d gamma = the sum over the rows of dout * xhat (into ``out`` if given)."""
    return (dout * xhat).sum(axis=0, out=out)


BATCHNORM_DGAMMA = ("batchnorm_dgamma", "T dout, T xhat", "T dgamma", "dout * xhat", "a + b", "dgamma = a", "0")


def _batchnorm_dgamma_cuda(cupy, dout, xhat, out=None):
    outputs = () if out is None else (out,)
    return _reduction(cupy, BATCHNORM_DGAMMA)(dout, xhat, *outputs, axis=0)


batchnorm_dgamma = Kernel(batchnorm_dgamma_numpy, _batchnorm_dgamma_cuda)


def batchnorm_backward_numpy(dout, xhat, dbeta, dgamma, gamma, variance, epsilon):
    """dx = gamma / sqrt(variance + epsilon) * (dout - (dbeta + xhat * dgamma) / M), M the number of rows."""
    xp = backend.get_array_module(dout)
    return gamma / xp.sqrt(variance + epsilon) * (dout - (dbeta + xhat * dgamma) / dout.shape[0])


BATCHNORM_BACKWARD = ("batchnorm_backward", "T dout, T xhat, T dbeta, T dgamma, T gamma, T variance, T epsilon, "
                      "T inv_m", "T dx", """
    dx = gamma / sqrt(variance + epsilon) * (dout - (dbeta + xhat * dgamma) * inv_m);
""")


def _batchnorm_backward_cuda(cupy, dout, xhat, dbeta, dgamma, gamma, variance, epsilon):
    dx = cupy.empty_like(dout)
    _elementwise(cupy, BATCHNORM_BACKWARD)(dout, xhat, dbeta, dgamma, gamma, variance, epsilon,
                                           1.0 / dout.shape[0], dx)
    return dx


batchnorm_backward = Kernel(batchnorm_backward_numpy, _batchnorm_backward_cuda)
