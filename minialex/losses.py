"""Softmax cross-entropy, fused and computed from logits.

For logits z (N, K) and one-hot targets y (N, K):
    log p = z - logsumexp(z),   logsumexp(z) = m + log sum_k exp(z_k - m),  m = max_k z_k
    loss  = -(1/N) sum_n sum_k y_nk log p_nk
    dloss/dz = (p - y) / N
Taking log p straight from the logits never computes log(softmax(z)), which underflows to log(0)
when a probability rounds to zero; and the gradient (p - y) / N skips the softmax's Jacobian.
This is what Keras computes for a model ending in Dense(..., activation='softmax') compiled with
loss='categorical_crossentropy'.
"""
from __future__ import annotations

from . import backend


class SoftmaxCrossEntropy:
    def forward(self, logits, y_onehot):
        """Mean loss over the batch, as a 0-d array on the logits' device."""
        if logits.shape != y_onehot.shape or logits.ndim != 2:
            raise ValueError(f"logits {tuple(logits.shape)} and one-hot targets {tuple(y_onehot.shape)} "
                             "must both be (batch, classes)")
        xp = backend.get_array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self._probs, self._y = xp.exp(log_probs), y_onehot
        return -(y_onehot * log_probs).sum() / logits.shape[0]

    def backward(self, batch_size=None):
        """d loss / d logits = (p - y) / N, N being ``batch_size`` (default: this batch's size).

        A shard of a larger batch passes the whole batch's size: the shards' gradients then add up
        to the gradient of the whole batch's mean loss.
        """
        return (self._probs - self._y) / (batch_size or self._probs.shape[0])
