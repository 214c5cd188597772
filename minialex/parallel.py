"""CPU threads: the data-parallel training step and threaded inference.

NumPy runs a matrix product on every core (through BLAS) but everything else (ReLU, LRN, pooling,
im2col) on one. So on the CPU a training step cuts its batch into shards that run side by side, each
on its own thread with a one-thread BLAS, each through its own *replica* of the model: a copy that
shares the weights but keeps its own per-call caches and gradients. The replicas' gradients are then
summed into the model's, and the optimiser runs once. Inference spreads whole batches over the same
threads. On a GPU none of this runs: one device queue does the work.

The shard plan depends on the batch size only, never on the thread count: with 1, 2 or 4 threads
the same shards run, each with a one-thread BLAS, and their gradients are summed in the same order,
so a seeded run gives the same weights, bit for bit, whatever ``OMP_NUM_THREADS`` says (threads
only decide which shards run side by side). Each shard divides its loss gradient by the whole
batch's size and draws exactly the dropout masks that the whole batch gives its rows
(``RowSlicedGenerator``), so the result is the unsharded step's up to summation order.

Nothing above this module knows about threads: ``Sequential`` asks ``shard_plan`` how to cut a batch
and hands it to ``sharded_step``, and evaluates through ``map_batches``.
"""
from __future__ import annotations

import copy
import weakref
from concurrent.futures import ThreadPoolExecutor, wait

import numpy

from . import backend, flat, random
from .layers import Layer

MIN_SHARD_ROWS = 12     # fewer rows per shard and the hand-offs cost more than they save (tutorial net)
SHARD_ROWS = 32         # above two shards, a batch gets one shard per SHARD_ROWS rows


def blas_threads() -> int:
    """How many threads CPU work may use: as many as BLAS uses (it follows OMP_NUM_THREADS /
    OPENBLAS_NUM_THREADS, else one per core, and any ``threadpoolctl`` limit in force); 1 on a GPU,
    where one queue does the work."""
    if backend.get_backend() != "numpy":
        return 1
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return max(counts) if counts else 1


def single_threaded_blas():
    """A context in which BLAS runs on the calling thread only (for work split across threads)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, started on first use and kept for later calls."""
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="minialex")
    return _pools[workers]


def _blas_controller():
    """threadpoolctl's handle on NumPy's BLAS, found once (finding it is slow, asking it is not)."""
    if _blas["controller"] is None:
        from threadpoolctl import ThreadpoolController

        _blas["controller"] = ThreadpoolController()
    return _blas["controller"]


_blas: dict = {"controller": None}
_pools: dict = {}


# ---- the data-parallel training step ---------------------------------------------------------

