"""BatchNormalization: Keras's ``keras.layers.BatchNormalization`` (Ioffe and Szegedy, 2015), channels last.

Each channel is normalised over every other axis of the batch: for images (N, H, W, C) over the
M = N * H * W values of that channel, for a Dense layer's (N, C) output over the N samples. With
``rows`` the (M, C) view of x and every sum over the M rows:

    training:   mean = (1/M) sum x            var = (1/M) sum (x - mean)^2     (biased, as Keras)
                xhat = (x - mean) / sqrt(var + epsilon)            y = gamma * xhat + beta
                moving_mean     = momentum * moving_mean     + (1 - momentum) * mean
                moving_variance = momentum * moving_variance + (1 - momentum) * var
    inference:  y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta

gamma and beta are trained (``params``; ``scale=False`` drops gamma and ``center=False`` beta, which
then count as 1 and 0). The moving statistics are weights that are not trained (``state``): saved,
loaded and checkpointed with the others, never seen by the optimiser. Keras's defaults: momentum
0.99, epsilon 1e-3, gamma 1, beta 0, moving mean 0, moving variance 1.

Backward. Every output of a channel depends on every input of that channel through its mean and
variance, so dx is more than dout * gamma / sqrt(var + epsilon):

    dbeta = sum dout          dgamma = sum dout * xhat
    dx = gamma / sqrt(var + epsilon) * (dout - (dbeta + xhat * dgamma) / M)

(the subtracted terms are what the mean and the variance send back: dx has no component along the
two directions that normalising removes, a constant shift and a rescaling of the channel).
``minialex.naive.batchnorm_backward`` reaches the same numbers step by step, through var and mean.

The layer mixes the samples of its batch (``mixes_samples``), and a CPU training step runs the batch
in shards side by side (``minialex.data_parallel``): the shards meet wherever the layer needs a sum
over the whole batch, twice forward (the mean, then the variance) and once backward (d beta and
d gamma). Each shard gives its rows' sums, added up in float64 (57,600 float32 values summed in
float32 lose four digits, and BLAS's matrix-vector product would change its sums with the thread
count); the parts are added in shard order (``parallel.run_meeting``), so every shard normalises by
the same statistics of the whole batch, whatever the thread count: SyncBatchNorm, across threads.
``statistics_meeting`` and ``parameter_gradient_meeting`` are those shard programs; a batch in one
piece runs them ``alone``. The moving statistics move and d gamma, d beta are written once a batch,
by the model's own layer (shard 0's); its replicas leave them. On a GPU the batch runs whole: two
reductions and a fused kernel for the training forward, plus one that moves the statistics (4
launches); two reductions and a kernel backward (3); one kernel at inference (each function's CUDA
half in ``minialex.kernels``).
"""
from __future__ import annotations

from .. import backend, kernels
from .base import Layer, alone


def channel_sums(values, weights=None):
    """sum over the rows of values (times weights), per channel: (M, C) -> (C,), added up and returned
    in float64."""
    xp = backend.get_array_module(values)
    if weights is None:
        return xp.einsum("mc->c", values, dtype=xp.float64)
    return xp.einsum("mc,mc->c", values, weights, dtype=xp.float64)


def statistics_meeting(rows):
    """(mean, variance, M) of each column of the whole batch's rows, as one shard's program (see
    ``Layer.mixes_samples``): it yields this shard's sums and row count, then goes on with the totals."""
    total, M = yield channel_sums(rows), rows.shape[0]
    mean = (total / M).astype(rows.dtype)
    centred = rows - mean
    variance = ((yield channel_sums(centred, centred)) / M).astype(rows.dtype)
    return mean, variance, M


@kernels.gpu(kernels.batchnorm_statistics_cuda, launches=2)
def batch_statistics(rows):
    """(mean, variance) of each column of rows (M, C), the variance biased as Keras's."""
    mean, variance, _ = alone(statistics_meeting(rows))
    return mean, variance


@kernels.gpu(kernels.batchnorm_normalize_cuda)
def normalize(rows, mean, variance, gamma, beta, epsilon):
    """(y, xhat): xhat = (rows - mean) / sqrt(variance + epsilon), y = gamma * xhat + beta, per column
    (gamma and beta may be the numbers 1 and 0)."""
    xp = backend.get_array_module(rows)
    xhat = rows - mean
    xhat *= 1.0 / xp.sqrt(variance + epsilon)
    y = xhat * gamma
    y += beta
    return y, xhat


@kernels.gpu(kernels.batchnorm_inference_cuda)
def normalize_for_inference(rows, moving_mean, moving_variance, gamma, beta, epsilon):
    """y = (rows - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta, per column."""
    xp = backend.get_array_module(rows)
    y = rows - moving_mean
    y *= gamma / xp.sqrt(moving_variance + epsilon)
    y += beta
    return y


@kernels.gpu(kernels.batchnorm_moving_average_cuda)
def update_moving_statistics(mean, variance, momentum, moving_mean, moving_variance):
    """In place: moving = momentum * moving + (1 - momentum) * the batch's, for the mean and the variance."""
    for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
        moving *= momentum
        moving += (1.0 - momentum) * batch


