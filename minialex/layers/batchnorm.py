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

The layer mixes the samples of its batch (``mixes_samples``): a model holding one trains each batch
whole, unsharded (``Sequential.train_step``). On the CPU the sums over the rows add up in float64
(57,600 float32 values summed in float32 lose four digits, and BLAS's matrix-vector product would
change its sums with the thread count). On a GPU: two reductions and a fused kernel for the training
forward, plus one that moves the statistics (4 launches); two reductions and a kernel backward (3);
one kernel at inference (``minialex.kernels``).
"""
from __future__ import annotations

from .. import backend, kernels
from .base import Layer


def channel_sums(values, weights=None):
    """sum over the rows of values (times weights), per channel: (M, C) -> (C,), added up in float64
    and returned in the values' dtype."""
    xp = backend.get_array_module(values)
    if weights is None:
        return xp.einsum("mc->c", values, dtype=xp.float64).astype(values.dtype)
    return xp.einsum("mc,mc->c", values, weights, dtype=xp.float64).astype(values.dtype)


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
        xp, channels = backend.xp(), input_shape[-1]
        if self.scale:
            self.add_param("gamma", xp.ones(channels, dtype=self.dtype))
        if self.center:
            self.add_param("beta", xp.zeros(channels, dtype=self.dtype))
        self.add_state("moving_mean", xp.zeros(channels, dtype=self.dtype))
        self.add_state("moving_variance", xp.ones(channels, dtype=self.dtype))

    def forward(self, x, training=False):
        x = self._prepare(x)
        rows = x.reshape(-1, x.shape[-1])
        gamma, beta = self.params.get("gamma", 1.0), self.params.get("beta", 0.0)
        moving_mean, moving_variance = self.state["moving_mean"], self.state["moving_variance"]
        xp = backend.get_array_module(x)
        if not training:
            if backend.on_cpu(x):
                y = rows - moving_mean
                y *= gamma / xp.sqrt(moving_variance + self.epsilon)
                y += beta
            else:   # a GPU: one kernel
                y, _ = kernels.batchnorm_normalize(rows, moving_mean, moving_variance, gamma, beta, self.epsilon)
            return y.reshape(x.shape)
        if backend.on_cpu(x):
            count = rows.shape[0]
            mean = channel_sums(rows) / count
            xhat = rows - mean
            variance = channel_sums(xhat, xhat) / count
            xhat *= 1.0 / xp.sqrt(variance + self.epsilon)
            y = xhat * gamma
            y += beta
            for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
                moving *= self.momentum
                moving += (1.0 - self.momentum) * batch
        else:   # a GPU: two reductions, one kernel for y, one for the moving statistics
            mean = xp.mean(rows, axis=0)
            variance = kernels.batchnorm_variance(rows, mean)
            y, xhat = kernels.batchnorm_normalize(rows, mean, variance, gamma, beta, self.epsilon)
            kernels.batchnorm_moving_average(mean, variance, self.momentum, moving_mean, moving_variance)
        self._xhat, self._variance = xhat, variance
        return y.reshape(x.shape)

    def backward(self, dout, input_grad=True):
        xhat, variance = self._xhat, self._variance
        rows = dout.reshape(xhat.shape)
        gamma = self.params.get("gamma", 1.0)
        if backend.on_cpu(dout):
            xp = backend.get_array_module(dout)
            dbeta, dgamma = channel_sums(rows), channel_sums(rows, xhat)
            for name, grad in (("beta", dbeta), ("gamma", dgamma)):
                if name in self.grads:
                    self.grads[name][...] = grad
            dx = xhat * dgamma
            dx += dbeta
            dx *= -1.0 / rows.shape[0]
            dx += rows
            dx *= gamma / xp.sqrt(variance + self.epsilon)
        else:   # a GPU: two reductions (into the gradients' places), one kernel for dx
            dbeta = rows.sum(axis=0, out=self.grads.get("beta"))
            dgamma = kernels.batchnorm_dgamma(rows, xhat, self.grads.get("gamma"))
            dx = kernels.batchnorm_backward(rows, xhat, dbeta, dgamma, gamma, variance, self.epsilon)
        return dx.reshape(dout.shape)