def shard_plan(n: int) -> list[slice]:
    """Row slices of an n-sample batch, the same whatever the thread count: two shards, or one per
    SHARD_ROWS rows for large batches, each of at least MIN_SHARD_ROWS rows (so a small batch stays
    whole); one on a GPU, which runs the batch whole."""
    if backend.get_backend() != "numpy":
        return [slice(0, n)]
    count = max(1, min(n // MIN_SHARD_ROWS, max(2, n // SHARD_ROWS)))
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def sharded_step(model, x, y, shards):
    """Forward and backward over one batch, shard by shard; fills ``model``'s gradients.

    Shard 0 runs through the model itself, shard k through replica k. With T threads, thread t runs
    shards t, t + T, t + 2T, ... (thread 0 is the calling one). Returns (mean loss, correct count)
    over the whole batch, as the model's own step does.
    """
    n = x.shape[0]
    rng = random.get_rng()
    generators = [RowSlicedGenerator(rng, rows.start, rows.stop - rows.start, n) for rows in shards]
    networks = [model] + replicas_of(model, len(shards) - 1)

    def shard_step(k):
        rows = shards[k]
        with random.using_rng(generators[k]):
            loss, correct = networks[k].forward_loss(x[rows], y[rows])
        networks[k].backward(batch_size=n)
        return loss * (rows.stop - rows.start), correct

    def run_shards(ks):
        return [shard_step(k) for k in ks]

    threads = min(len(shards), blas_threads())
    turns = [range(t, len(shards), threads) for t in range(threads)]
    with single_threaded_blas():
        futures = [thread_pool(threads - 1).submit(run_shards, ks) for ks in turns[1:]] if threads > 1 else []
        try:
            done = run_shards(turns[0])
        finally:
            wait(futures)       # no thread may still be running when BLAS gets its threads back
    results = [None] * len(shards)
    for ks, shard_results in zip(turns, [done] + [future.result() for future in futures]):
        for k, result in zip(ks, shard_results):
            results[k] = result
    for replica in networks[1:]:
        model.flat_gradients += replica.flat_gradients
    rng.position = generators[0].position      # past the whole batch's draws, as one thread leaves it
    return sum(loss for loss, _ in results) / n, sum(correct for _, correct in results)


def replicas_of(model, count):
    """``count`` replicas of ``model`` for a data-parallel step: made once, again after a rebuild."""
    made = _replicas.get(model)
    if made is None or made[0] is not model.flat_parameters:
        made = _replicas[model] = (model.flat_parameters, [])
    while len(made[1]) < count:
        made[1].append(_replica(model))
    return made[1][:count]


_replicas: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _replica(model):
    """A shallow copy of ``model`` with the same weights but its own layers' caches and gradients."""
    replica = copy.copy(model)
    replica.layers = [_layer_replica(layer) for layer in model.layers]
    replica.loss = copy.copy(model.loss)
    replica.flat_gradients = backend.get_array_module(model.flat_gradients).zeros_like(model.flat_gradients)
    flat.point_grads_at(replica.layers, replica.flat_gradients)
    return replica


def _layer_replica(layer):
    """A shallow copy of a layer: the same ``params`` arrays, its own ``grads`` and per-call state
    (a layer inside it, such as Conv2D's ReLU, is copied the same way)."""
    replica = copy.copy(layer)
    replica.grads = {}
    for name, value in vars(layer).items():
        if isinstance(value, Layer):
            setattr(replica, name, _layer_replica(value))
    return replica


class RowSlicedGenerator(random.Generator):
    """The numbers that rows [first, first + rows) of a ``total``-row batch would get from ``parent``.

    Each draw of shape (rows, ...) returns exactly that slice of what one draw of shape (total, ...)
    from the parent would return, and moves on as that draw would: so the shards' dropout masks,
    put together, are the whole batch's, bit for bit, whichever order the shards draw in.
    """

    def __init__(self, parent: random.Generator, first: int, rows: int, total: int):
        super().__init__(parent.seed)
        self.position = parent.position
        self.first, self.rows, self.total = first, rows, total

    def bits(self, shape) -> object:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or shape[0] != self.rows:
            raise ValueError(f"rows {self.first}..{self.first + self.rows - 1} of a batch draw arrays of shape "
                             f"({self.rows}, ...), not {shape}")
        per_row = int(numpy.prod(shape[1:], dtype=numpy.int64))
        z = self.bits_at(self.position + self.first * per_row, self.rows * per_row)
        self.position += self.total * per_row
        return z.reshape(shape)


# ---- threaded inference -----------------------------------------------------------------------

def map_batches(function, count, batch_size):
    """[function(batch slice) for each batch of ``count`` samples], in order.

    On the CPU the batches run on one thread per BLAS thread, each with a single-threaded BLAS:
    NumPy's elementwise work uses one core, so this is what keeps every core busy at inference.
    Inference forwards keep no state, so they can share the layers. On a GPU they run one after
    another, in the device's queue.
    """
    batches = [slice(start, start + batch_size) for start in range(0, count, batch_size)]
    workers = blas_threads()
    if workers < 2 or len(batches) < 2:
        return [function(batch) for batch in batches]
    with single_threaded_blas():
        return list(thread_pool(workers).map(function, batches))
