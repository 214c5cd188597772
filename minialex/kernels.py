"""The GPU halves: what a GPU runs in place of a layer's CPU code, one CUDA kernel where NumPy takes several steps.

On a GPU every array operation is a kernel launch, and the host spends roughly 10 microseconds on
each: for a network this small that, not the arithmetic, sets the time of a step
(``benchmarks/launch_count.py`` counts them). So where a layer's NumPy code takes several steps, that
code is written as a function of its own in the layer's module, its *NumPy half*, and marked with
the CUDA half that replaces it on a GPU::

    @kernels.gpu(kernels.lrn_cuda)
    def lrn(x, depth_radius, bias, alpha, beta):
        ...                                  # the CPU's code: what the layer runs on NumPy

The call then dispatches on its first argument's array module: NumPy runs the NumPy half, the very
code of the CPU's training step; CuPy runs the CUDA half, called with the cupy module in front of the
same arguments, returning the same values (where the NumPy half returns something only the CPU's
backward uses, the CUDA half returns None in its place); another module (``minialex.stand_in``,
CuPy's stand-in on the CPU) runs the NumPy half as the ``launches`` launches the CUDA half makes.
There is ONE CPU copy of each formula: the layer's.

This file holds the CUDA halves. Each is a ``cupy.ElementwiseKernel``: C++ for ONE output element
that CuPy runs once per element (``i`` is the element's flat index; ``raw`` arrays are read at any
flat index), or two CuPy reductions (``cupy.ReductionKernel``), and where a matrix product comes
first, that product (cuBLAS) and the kernel. tests/test_kernels.py holds every CUDA half equal to
its NumPy half: on a GPU, and everywhere as its C++ compiled for the CPU; tests/test_nvrtc.py has
NVRTC compile the source CuPy writes for it. Simple elementwise chains need no hand-written kernel:
``backend.fuse`` compiles the NumPy lines themselves with ``cupy.fuse``.
"""
from __future__ import annotations

import functools

from . import backend, cublas


class Kernel:
    """A function with two halves, called with the same arguments: ``numpy_half(*args)``, the CPU's code,
    and ``cuda_half(cupy, *args)``, which makes ``launches`` launches on a GPU."""

    def __init__(self, numpy_half, cuda_half, launches=1):
        self.numpy_half, self.cuda_half, self.launches = numpy_half, cuda_half, launches
        functools.update_wrapper(self, numpy_half)

    def __call__(self, *args, **kwargs):
        if backend.on_cpu(args[0]):
            return self.numpy_half(*args, **kwargs)
        module = backend.get_array_module(args[0])
        if module.__name__ == "cupy":
            return self.cuda_half(module, *args, **kwargs)
        return module.run_kernel(self, *args, **kwargs)


def gpu(cuda_half, launches=1):
    """Decorator: the function below is the CPU's code (the NumPy half); on a GPU ``cuda_half`` runs instead."""
    return lambda numpy_half: Kernel(numpy_half, cuda_half, launches)


_compiled: dict = {}


def _elementwise(cupy, source):
    """``cupy.ElementwiseKernel`` for ``source`` = (name, in_params, out_params, operation), made once."""
    key = (cupy, source[0])
    if key not in _compiled:
        name, in_params, out_params, operation = source
        _compiled[key] = cupy.ElementwiseKernel(in_params, out_params, operation, "minialex_" + name)
    return _compiled[key]


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


# ---- Conv2D (minialex/layers/conv.py): im2col with its padding; col2im of dz @ K^T, cropped ----------

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


def im2col_cuda(cupy, x, pads, kernel_size, strides, out_size):
    N, H, W, C = x.shape
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    cols = cupy.empty((N * OH * OW, KH * KW * C), dtype=x.dtype)
    _elementwise(cupy, IM2COL)(x, H, W, C, KH, KW, SH, SW, OH, OW, pads[0][0], pads[1][0], cols)
    return cols


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


