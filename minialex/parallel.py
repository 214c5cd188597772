"""CPU threads: BLAS limits, one pool of threads, the shard plan, and work spread over them.

NumPy runs a matrix product on every core (through BLAS) but everything else (ReLU, LRN, pooling,
im2col) on one. So on the CPU a training step cuts its batch into shards that run side by side,
each on its own thread with a one-thread BLAS, and inference spreads whole batches over the same
threads. On a GPU none of this runs: one device queue does the work.

This module knows shards and threads, nothing of layers or models: the training step
(``minialex.data_parallel``) asks ``shard_plan`` how to cut a batch and runs its shards through
``run_meeting`` (``run_shards`` in stages, where the shards meet to add up sums over the whole batch);
``Sequential`` evaluates and predicts through ``map_batches``.

The shard plan depends on the batch size only, never on the thread count: with 1, 2 or 4 threads
the same shards run, each with a one-thread BLAS, and their results come back in shard order, so a
seeded run gives the same weights, bit for bit, whatever ``OMP_NUM_THREADS`` says (threads only
decide which shards run side by side).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import threadpoolctl

from . import backend

MIN_SHARD_ROWS = 12     # fewer rows per shard and the hand-offs cost more than they save (tutorial net)
SHARD_ROWS = 32         # above two shards, a batch gets one shard per SHARD_ROWS rows
INFERENCE_ROWS = 16     # CPU inference runs in pieces of at most this many samples (see map_batches)


def blas_threads() -> int:
    """How many threads CPU work may use: as many as BLAS uses (it follows OMP_NUM_THREADS /
    OPENBLAS_NUM_THREADS, else one per core, and any ``threadpoolctl`` limit in force); 1 on a GPU,
    where one queue does the work."""
    if backend.get_backend() != "numpy":
        return 1
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return max(counts) if counts else 1


@contextmanager
def single_threaded_blas():
    """A context in which BLAS runs on the calling thread only (for work split across threads).

    BLAS's thread count belongs to the process, so the contexts of all threads count as one: the
    first to enter sets one thread, the last to leave puts back what was there before (two threads'
    overlapping contexts, each restoring what it found, would leave BLAS at one thread for good).
    """
    me = threading.get_ident()
    with _single["lock"]:
        if not _single["inside"]:
            _single["limiter"] = _blas_controller().limit(limits=1, user_api="blas")
            _release_blas_control()
        _single["inside"][me] = _single["inside"].get(me, 0) + 1
    try:
        yield
    finally:
        with _single["lock"]:
            _leave(me)


def _leave(thread):
    """``thread`` leaves one single_threaded_blas context; the last one out restores BLAS's threads."""
    inside = _single["inside"]
    inside[thread] -= 1
    if not inside[thread]:
        del inside[thread]
    if not inside:
        _single.pop("limiter").restore_original_limits()
        _release_blas_control()


