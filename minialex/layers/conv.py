"""Conv2D: 2-D convolution of channels-last images by im2col and one matrix product.

Notation: N batch, H W input height and width, C input channels, F filters, KH KW kernel size,
SH SW strides, OH OW output size; ``xpad`` is the input with its 'same' zeros added.

Keras's (and TensorFlow's) convolution is a cross-correlation:
    z[n, oh, ow, f] = bias[f] + sum_{i, j, c} xpad[n, oh*SH + i, ow*SW + j, c] * kernel[i, j, c, f]
im2col lays each output pixel's receptive field out as one row, in (i, j, c) order:
    cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*SH + i, ow*SW + j, c]        (N*OH*OW, KH*KW*C)
so the whole layer is one matrix product with the kernel seen as a (KH*KW*C, F) matrix K:
    z = cols @ K + bias                                                      (N*OH*OW, F) = (N, OH, OW, F)
Backward, with dz the gradient after the activation:
    d kernel = cols^T @ dz,    d bias = sum over (n, oh, ow) of dz
    dcols = dz @ K^T,    dx = col2im(dcols), then the padding cropped off.
col2im is the adjoint of im2col, not its inverse: every input pixel that im2col copied into several
rows gets the *sum* of those rows' gradients. It is done tap by tap: for each of the KH*KW kernel
positions (i, j), one strided slice-add. ``backward`` computes the same sum without building dcols:
tap (i, j)'s columns of dcols are dz @ kernel[i, j]^T, a contiguous (N, OH, OW, C) block, so it takes
KH*KW small products and KH*KW slice-adds straight into dx, each skipping what its tap read from the
padding (``col2im`` stays as the reference it is tested against).
The first layer of a model needs no dx at all (``backward(dout, input_grad=False)``).
On a GPU, where each launch costs more than these small products, the padding and im2col are one
kernel, and dx is one product dcols = dz @ K^T and one col2im kernel (``kernels.gpu`` marks each
function's CUDA half in ``minialex.kernels``).

Output sizes are Keras's: 'valid' floor((H - KH) / SH) + 1, 'same' ceil(H / SH), with the 'same'
zeros split as TensorFlow does (the odd one at the bottom/right).
"""
from __future__ import annotations

from .. import backend, kernels
from .activations import WithActivation
from .base import check_padding, glorot_uniform, matmul, normalize_pair, same_padding, window_output_size


@kernels.gpu(kernels.im2col_cuda)
def im2col(x, pads, kernel_size, strides, out_size):
    """x (N, H, W, C), padded with ``pads`` = ((top, bottom), (left, right)) zeros -> cols (N*OH*OW, KH*KW*C).

    Each window is a strided view of xpad; one copy lays them out as rows. With a single input
    channel a row would be KH*KW scattered scalars, so cols^T is filled instead, one tap (a whole
    shifted image) at a time, and returned transposed: the same matrix, copied in long runs.
    """
    xp = backend.get_array_module(x)
    xpad = xp.pad(x, ((0, 0), *pads, (0, 0))) if any(map(any, pads)) else x
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    N, _, _, C = xpad.shape
    if C == 1:
        cols_t = xp.empty((KH * KW, N, OH, OW), dtype=xpad.dtype)
        for i in range(KH):
            for j in range(KW):
                cols_t[i * KW + j] = xpad[:, i:i + SH * OH:SH, j:j + SW * OW:SW, 0]
        return cols_t.reshape(KH * KW, N * OH * OW).T
    s_n, s_h, s_w, s_c = xpad.strides
    windows = backend.as_strided(xpad, (N, OH, OW, KH, KW, C), (s_n, s_h * SH, s_w * SW, s_h, s_w, s_c))
    cols = xp.empty((N * OH * OW, KH * KW * C), dtype=xpad.dtype)
    cols.reshape(N, OH, OW, KH, KW, C)[...] = windows   # a view: the copy lands in cols
    return cols


def col2im(dcols, padded_shape, kernel_size, strides, out_size):
    """The adjoint of im2col: (N*OH*OW, KH*KW*C) -> (N, Hp, Wp, C), summing overlapping windows."""
    xp = backend.get_array_module(dcols)
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    N, _, _, C = padded_shape
    dcols = dcols.reshape(N, OH, OW, KH, KW, C)
    dxpad = xp.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(KH):
        for j in range(KW):
            dxpad[:, i:i + SH * OH:SH, j:j + SW * OW:SW, :] += dcols[:, :, :, i, j, :]
    return dxpad