def parameter_gradient_meeting(dout, xhat, dbeta, dgamma):
    """(d beta, d gamma) of the whole batch, the sums over its rows of dout and of dout * xhat, as one
    shard's program: it yields this shard's sums and goes on with the totals, which it writes into
    ``dbeta`` and ``dgamma`` where they are arrays (None: a replica's, or a layer without beta or gamma)."""
    totals = yield channel_sums(dout), channel_sums(dout, xhat)
    sums = tuple(total.astype(dout.dtype) for total in totals)
    for out, value in zip((dbeta, dgamma), sums):
        if out is not None:
            out[...] = value
    return sums


@kernels.gpu(kernels.batchnorm_parameter_gradients_cuda, launches=2)
def parameter_gradients(dout, xhat, dbeta, dgamma):
    """(d beta, d gamma) = the sums over the rows of dout and of dout * xhat, written into ``dbeta`` and
    ``dgamma`` where they are arrays (the layer's grads; None where the layer has no beta or gamma)."""
    return alone(parameter_gradient_meeting(dout, xhat, dbeta, dgamma))


@kernels.gpu(kernels.batchnorm_backward_cuda)
def batchnorm_backward(dout, xhat, dbeta, dgamma, gamma, variance, epsilon, M):
    """dx = gamma / sqrt(variance + epsilon) * (dout - (dbeta + xhat * dgamma) / M), M the whole batch's
    number of rows (these rows may be one shard's)."""
    xp = backend.get_array_module(dout)
    dx = xhat * dgamma
    dx += dbeta
    dx *= -1.0 / M
    dx += dout
    dx *= gamma / xp.sqrt(variance + epsilon)
    return dx


class BatchNormalization(Layer):
    mixes_samples = True

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True, input_shape=None, dtype="float32",
                 name=None):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if not 0.0 < epsilon < float("inf"):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        self.momentum, self.epsilon, self.center, self.scale = float(momentum), float(epsilon), center, scale
        super().__init__(input_shape=input_shape, dtype=dtype, name=name)

    def create_params(self, input_shape):
        if not input_shape:
            raise ValueError(f"{self.name}: expects inputs with a channels axis after the batch axis")
        xp, C = backend.xp(), input_shape[-1]
        if self.scale:
            self.add_param("gamma", xp.ones(C, dtype=self.dtype))
        if self.center:
            self.add_param("beta", xp.zeros(C, dtype=self.dtype))
        self.add_state("moving_mean", xp.zeros(C, dtype=self.dtype))
        self.add_state("moving_variance", xp.ones(C, dtype=self.dtype))

    def forward(self, x, training=False):
        x = self._prepare(x)
        rows = x.reshape(-1, x.shape[-1])
        if not training:
            y = normalize_for_inference(rows, self.state["moving_mean"], self.state["moving_variance"],
                                        self.params.get("gamma", 1.0), self.params.get("beta", 0.0), self.epsilon)
            return y.reshape(x.shape)
        mean, variance = batch_statistics(rows)
        return self._normalize(x, rows, mean, variance, rows.shape[0])

    def forward_meeting(self, x):
        """The training forward over one shard of the batch, normalised by the whole batch's statistics
        (a program: see ``Layer.mixes_samples``)."""
        x = self._prepare(x)
        rows = x.reshape(-1, x.shape[-1])
        mean, variance, M = yield from statistics_meeting(rows)
        return self._normalize(x, rows, mean, variance, M)

    def _normalize(self, x, rows, mean, variance, M):
        """y from the statistics of the batch's M rows; the model's own layer also moves the moving ones."""
        y, self._xhat = normalize(rows, mean, variance, self.params.get("gamma", 1.0), self.params.get("beta", 0.0),
                                  self.epsilon)
        if not self.is_replica:
            update_moving_statistics(mean, variance, self.momentum, self.state["moving_mean"],
                                     self.state["moving_variance"])
        self._variance, self._M = variance, M
        return y.reshape(x.shape)

    def backward(self, dout, input_grad=True):
        rows = dout.reshape(self._xhat.shape)
        dbeta, dgamma = parameter_gradients(rows, self._xhat, self.grads.get("beta"), self.grads.get("gamma"))
        return self._input_gradient(dout, rows, dbeta, dgamma)

    def backward_meeting(self, dout, input_grad=True):
        """backward over one shard of the batch (a program): d gamma and d beta are the whole batch's,
        written by the model's own layer alone (the step adds every replica's gradients to the model's)."""
        rows = dout.reshape(self._xhat.shape)
        into = (None, None) if self.is_replica else (self.grads.get("beta"), self.grads.get("gamma"))
        dbeta, dgamma = yield from parameter_gradient_meeting(rows, self._xhat, *into)
        return self._input_gradient(dout, rows, dbeta, dgamma)

    def _input_gradient(self, dout, rows, dbeta, dgamma):
        dx = batchnorm_backward(rows, self._xhat, dbeta, dgamma, self.params.get("gamma", 1.0), self._variance,
                                self.epsilon, self._M)
        return dx.reshape(dout.shape)
