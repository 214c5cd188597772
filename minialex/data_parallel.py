"""The training step on the CPU: one batch cut into shards that run side by side, each through a
replica of the model.

``Sequential.train_step`` hands its batch here. ``parallel.shard_plan`` cuts it by its size alone;
shard k runs through replica k of the model (shard 0 through the model itself; ``Sequential.replicas``
makes them), on the threads of ``parallel.run_meeting``. Each shard divides its loss gradient by the
whole batch's size and draws exactly the dropout masks that the whole batch gives its rows
(``Generator.split_rows``); at each layer that mixes samples (BatchNormalization) the shards meet: a
shard's forward and backward are one program (``shard_program``) that yields its rows' sums there and
goes on with the whole batch's (``Layer.mixes_samples``). The replicas' gradients are then summed into
the model's, in shard order. So the result is the unsharded step's up to summation order.

Every shard, a batch's only one included, runs with a one-thread BLAS: a BLAS on several threads
splits its sums by its thread count, so the same shards give the same bits on 1, 2 or 4 threads only
so. On a GPU the batch runs whole, on the calling thread: one device queue does the work.
"""
from __future__ import annotations

from . import backend, parallel, random


def train_step(model, x, y):
    """Forward and backward of ``model`` over the batch (x, y): fills the model's gradients; returns
    (mean loss, correct count), both still on the device."""
    shards = parallel.shard_plan(x.shape[0])
    if len(shards) == 1:
        return whole_batch_step(model, x, y)
    n = x.shape[0]
    networks = [model] + model.replicas(len(shards) - 1)
    with random.get_rng().split_rows(shards, n) as generators:    # the whole batch's dropout masks
        results = parallel.run_meeting(
            lambda k: shard_program(networks[k], x[shards[k]], y[shards[k]], generators[k], n), len(shards))
    for replica in networks[1:]:
        model.flat_gradients += replica.flat_gradients
    return sum(loss for loss, _ in results) / n, sum(correct for _, correct in results)


def shard_program(network, x, y, generator, batch_size):
    """One shard's forward (its dropout masks drawn by ``generator``) and backward, its gradient the
    shard's part of the ``batch_size``-row batch's mean, as a program that meets the other shards at
    each layer that mixes samples (a generator for ``parallel.run_meeting``); it returns (summed loss,
    correct count)."""
    loss, correct = yield from drawing_with(generator, network.forward_loss_meeting(x, y))
    yield from network.backward_meeting(batch_size=batch_size)
    return loss * x.shape[0], correct


def drawing_with(generator, program):
    """``program``, its draws made by ``generator`` (``random.using_rng``) each time it resumes: after
    a meeting a shard's program may go on in another thread than the one it started in."""
    total = None
    while True:
        with random.using_rng(generator):
            try:
                part = program.send(total)
            except StopIteration as finished:
                return finished.value
        total = yield part


def whole_batch_step(model, x, y):
    """The batch as one shard: on this thread, with a one-thread BLAS on the CPU."""
    if not backend.on_cpu(x):
        return _forward_backward(model, x, y)
    with parallel.single_threaded_blas():
        return _forward_backward(model, x, y)


def _forward_backward(model, x, y):
    loss, correct = model.forward_loss(x, y)
    model.backward()
    return loss, correct