@kernels.gpu(kernels.col2im_by_taps_cuda, launches=2)
def col2im_by_taps(dz, kernel, input_shape, pads, strides, out_size):
    """dx = col2im(dz @ K^T) with the padding cropped off, computed tap by tap: each (i, j) adds
    dz @ kernel[i, j]^T to the input pixels it read. What a tap read from the padding is skipped, so
    dx comes out at the input's own shape, contiguous, and the border taps add a little less.
    With stride 1 and the output as large as the input ('same'), tap (top, left) read every input
    pixel once: its product starts dx, instead of zeros and one more slice-add."""
    xp = backend.get_array_module(dz)
    KH, KW, C, _ = kernel.shape
    N, H, W, _ = input_shape
    (top, _), (left, _) = pads
    (SH, SW), (OH, OW) = strides, out_size
    if (SH, SW, OH, OW) == (1, 1, H, W) and top < KH and left < KW:
        first = (top, left)
        dx = (dz @ kernel[first].T).reshape(input_shape)
    else:
        first, dx = None, xp.zeros(input_shape, dtype=dz.dtype)
    for i in range(KH):
        to_h, from_h = _tap_slices(i - top, SH, OH, H)
        for j in range(KW):
            to_w, from_w = _tap_slices(j - left, SW, OW, W)
            if (i, j) != first and to_h is not None and to_w is not None:
                dx[:, to_h, to_w, :] += (dz @ kernel[i, j].T).reshape(N, OH, OW, C)[:, from_h, from_w, :]
    return dx


def _tap_slices(offset, stride, out_size, in_size):
    """Along one axis, output o reads input o*stride + offset. Returns (the input slice, the output
    slice) of the outputs that read a real input, not padding; (None, None) if none does."""
    first = max(0, -(offset // stride))                       # ceil(-offset / stride), at least 0
    last = min(out_size - 1, (in_size - 1 - offset) // stride)
    if last < first:
        return None, None
    return slice(first * stride + offset, last * stride + offset + 1, stride), slice(first, last + 1)


class Conv2D(WithActivation):
    input_ndim = 4

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 input_shape=None, dtype="float32", name=None):
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = normalize_pair(kernel_size, "kernel_size")
        self.strides = normalize_pair(strides, "strides")
        self.padding = check_padding(padding)
        self.use_bias = use_bias
        super().__init__(activation=activation, input_shape=input_shape, dtype=dtype, name=name)

    def compute_output_shape(self, input_shape):
        out = window_output_size(self.name, input_shape[:2], self.kernel_size, self.strides, self.padding, "kernel")
        return out + (self.filters,)

    def create_params(self, input_shape):
        KH, KW = self.kernel_size
        C = input_shape[-1]
        self.add_param("kernel", glorot_uniform((KH, KW, C, self.filters), KH * KW * C, KH * KW * self.filters,
                                                self.dtype))
        if self.use_bias:
            self.add_param("bias", backend.xp().zeros(self.filters, dtype=self.dtype))

    def _pads(self):
        if self.padding == "valid":
            return (0, 0), (0, 0)
        H, W, _ = self.input_shape
        return (same_padding(H, self.kernel_size[0], self.strides[0]),
                same_padding(W, self.kernel_size[1], self.strides[1]))

    def forward(self, x, training=False, logits=False):
        x = self._prepare(x)
        N = x.shape[0]
        OH, OW, F = self.output_shape
        cols = im2col(x, self._pads(), self.kernel_size, self.strides, (OH, OW))
        product = matmul(cols, self.params["kernel"].reshape(-1, F))   # z = cols @ K + bias, then the activation
        if training:
            self._cols, self._x_shape = cols, x.shape
        return self._activate(product.reshape(N, OH, OW, F), training, logits)

    def backward(self, dout, input_grad=True):
        OH, OW, F = self.output_shape
        dz = self._activation_backward(dout).reshape(-1, F)
        matmul(self._cols.T, dz, out=self.grads["kernel"].reshape(-1, F))     # d kernel = cols^T @ dz, in place
        if self.use_bias:
            dz.sum(axis=0, out=self.grads["bias"])
        if not input_grad:
            return None
        return col2im_by_taps(dz, self.params["kernel"], self._x_shape, self._pads(), self.strides, (OH, OW))