def _release_blas_control():
    """Let any thread set OpenBLAS's threads next: threadpoolctl (3.6 and later) obeys only the first
    thread that set them, until it releases them, and the last thread out may not be the first in."""
    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if release is not None:
        release()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, started on first use and kept for later calls
    (a forked child starts its own: a fork copies no thread)."""
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="minialex")
    return _pools[workers]


def _blas_controller():
    """threadpoolctl's handle on NumPy's BLAS, found once (finding it is slow, asking it is not)."""
    if _blas["controller"] is None:
        _blas["controller"] = threadpoolctl.ThreadpoolController()
    return _blas["controller"]


def _after_fork_in_child():
    """A forked child has only the thread that forked: the parent's pool threads (and any lock one of
    them held) are not there, so it forgets them, and their single_threaded_blas contexts, which
    they will never leave (the last one out puts BLAS's threads back)."""
    _pools.clear()
    _single["lock"] = threading.Lock()
    inside, me = _single["inside"], threading.get_ident()
    for thread in [thread for thread in inside if thread != me]:
        del inside[thread]
    if not inside and "limiter" in _single:
        _single.pop("limiter").restore_original_limits()
        _release_blas_control()


_blas: dict = {"controller": None}
_pools: dict = {}
_single: dict = {"lock": threading.Lock(), "inside": {}}   # single_threaded_blas: thread -> contexts entered
if hasattr(os, "register_at_fork"):     # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


def run_shards(shard_step, count):
    """[shard_step(k) for k in range(count)], the shards side by side, each with a one-thread BLAS.

    With T threads, thread t runs shards t, t + T, t + 2T, ... (thread 0 is the calling one); the
    results come back in shard order, whatever T is.
    """
    def run_turn(ks):
        return [shard_step(k) for k in ks]

    threads = min(count, blas_threads())
    turns = [range(t, count, threads) for t in range(threads)]
    with single_threaded_blas():
        futures = [thread_pool(threads - 1).submit(run_turn, ks) for ks in turns[1:]]
        try:
            done = run_turn(turns[0])
        finally:
            wait(futures)       # no thread may still be running when BLAS gets its threads back
    results = [None] * count
    for ks, turn_results in zip(turns, [done] + [future.result() for future in futures]):
        for k, result in zip(ks, turn_results):
            results[k] = result
    return results


def run_meeting(start, count):
    """[what shard k's program returns, for k in range(count)]: shards side by side, as ``run_shards``
    runs them, that meet where each needs a sum over the whole batch (SyncBatchNorm's all-reduce,
    across threads).

    ``start(k)`` makes shard k's program, a generator. Where it needs a sum over every shard's rows,
    it yields its own rows' part (an array, or a tuple of arrays and numbers) and goes on with the
    total that the ``yield`` returns. The shards run in stages: each stage runs every program to its
    next meeting (one ``run_shards``), then the parts are added in shard order (``sum_in_order``) and
    the next stage hands every program the same total. A stage ends where a barrier inside the
    programs would stand, so fewer threads than shards (shards in turns) cannot wait on each other;
    and the totals, like the shards, are the same whatever the thread count. Every program must meet
    as often as the others.
    """
    programs = [start(k) for k in range(count)]          # made here, first run in the first stage
    total = None
    while True:
        outcomes = run_shards(lambda k: _resume(programs[k], total), count)
        finished = {done for done, _ in outcomes}
        if finished == {True}:
            return [value for _, value in outcomes]
        if len(finished) > 1:
            raise RuntimeError(f"shards {[k for k, (done, _) in enumerate(outcomes) if done]} of {count} "
                               f"finished while the others still wait to meet: each must meet as often")
        total = sum_in_order([part for _, part in outcomes])


def _resume(program, total):
    """(False, the part it yields at its next meeting) or (True, what it returns), ``total`` sent in."""
    try:
        return False, program.send(total)
    except StopIteration as finished:
        return True, finished.value


def sum_in_order(parts):
    """parts[0] + parts[1] + ..., added in that order (tuples item by item): the same bits whichever
    threads made the parts."""
    if isinstance(parts[0], tuple):
        return tuple(sum_in_order(list(items)) for items in zip(*parts))
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


# ---- threaded inference -----------------------------------------------------------------------

def map_batches(function, count, batch_size):
    """[function(piece) for each piece of ``count`` samples], in order: the batches of ``batch_size``
    samples, on the CPU cut into pieces of at most INFERENCE_ROWS.

    On the CPU the pieces run on one thread per BLAS thread, each with a single-threaded BLAS:
    NumPy's elementwise work uses one core, so this is what keeps every core busy at inference. A
    piece of 16 keeps each layer's output of the tutorial network (at most 1.8 MB) near its core,
    where a batch of 128 makes every elementwise pass go out to memory: 10,000 MNIST images go 15 to
    20% faster so. Inference forwards keep no state, so they can share the layers. On a GPU the
    batches run whole, one after another, in the device's queue.
    """
    workers = blas_threads()
    rows = min(batch_size, INFERENCE_ROWS) if backend.get_backend() == "numpy" else batch_size
    pieces = [slice(start, start + rows) for start in range(0, count, rows)]
    if workers < 2 or len(pieces) < 2:
        return [function(piece) for piece in pieces]
    with single_threaded_blas():
        return list(thread_pool(workers).map(function, pieces))
