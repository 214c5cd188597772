"""Plain twins of the fast layers: loops to read before the fast code, and the ground truth it is held to.

Each fast layer in ``minialex.layers`` (and the fused loss in ``minialex.losses``) buys its speed with
a trick: im2col and one matrix product for Conv2D, strided views for MaxPool2D, a band matrix for
LocalResponseNorm, a collected backward for BatchNormalization. Here every one of them has a twin
written the obvious way, as a pair of pure functions ``*_forward`` and ``*_backward`` (``TWINS`` at
the end names each layer's), with ``for`` loops over pixels, windows and channels and each docstring
carrying the formula its fast twin's module docstring states. Read a twin first, then the fast layer.
``tests/test_naive.py`` holds every fast layer equal to its twin, forward and backward, and every
twin's backward against finite differences.

Notation as in the layers: N batch, H W input height and width, C input channels, F filters, KH KW
a kernel's size, PH PW a pool's, SH SW strides, OH OW output size. Images are channels-last
(N, H, W, C); the conv kernel is (KH, KW, C, F) and the dense kernel (D_in, D_out), as Keras lays
them out. ``xpad`` is the input with its 'same' padding added. A backward takes the gradient of the
loss with respect to the forward's output (``dz`` for the affine layers: the gradient after the
activation's own backward) and the forward's inputs, and recomputes whatever else it needs.

Every function takes ``xp`` from its arrays, so the twins run on NumPy and CuPy alike (on CuPy each
loop step is a kernel launch: right, and very slow).
"""
from __future__ import annotations

from . import backend