def col2im_by_taps_cuda(cupy, dz, kernel, input_shape, pads, strides, out_size):
    """dx = col2im(dcols) cropped to the input, dcols = dz @ K^T: one product, then one kernel."""
    KH, KW, C, F = kernel.shape
    N, H, W, _ = input_shape
    (SH, SW), (OH, OW) = strides, out_size
    dcols = matmul_cuda(cupy, dz, kernel.reshape(-1, F).T)
    dx = cupy.empty(input_shape, dtype=dz.dtype)
    _elementwise(cupy, COL2IM)(dcols, H, W, C, KH, KW, SH, SW, OH, OW, pads[0][0], pads[1][0], dx)
    return dx


# ---- LocalResponseNorm (minialex/layers/lrn.py) ---------------------------------------------------

LRN = ("lrn", "raw T x, int32 C, int32 R, T bias, T alpha, T beta", "T y, T den", """
    const int d = i % C;
    const ptrdiff_t pixel = i - d;
    T sum = 0;
    for (int k = max(d - R, 0); k <= min(d + R, C - 1); ++k) sum += x[pixel + k] * x[pixel + k];
    den = bias + alpha * sum;
    y = x[i] / pow(den, beta);
""")


def lrn_cuda(cupy, x, depth_radius, bias, alpha, beta):
    """(y, den, None): the backward kernel recomputes den^beta."""
    y, den = cupy.empty_like(x), cupy.empty_like(x)
    _elementwise(cupy, LRN)(x, x.shape[-1], depth_radius, bias, alpha, beta, y, den)
    return y, den, None


LRN_BACKWARD = ("lrn_backward", "raw T dout, raw T x, raw T y, raw T den, int32 C, int32 R, T alpha, T beta",
                "T dx", """
    const int k = i % C;
    const ptrdiff_t pixel = i - k;
    T sum = 0;                                             // outputs d whose window holds channel k
    for (int d = max(k - R, 0); d <= min(k + R, C - 1); ++d) sum += dout[pixel + d] * y[pixel + d] / den[pixel + d];
    dx = dout[i] / pow(den[i], beta) - 2 * alpha * beta * x[i] * sum;
""")


def lrn_backward_cuda(cupy, dout, x, y, den, den_beta, depth_radius, alpha, beta):
    dx = cupy.empty(x.shape, dtype=x.dtype)
    _elementwise(cupy, LRN_BACKWARD)(dout, x, y, den, x.shape[-1], depth_radius, alpha, beta, dx)
    return dx


# ---- MaxPool2D (minialex/layers/pool.py) ----------------------------------------------------------

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


def max_pool_cuda(cupy, x, pool_size, strides, pads, out_size):
    """(y, None): the backward kernel reads x itself, not the first pass's column maxima."""
    N, H, W, C = x.shape
    y = cupy.empty((N,) + tuple(out_size) + (C,), dtype=x.dtype)
    _elementwise(cupy, MAX_POOL)(x, H, W, C, *pool_size, *strides, *out_size, pads[0][0], pads[1][0], y)
    return y, None


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


def max_pool_backward_cuda(cupy, dout, x, column_max, y, pool_size, strides, pads, out_size):
    N, H, W, C = x.shape
    dx = cupy.empty(x.shape, dtype=dout.dtype)
    _elementwise(cupy, MAX_POOL_BACKWARD)(dout, x, y, H, W, C, *pool_size, *strides, *out_size,
                                           pads[0][0], pads[1][0], dx)
    return dx


# ---- Dropout (minialex/layers/dropout.py) ---------------------------------------------------------

SPLITMIX_DROPOUT = """
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;                                     // SplitMix64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const int bits = sizeof(T) == 4 ? 24 : 53;             // as minialex.random: the top 24 or 53 bits
    const T u = (T)(z >> (64 - bits)) * (T)(1.0 / (double)(1ull << bits));
    mask = u >= rate ? scale : (T)0;
    y = x * mask;
"""
DROPOUT = ("dropout", "T x, uint64 start, T rate, T scale", "T y, T mask",
           "unsigned long long z = start + (unsigned long long)i * 0x9E3779B97F4A7C15ull;" + SPLITMIX_DROPOUT)
DROPOUT_FROM_VALUES = ("dropout_from_values", "T x, raw uint64 base, uint64 offset, T rate, T scale", "T y, T mask",
                       "unsigned long long z = base[0] + offset + (unsigned long long)i * 0x9E3779B97F4A7C15ull;"
                       + SPLITMIX_DROPOUT)


