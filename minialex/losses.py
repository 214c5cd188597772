"""Softmax cross-entropy, fused and computed from logits.

For logits z (N, K) and one-hot targets y (N, K):
    log p = z - logsumexp(z),   logsumexp(z) = m + log sum_k exp(z_k - m),  m = max_k z_k
    loss  = -(1/N) sum_n sum_k y_nk log p_nk
    dloss/dz = (p - y) / N
Taking log p straight from the logits never computes log(softmax(z)), which underflows to log(0)
when a probability rounds to zero; and the gradient (p - y) / N skips the softmax's Jacobian.
This is what Keras computes for a model ending in Dense(..., activation='softmax') compiled with
loss='categorical_crossentropy'.
On a GPU one kernel computes each row's loss and probabilities, and one sum adds the rows'
losses (``kernels.softmax_cross_entropy_cuda``).
"""
from __future__ import annotations

from . import backend, kernels


@kernels.gpu(kernels.softmax_cross_entropy_cuda, launches=2)
def softmax_cross_entropy(logits, y_onehot):
    """(mean loss, probabilities p) from the logits, through log p = z - logsumexp(z)."""
    xp = backend.get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    return -(y_onehot * log_probs).sum() / logits.shape[0], xp.exp(log_probs)


class SoftmaxCrossEntropy:
    def forward(self, logits, y_onehot):
        """Mean loss over the batch, as a 0-d array on the logits' device."""
        if logits.shape != y_onehot.shape or logits.ndim != 2:
            raise ValueError(f"logits {tuple(logits.shape)} and one-hot targets {tuple(y_onehot.shape)} "
                             "must both be (batch, classes)")
        self._y = y_onehot
        loss, self._probs = softmax_cross_entropy(logits, y_onehot)
        return loss

    def backward(self, batch_size=None):
        """d loss / d logits = (p - y) / N, N being ``batch_size`` (default: this batch's size).

        A shard of a larger batch passes the whole batch's size: the shards' gradients then add up
        to the gradient of the whole batch's mean loss.
        """
        return gradient(self._probs, self._y, batch_size or self._probs.shape[0])


@backend.fuse
def gradient(probs, y_onehot, n):
    """(p - y) / N: one kernel on a GPU (``backend.fuse``)."""
    return (probs - y_onehot) / n