def pad_input(x, window, strides, padding, fill=0.0):
    """Pad images for a sliding window as Keras does.

    'valid' adds nothing. 'same' adds ``total = max((OH - 1) * SH + KH - H, 0)`` rows, OH = ceil(H / SH),
    split as TensorFlow does: total // 2 on top and the odd one at the bottom; likewise for columns.

    Inputs:
    - x: (N, H, W, C)
    - window: (KH, KW);  strides: (SH, SW);  padding: 'valid' or 'same'
    - fill: the value of the added pixels (0 for convolution, -inf for max-pooling)
    Returns (xpad, (top, left)):
    - xpad: (N, H + top + bottom, W + left + right, C)
    - (top, left): where x starts inside xpad, to crop a gradient back to x's shape
    """
    xp = backend.get_array_module(x)
    if padding == "valid":
        return x, (0, 0)
    pads = []
    for length, k, s in zip(x.shape[1:3], window, strides):
        out = -(-length // s)
        total = max((out - 1) * s + k - length, 0)
        pads.append((total // 2, total - total // 2))
    xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    return xpad, (pads[0][0], pads[1][0])


def _window_output_size(xpad, window, strides):
    """(OH, OW): how many windows fit in the padded images, ``(Hp - KH) // SH + 1`` along each axis."""
    return tuple((length - k) // s + 1 for length, k, s in zip(xpad.shape[1:3], window, strides))


# ---- Conv2D ------------------------------------------------------------------------------------

def conv2d_forward(x, kernel, bias, strides=(1, 1), padding="valid"):
    """Conv2D's affine part, one output value at a time (Keras's convolution is a cross-correlation):

        z[n, oh, ow, f] = bias[f] + sum_{i, j, c} xpad[n, oh*SH + i, ow*SW + j, c] * kernel[i, j, c, f]

    Inputs:
    - x: (N, H, W, C) images
    - kernel: (KH, KW, C, F)
    - bias: (F,), or None for a layer built with use_bias=False
    - strides: (SH, SW)
    - padding: 'valid' (OH = floor((H - KH) / SH) + 1) or 'same' (OH = ceil(H / SH), zeros around x)
    Returns:
    - z: (N, OH, OW, F), before any activation
    """
    xp = backend.get_array_module(x, kernel)
    KH, KW, _, F = kernel.shape
    SH, SW = strides
    xpad, _ = pad_input(x, (KH, KW), strides, padding)
    OH, OW = _window_output_size(xpad, (KH, KW), strides)
    N = x.shape[0]
    z = xp.zeros((N, OH, OW, F), dtype=x.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                window = xpad[n, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW, :]      # (KH, KW, C)
                for f in range(F):
                    z[n, oh, ow, f] = xp.sum(window * kernel[:, :, :, f])
                    if bias is not None:
                        z[n, oh, ow, f] += bias[f]
    return z


def conv2d_backward(dz, x, kernel, strides=(1, 1), padding="valid"):
    """Conv2D's backward, one output value at a time: each z[n, oh, ow, f] read one window of xpad
    through kernel[..., f], so its gradient flows back along the same products:

        dkernel[i, j, c, f] = sum_{n, oh, ow} xpad[n, oh*SH + i, ow*SW + j, c] * dz[n, oh, ow, f]
        dbias[f]            = sum_{n, oh, ow} dz[n, oh, ow, f]
        dxpad[n, oh*SH + i, ow*SW + j, c]  +=  kernel[i, j, c, f] * dz[n, oh, ow, f]   for every (oh, ow, f)

    then dx is dxpad with the padding cropped off. (The fast layer's d kernel = cols^T @ dz and
    dx = col2im(dz @ K^T) are these sums, written as matrix products.)

    Inputs:
    - dz: (N, OH, OW, F) gradient of the loss with respect to z (after the activation's backward)
    - x, kernel, strides, padding: as given to ``conv2d_forward``
    Returns (dx, dkernel, dbias):
    - dx: (N, H, W, C);  dkernel: (KH, KW, C, F);  dbias: (F,) (unused when the layer has no bias)
    """
    xp = backend.get_array_module(dz, x, kernel)
    KH, KW, _, F = kernel.shape
    SH, SW = strides
    N, H, W, _ = x.shape
    xpad, (top, left) = pad_input(x, (KH, KW), strides, padding)
    OH, OW = dz.shape[1:3]
    dxpad = xp.zeros(xpad.shape, dtype=dz.dtype)
    dkernel = xp.zeros(kernel.shape, dtype=dz.dtype)
    dbias = xp.zeros(F, dtype=dz.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                span_h, span_w = slice(oh * SH, oh * SH + KH), slice(ow * SW, ow * SW + KW)   # the window
                for f in range(F):
                    dkernel[:, :, :, f] += xpad[n, span_h, span_w, :] * dz[n, oh, ow, f]
                    dbias[f] += dz[n, oh, ow, f]
                    dxpad[n, span_h, span_w, :] += kernel[:, :, :, f] * dz[n, oh, ow, f]
    return dxpad[:, top:top + H, left:left + W, :], dkernel, dbias


# ---- MaxPool2D ---------------------------------------------------------------------------------

def maxpool2d_forward(x, pool_size=(2, 2), strides=(2, 2), padding="valid"):
    """The largest value of each window, one window and channel at a time:

        y[n, oh, ow, c] = max_{i < PH, j < PW} xpad[n, oh*SH + i, ow*SW + j, c]

    Inputs:
    - x: (N, H, W, C)
    - pool_size: (PH, PW);  strides: (SH, SW)
    - padding: 'valid' (OH = floor((H - PH) / SH) + 1) or 'same' (OH = ceil(H / SH), padded with -inf,
      never 0: a zero would beat an all-negative window)
    Returns:
    - y: (N, OH, OW, C)
    """
    xp = backend.get_array_module(x)
    PH, PW = pool_size
    SH, SW = strides
    xpad, _ = pad_input(x, pool_size, strides, padding, fill=-xp.inf)
    OH, OW = _window_output_size(xpad, pool_size, strides)
    N, _, _, C = x.shape
    y = xp.zeros((N, OH, OW, C), dtype=x.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    y[n, oh, ow, c] = xpad[n, oh * SH:oh * SH + PH, ow * SW:ow * SW + PW, c].max()
    return y


def maxpool2d_backward(dout, x, pool_size=(2, 2), strides=(2, 2), padding="valid"):
    """Each window's gradient goes to the ONE input that won it; overlapping windows add up.

    Which one, when several inputs tie for the maximum, is a rule, and it is the fast layer's: the
    first column (from the left) whose maximum equals the window's maximum, then within that column
    the first row (from the top) holding it. (MaxPool2D finds the maximum column by column, so this is
    the input its backward retraces; note that it is not the first maximum in reading order.)

        dxpad[n, oh*SH + i*, ow*SW + j*, c] += dout[n, oh, ow, c]
        j* = min{j : max_i xpad[n, oh*SH + i, ow*SW + j, c] = y[n, oh, ow, c]}
        i* = min{i : xpad[n, oh*SH + i, ow*SW + j*, c] = y[n, oh, ow, c]}

    then dx is dxpad with the padding cropped off.

    Inputs:
    - dout: (N, OH, OW, C) gradient of the loss with respect to y
    - x, pool_size, strides, padding: as given to ``maxpool2d_forward``
    Returns:
    - dx: (N, H, W, C)
    """
    xp = backend.get_array_module(dout, x)
    PH, PW = pool_size
    SH, SW = strides
    N, H, W, C = x.shape
    xpad, (top, left) = pad_input(x, pool_size, strides, padding, fill=-xp.inf)
    OH, OW = dout.shape[1:3]
    dxpad = xp.zeros(xpad.shape, dtype=dout.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    window = xpad[n, oh * SH:oh * SH + PH, ow * SW:ow * SW + PW, c]    # (PH, PW)
                    i, j = _first_winner(window)
                    dxpad[n, oh * SH + i, ow * SW + j, c] += dout[n, oh, ow, c]
    return dxpad[:, top:top + H, left:left + W, :]


def _first_winner(window):
    """(i, j) of a (PH, PW) window's winner: the first column holding the maximum, its first row."""
    best = window.max()
    for j in range(window.shape[1]):
        if window[:, j].max() == best:
            for i in range(window.shape[0]):
                if window[i, j] == best:
                    return i, j
    raise ValueError("no entry of the window equals its maximum (is there a NaN?)")


# ---- LocalResponseNorm -------------------------------------------------------------------------

def lrn_forward(x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """TensorFlow's local_response_normalization by its definition, channel by channel:

        sqr_sum[n, h, w, d] = sum_{k = max(0, d - r)}^{min(C - 1, d + r)} x[n, h, w, k]^2
        y = x / (bias + alpha * sqr_sum) ** beta                      r = depth_radius

    (a window of 2r + 1 channels, clipped at the edges; alpha on the plain sum, as in the AlexNet paper).

    Inputs:
    - x: (N, H, W, C)
    - depth_radius, bias, alpha, beta: as LocalResponseNorm takes them
    Returns:
    - y: (N, H, W, C)
    """
    xp = backend.get_array_module(x)
    y = xp.zeros(x.shape, dtype=x.dtype)
    for d in range(x.shape[-1]):
        den = bias + alpha * _window_square_sum(x, d, depth_radius)
        y[..., d] = x[..., d] / den ** beta
    return y


def lrn_backward(dout, x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """LRN's backward, channel by channel. With den = bias + alpha * sqr_sum, output d depends on x_d
    directly and on every x_k in its window through den_d, so

        dx_k = dout_k / den_k^beta  -  2 * alpha * beta * x_k * sum_{d : |k - d| <= r} dout_d * y_d / den_d

    (the fast layer's dx = dout / den^beta - 2 * alpha * beta * x * ((dout * y / den) @ B), its band matrix
    B written out as the loop over d: every output d whose window holds channel k sends its share back).

    Inputs:
    - dout: (N, H, W, C) gradient of the loss with respect to y
    - x, depth_radius, bias, alpha, beta: as given to ``lrn_forward``
    Returns:
    - dx: (N, H, W, C)
    """
    xp = backend.get_array_module(dout, x)
    C = x.shape[-1]
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for d in range(C):
        den = bias + alpha * _window_square_sum(x, d, depth_radius)
        y = x[..., d] / den ** beta
        dx[..., d] += dout[..., d] / den ** beta                             # through x_d itself
        for k in range(max(0, d - depth_radius), min(C - 1, d + depth_radius) + 1):
            dx[..., k] -= 2.0 * alpha * beta * x[..., k] * dout[..., d] * y / den     # through den_d
    return dx


def _window_square_sum(x, d, depth_radius):
    """sqr_sum[..., d]: the sum of x[..., k]^2 over channel d's window, one channel k at a time."""
    total = 0.0
    for k in range(max(0, d - depth_radius), min(x.shape[-1] - 1, d + depth_radius) + 1):
        total = total + x[..., k] * x[..., k]
    return total


# ---- Dense -------------------------------------------------------------------------------------

def dense_forward(x, kernel, bias):
    """Dense's affine part, one output value at a time:

        z[n, o] = bias[o] + sum_i x[n, i] * kernel[i, o]          (the fast layer's x @ kernel + bias)

    Inputs:
    - x: (N, D_in);  kernel: (D_in, D_out);  bias: (D_out,), or None for use_bias=False
    Returns:
    - z: (N, D_out), before any activation
    """
    xp = backend.get_array_module(x, kernel)
    N, D_out = x.shape[0], kernel.shape[1]
    z = xp.zeros((N, D_out), dtype=x.dtype)
    for n in range(N):
        for o in range(D_out):
            z[n, o] = xp.sum(x[n, :] * kernel[:, o])
            if bias is not None:
                z[n, o] += bias[o]
    return z


def dense_backward(dz, x, kernel):
    """Dense's backward, one output value at a time: z[n, o] read x[n, :] through kernel[:, o], so

        dkernel[:, o] += x[n, :] * dz[n, o]      dbias[o] += dz[n, o]      dx[n, :] += kernel[:, o] * dz[n, o]

    summed over n and o (the fast layer's d kernel = x^T @ dz, d bias = sum_n dz, dx = dz @ kernel^T).

    Inputs:
    - dz: (N, D_out) gradient of the loss with respect to z (after the activation's backward)
    - x, kernel: as given to ``dense_forward``
    Returns (dx, dkernel, dbias):
    - dx: (N, D_in);  dkernel: (D_in, D_out);  dbias: (D_out,) (unused when the layer has no bias)
    """
    xp = backend.get_array_module(dz, x, kernel)
    N, D_out = x.shape[0], kernel.shape[1]
    dx = xp.zeros(x.shape, dtype=dz.dtype)
    dkernel = xp.zeros(kernel.shape, dtype=dz.dtype)
    dbias = xp.zeros(D_out, dtype=dz.dtype)
    for n in range(N):
        for o in range(D_out):
            dkernel[:, o] += x[n, :] * dz[n, o]
            dbias[o] += dz[n, o]
            dx[n, :] += kernel[:, o] * dz[n, o]
    return dx, dkernel, dbias


# ---- Dropout -----------------------------------------------------------------------------------

def dropout_forward(x, mask):
    """Inverted dropout in training, given its mask:

        mask = [u >= rate] / (1 - rate),  u ~ U[0, 1) per element;   y = x * mask

    Inputs:
    - x: any shape
    - mask: x's shape, already the scaled keep mask (0 where dropped, 1 / (1 - rate) where kept)
    Returns:
    - y: x's shape (at inference dropout is the identity: no twin needed)
    """
    return x * mask


def dropout_backward(dout, mask):
    """dx = dout * mask, the same mask as the forward. Inputs: dout, mask (x's shape). Returns dx (x's shape)."""
    return dout * mask


# ---- BatchNormalization ------------------------------------------------------------------------

def batchnorm_statistics(x):
    """The batch's mean and (biased) variance of each channel, one value at a time:

        mean[c] = (1/M) sum_m rows[m, c]          var[c] = (1/M) sum_m (rows[m, c] - mean[c])^2

    with rows the (M, C) view of x (M = N * H * W for images, N for a Dense layer's output).

    Inputs:
    - x: (N, ..., C)
    Returns (mean, var):
    - mean, var: (C,)
    """
    xp = backend.get_array_module(x)
    rows = x.reshape(-1, x.shape[-1])
    M, C = rows.shape
    mean, var = xp.zeros(C, dtype=x.dtype), xp.zeros(C, dtype=x.dtype)
    for c in range(C):
        for m in range(M):
            mean[c] += rows[m, c] / M
        for m in range(M):
            var[c] += (rows[m, c] - mean[c]) ** 2 / M
    return mean, var


def batchnorm_forward(x, gamma, beta, epsilon=1e-3):
    """BatchNormalization in training, one value at a time, with the batch's own statistics:

        xhat[m, c] = (rows[m, c] - mean[c]) / sqrt(var[c] + epsilon)       y[m, c] = gamma[c] * xhat[m, c] + beta[c]

    (at inference the layer uses its moving mean and variance in their place; the moving averages
    follow momentum * moving + (1 - momentum) * batch after each training forward).

    Inputs:
    - x: (N, ..., C)
    - gamma, beta: (C,) (a layer built with scale=False or center=False has ones or zeros there)
    - epsilon: added to the variance
    Returns:
    - y: x's shape
    """
    return batchnorm_normalize(x, *batchnorm_statistics(x), gamma, beta, epsilon)


def batchnorm_normalize(x, mean, var, gamma, beta, epsilon=1e-3):
    """Each channel normalised with the given statistics, one value at a time: the batch's own in
    training (``batchnorm_forward``), the moving mean and variance at inference.

        y[m, c] = gamma[c] * (rows[m, c] - mean[c]) / sqrt(var[c] + epsilon) + beta[c]

    Inputs:
    - x: (N, ..., C)
    - mean, var, gamma, beta: (C,)
    Returns:
    - y: x's shape
    """
    xp = backend.get_array_module(x)
    rows = x.reshape(-1, x.shape[-1])
    y = xp.zeros(rows.shape, dtype=x.dtype)
    for m in range(rows.shape[0]):
        for c in range(rows.shape[1]):
            y[m, c] = gamma[c] * (rows[m, c] - mean[c]) / (var[c] + epsilon) ** 0.5 + beta[c]
    return y.reshape(x.shape)


def batchnorm_backward(dout, x, gamma, epsilon=1e-3):
    """BatchNormalization's backward, step by step back through the forward's stages, channel by channel:

        dgamma = sum_m dout * xhat               dbeta = sum_m dout               dxhat = dout * gamma
        dvar   = sum_m dxhat * (x - mean) * (-1/2) (var + epsilon)^(-3/2)
        dmean  = sum_m -dxhat / sqrt(var + epsilon)  +  dvar * (1/M) sum_m -2 (x - mean)
        dx     = dxhat / sqrt(var + epsilon)  +  dvar * 2 (x - mean) / M  +  dmean / M

    (x reaches y directly, through var and through mean; the fast layer's
    dx = gamma / sqrt(var + epsilon) * (dout - (dbeta + xhat * dgamma) / M) is these three terms
    collected. The sum in dmean's second term is zero, and stays here as the chain rule writes it.)

    Inputs:
    - dout: x's shape, gradient of the loss with respect to y
    - x, gamma, epsilon: as given to ``batchnorm_forward``
    Returns (dx, dgamma, dbeta):
    - dx: x's shape;  dgamma, dbeta: (C,)
    """
    xp = backend.get_array_module(dout, x)
    mean, var = batchnorm_statistics(x)
    rows, drows = x.reshape(-1, x.shape[-1]), dout.reshape(-1, x.shape[-1])
    M, C = rows.shape
    dx = xp.zeros(rows.shape, dtype=dout.dtype)
    dgamma, dbeta = xp.zeros(C, dtype=dout.dtype), xp.zeros(C, dtype=dout.dtype)
    for c in range(C):
        std = (var[c] + epsilon) ** 0.5
        dvar, dmean = 0.0, 0.0
        for m in range(M):
            dgamma[c] += drows[m, c] * (rows[m, c] - mean[c]) / std
            dbeta[c] += drows[m, c]
            dvar += drows[m, c] * gamma[c] * (rows[m, c] - mean[c]) * -0.5 * std ** -3
        for m in range(M):
            dmean += -drows[m, c] * gamma[c] / std + dvar * -2.0 * (rows[m, c] - mean[c]) / M
        for m in range(M):
            dx[m, c] = drows[m, c] * gamma[c] / std + dvar * 2.0 * (rows[m, c] - mean[c]) / M + dmean / M
    return dx.reshape(x.shape), dgamma, dbeta


# ---- Flatten -----------------------------------------------------------------------------------

def flatten_forward(x):
    """Each sample's values in one row, channels fastest (Keras's order for NHWC), one value at a time:

        y[n, (h * W + w) * C + c] = x[n, h, w, c]           (any number of axes: C order)

    Inputs:
    - x: (N, d1, d2, ...)
    Returns:
    - y: (N, d1 * d2 * ...)
    """
    xp = backend.get_array_module(x)
    N = x.shape[0]
    y = xp.zeros((N, x[0].size), dtype=x.dtype)
    for n in range(N):
        for k, index in enumerate(_c_order(x.shape[1:])):
            y[n, k] = x[(n,) + index]
    return y


def flatten_backward(dout, x):
    """Each gradient back to the value it came from: dx[n, h, w, c] = dout[n, (h * W + w) * C + c].
    Inputs: dout (N, d1 * d2 * ...), x (N, d1, d2, ...). Returns dx, x's shape."""
    xp = backend.get_array_module(dout, x)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for n in range(x.shape[0]):
        for k, index in enumerate(_c_order(x.shape[1:])):
            dx[(n,) + index] = dout[n, k]
    return dx


def _c_order(shape):
    """Every index of an array of ``shape``, the last axis fastest: (0, 0, 0), (0, 0, 1), ..."""
    indices = [()]
    for length in shape:
        indices = [index + (i,) for index in indices for i in range(length)]
    return indices


# ---- ReLU and Softmax --------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0), element by element. Inputs: x, any shape. Returns y, x's shape."""
    xp = backend.get_array_module(x)
    return xp.where(x > 0, x, xp.zeros_like(x))


def relu_backward(dout, x):
    """dx = dout * [x > 0] (the fast layer's [y > 0]: the same set). Inputs: dout, x (same shape). Returns dx."""
    return dout * (x > 0)


def softmax_forward(x):
    """Softmax of each row, one row at a time:

        y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j

    (shifting by m changes nothing but keeps exp from overflowing).

    Inputs:
    - x: (N, K)
    Returns:
    - y: (N, K), each row positive and summing to 1
    """
    xp = backend.get_array_module(x)
    y = xp.zeros(x.shape, dtype=x.dtype)
    for n in range(x.shape[0]):
        e = xp.exp(x[n] - x[n].max())
        y[n] = e / e.sum()
    return y


def softmax_backward(dout, x):
    """Softmax's backward with its Jacobian built outright, one row at a time:

        dy_i / dx_j = y_i * ([i = j] - y_j),   J = diag(y) - y y^T   (symmetric),   dx = J @ dout

    which is the fast layer's dx_i = y_i * (dout_i - sum_j dout_j y_j).

    Inputs:
    - dout: (N, K) gradient of the loss with respect to y
    - x: (N, K), as given to ``softmax_forward``
    Returns:
    - dx: (N, K)
    """
    xp = backend.get_array_module(dout, x)
    y = softmax_forward(x)
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for n in range(x.shape[0]):
        jacobian = xp.diag(y[n]) - xp.outer(y[n], y[n])                       # (K, K)
        dx[n] = jacobian @ dout[n]
    return dx


# ---- Softmax cross-entropy (the fused loss) ----------------------------------------------------

def softmax_cross_entropy_forward(logits, y_onehot):
    """The mean cross-entropy of softmax(logits) against one-hot targets, one example at a time:

        log p = z - logsumexp(z),   logsumexp(z) = m + log sum_k exp(z_k - m),  m = max_k z_k
        loss  = -(1/N) sum_n sum_k y_nk log p_nk

    Inputs:
    - logits: (N, K);  y_onehot: (N, K)
    Returns:
    - loss: a scalar (0-d) on the logits' device
    """
    xp = backend.get_array_module(logits, y_onehot)
    N = logits.shape[0]
    loss = 0.0
    for n in range(N):
        shifted = logits[n] - logits[n].max()                          # z - m
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted)))
        loss = loss - xp.sum(y_onehot[n] * log_p) / N
    return loss


def softmax_cross_entropy_backward(logits, y_onehot):
    """d loss / d logits = (p - y) / N, p = softmax(logits), one example at a time (the softmax's
    Jacobian and the log's derivative cancel to this).

    Inputs:
    - logits: (N, K);  y_onehot: (N, K)
    Returns:
    - dlogits: (N, K)
    """
    xp = backend.get_array_module(logits, y_onehot)
    N = logits.shape[0]
    dlogits = xp.zeros(logits.shape, dtype=logits.dtype)
    for n in range(N):
        e = xp.exp(logits[n] - logits[n].max())
        dlogits[n] = (e / e.sum() - y_onehot[n]) / N
    return dlogits


#: each layer of ``minialex.layers`` (by class name) -> its twin here: NAME_forward and NAME_backward
TWINS = {"Conv2D": "conv2d", "MaxPool2D": "maxpool2d", "LocalResponseNorm": "lrn", "BatchNormalization": "batchnorm",
         "Dense": "dense", "Dropout": "dropout", "ReLU": "relu", "Softmax": "softmax", "Flatten": "flatten"}