def dropout_cuda(cupy, x, rate, rng):
    """The generator's next draws made on the device from where ``rng.device_start`` says they start: a
    number (the kernel's argument), or a word of the step's values and an offset from it (read when the
    kernel runs, so a CUDA graph's replays draw anew: ``minialex.step_values``)."""
    y, mask = cupy.empty_like(x), cupy.empty_like(x)
    base, offset = rng.device_start(x.shape, like=x)
    if base is None:
        _elementwise(cupy, DROPOUT)(x, cupy.uint64(offset), rate, 1.0 / (1.0 - rate), y, mask)
    else:
        _elementwise(cupy, DROPOUT_FROM_VALUES)(x, base, cupy.uint64(offset), rate, 1.0 / (1.0 - rate), y, mask)
    return y, mask


# ---- Dense's and Conv2D's bias and ReLU (minialex/layers/activations.py) ----------------------------

ADD_BIAS_RELU = ("add_bias_relu", "T bias", "T product", """
    const T z = product + bias;
    product = (z > (T)0 || z != z) ? z : (T)0;             // NaN stays, as np.maximum
""")


def add_bias_relu_cuda(cupy, product, bias):
    _elementwise(cupy, ADD_BIAS_RELU)(bias, product)
    return product


# ---- the loss: softmax cross-entropy (minialex/losses.py) -----------------------------------------

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


def softmax_cross_entropy_cuda(cupy, logits, targets):
    """(mean loss, probabilities): one kernel for each row's loss / N and probabilities, then their sum."""
    N, K = logits.shape
    row_losses = cupy.empty(N, dtype=logits.dtype)
    probs = cupy.empty((N, K), dtype=logits.dtype)
    _elementwise(cupy, SOFTMAX_CROSS_ENTROPY)(logits, targets, K, 1.0 / N, row_losses, probs)
    return row_losses.sum(), probs


# ---- Adam over the flat buffer (minialex/optimizers.py) ---------------------------------------------

ADAM_UPDATE = """
    m += one_minus_beta_1 * (grad - m);
    v += one_minus_beta_2 * (grad * grad - v);
    param -= alpha * m / (sqrt(v) + epsilon);
"""
ADAM = ("adam", "T grad, T alpha, T one_minus_beta_1, T one_minus_beta_2, T epsilon", "T param, T m, T v",
        ADAM_UPDATE)
ADAM_FROM_VALUES = ("adam_from_values", "T grad, raw float64 step_size, T one_minus_beta_1, T one_minus_beta_2, "
                    "T epsilon", "T param, T m, T v", "const T alpha = (T)step_size[0];" + ADAM_UPDATE)


def adam_cuda(cupy, param, grad, m, v, scratch, alpha, beta_1, beta_2, epsilon):
    """In place, in one kernel (no scratch needed: each element's lines run in registers). ``alpha``: a
    number, or the float64 word of the step's values that holds it (read when the kernel runs)."""
    if isinstance(alpha, float):
        _elementwise(cupy, ADAM)(grad, alpha, 1.0 - beta_1, 1.0 - beta_2, epsilon, param, m, v)
    else:
        _elementwise(cupy, ADAM_FROM_VALUES)(grad, alpha, 1.0 - beta_1, 1.0 - beta_2, epsilon, param, m, v)


# ---- BatchNormalization (minialex/layers/batchnorm.py) -----------------------------------------------

BATCHNORM_VARIANCE = ("batchnorm_variance", "T x, T mean, T inv_m", "T variance",
                      "(x - mean) * (x - mean)", "a + b", "variance = inv_m * a", "0")


def batchnorm_statistics_cuda(cupy, rows):
    """(mean, variance) of each column: two reductions."""
    mean = rows.mean(axis=0)
    variance = _reduction(cupy, BATCHNORM_VARIANCE)(rows, mean.reshape(1, -1), 1.0 / rows.shape[0], axis=0)
    return mean, variance


BATCHNORM_NORMALIZE = ("batchnorm_normalize", "T x, T mean, T variance, T gamma, T beta, T epsilon", "T y, T xhat", """
    xhat = (x - mean) / sqrt(variance + epsilon);
    y = gamma * xhat + beta;
""")


def batchnorm_normalize_cuda(cupy, rows, mean, variance, gamma, beta, epsilon):
    y, xhat = cupy.empty_like(rows), cupy.empty_like(rows)
    _elementwise(cupy, BATCHNORM_NORMALIZE)(rows, mean, variance, gamma, beta, epsilon, y, xhat)
    return y, xhat


BATCHNORM_INFERENCE = ("batchnorm_inference", "T x, T mean, T variance, T gamma, T beta, T epsilon", "T y", """
    y = (x - mean) * (gamma / sqrt(variance + epsilon)) + beta;
""")


def batchnorm_inference_cuda(cupy, rows, moving_mean, moving_variance, gamma, beta, epsilon):
    y = cupy.empty_like(rows)
    _elementwise(cupy, BATCHNORM_INFERENCE)(rows, moving_mean, moving_variance, gamma, beta, epsilon, y)
    return y


BATCHNORM_MOVING_AVERAGE = ("batchnorm_moving_average", "T mean, T variance, T momentum, T one_minus_momentum",
                            "T moving_mean, T moving_variance", """
    moving_mean = momentum * moving_mean + one_minus_momentum * mean;
    moving_variance = momentum * moving_variance + one_minus_momentum * variance;
""")


def batchnorm_moving_average_cuda(cupy, mean, variance, momentum, moving_mean, moving_variance):
    _elementwise(cupy, BATCHNORM_MOVING_AVERAGE)(mean, variance, momentum, 1.0 - momentum, moving_mean,
                                                 moving_variance)


BATCHNORM_DGAMMA = ("batchnorm_dgamma", "T dout, T xhat", "T dgamma", "dout * xhat", "a + b", "dgamma = a", "0")


def batchnorm_parameter_gradients_cuda(cupy, dout, xhat, dbeta, dgamma):
    """(d beta, d gamma) = the sums over the rows of dout and of dout * xhat, into ``dbeta`` and
    ``dgamma`` where given: two reductions."""
    dbeta = dout.sum(axis=0, out=dbeta)
    outputs = () if dgamma is None else (dgamma,)
    return dbeta, _reduction(cupy, BATCHNORM_DGAMMA)(dout, xhat, *outputs, axis=0)


BATCHNORM_BACKWARD = ("batchnorm_backward", "T dout, T xhat, T dbeta, T dgamma, T gamma, T variance, T epsilon, "
                      "T inv_m", "T dx", """
    dx = gamma / sqrt(variance + epsilon) * (dout - (dbeta + xhat * dgamma) * inv_m);
""")


def batchnorm_backward_cuda(cupy, dout, xhat, dbeta, dgamma, gamma, variance, epsilon, M):
    dx = cupy.empty_like(dout)
    _elementwise(cupy, BATCHNORM_BACKWARD)(dout, xhat, dbeta, dgamma, gamma, variance, epsilon, 1.0 / M, dx)
    return dx


# ---- the matrix products of Conv2D and Dense (minialex/layers/base.py) ------------------------------

def matmul_cuda(cupy, a, b, out=None):
    """a @ b by one cuBLAS call made directly (``minialex.cublas``): the same call eagerly and in a CUDA
    graph, where CuPy's own products are refused."""
    return cublas.matmul(cupy, a, b, out)


# ---- the fit loop's bookkeeping on a GPU (minialex/graphs.py) --------------------------------------

ADD_TO_SUMS = ("add_to_sums", "T loss, int64 correct, int32 rows", "T loss_sum, int64 correct_sum", """
    loss_sum += loss * (T)rows;
    correct_sum += correct;
""")


def add_to_sums_cuda(cupy, loss, correct, rows, loss_sum, correct_sum):
    _elementwise(cupy, ADD_TO_SUMS)(loss, correct, rows, loss_sum, correct_sum)


RECORD_STEP = ("record_step", "T loss, int64 correct, int32 rows, raw uint64 step",
               "T loss_sum, int64 correct_sum, raw float32 record", """
    record[(ptrdiff_t)step[0]] = (float)loss;                // the guard's record is float32
    loss_sum += loss * (T)rows;
    correct_sum += correct;
""")


def record_step_cuda(cupy, loss, correct, rows, step, record, loss_sum, correct_sum):
    _elementwise(cupy, RECORD_STEP)(loss, correct, rows, step, loss_sum, correct_sum, record)
