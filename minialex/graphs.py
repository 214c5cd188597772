"""A training step and an inference batch on a GPU, captured once as CUDA graphs and replayed.

On a GPU each kernel launch costs the host tens of microseconds of Python, layer code and CuPy; the
tutorial network's step launches 79 kernels at batch 64, and the card finishes them faster than the
host starts them (docs/launches.md). But every step launches the same kernels on the same arrays. A
CUDA graph records them once, and one call then replays them all, without the Python. This module
runs ``fit``'s steps (``TrainingSteps``) and ``evaluate``'s and ``predict``'s batches (``Inference``)
that way where the backend can capture (CuPy; ``minialex.graph_stand_in`` on the CPU), batch size by
batch size (``Replayer``): the first time eagerly (CuPy compiles the kernels, cuBLAS gets its handle,
the graph's own memory pool fills with blocks of the right sizes), the second time captured, then
replayed. A step at one batch size is then four host calls: the step's values, the batch's images and
its labels (each one copy), and the graph.

What a captured step must keep, each rule held by a test in tests/test_graphs.py:

- no host reads, uploads or synchronous copies inside the step (a capture fails on them);
- everything that changes from step to step is read from memory when the kernels run, never passed
  as a number: the step's values (``minialex.step_values``: Adam's step size, where the dropout
  layers' draws start, the step's place in the epoch's loss record), copied in once before each step;
- the batch comes in through fixed buffers, and the epoch's loss and accuracy are summed in place;
- the graph has a memory pool of its own, alive as long as it is, used by nothing else after the
  capture (CuPy's pool is shared: a block freed after a capture goes to eager code while the graph
  still writes to it, CuPy issue #9655);
- a graph holds its pointers: new weights buffers (``build``), new optimiser slots (a loaded
  checkpoint), another batch size or other buffers make a new capture (``Replayer.key``);
- the products go through cuBLAS called directly (``minialex.cublas``), as CuPy's are refused inside a
  capture, and the same call runs eagerly, so that eager and replayed steps compute the same bits.

Graphs are on by default and off with ``MINIALEX_CUDA_GRAPHS=0``; where a capture fails, one line on
stderr says why and those steps run eagerly. A step with another optimiser than Adam (whose update
reads its step size from the step's values) runs eagerly. A layer's settings (a dropout rate, say)
are frozen into a graph: change them on a new model.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import weakref
from collections import Counter
from types import SimpleNamespace

from . import backend, kernels, random
from .step_values import StepDraws, StepValues

SETTING = "MINIALEX_CUDA_GRAPHS"


def enabled() -> bool:
    """True unless ``MINIALEX_CUDA_GRAPHS=0``."""
    return os.environ.get(SETTING, "1").strip() != "0"


def graph_support(xp):
    """What captures CUDA graphs on the array module ``xp``: CuPy's (``CupyGraphs``), the emulator's
    (``minialex.graph_stand_in``), or None (NumPy, the launch counter's stand-in, or graphs switched off).
    With CuPy's per-thread default stream (``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``) graphs are off: the
    fit loop reads what a graph wrote on the default stream, which then is not ordered after ours."""
    if not enabled():
        return None
    if xp.__name__ == "cupy":
        if os.environ.get("CUPY_CUDA_PER_THREAD_DEFAULT_STREAM", "0").strip() not in ("", "0"):
            return None
        if xp not in _cupy_support:
            _cupy_support[xp] = CupyGraphs(xp)
        return _cupy_support[xp]
    return getattr(xp, "graphs", None)


_cupy_support: dict = {}


class CupyGraphs:
    """CUDA graphs through CuPy 14: a stream of minialex's own (CuPy captures on any stream but the
    default one), a memory pool per graph, ``Stream.begin_capture`` / ``end_capture`` and ``Graph.launch``."""

    def __init__(self, cupy):
        self.cupy = cupy
        self.stream = cupy.cuda.Stream()      # a blocking stream: ordered with work on the default stream

    def new_pool(self):
        return self.cupy.cuda.MemoryPool()

    @contextlib.contextmanager
    def running(self, pool=None):
        """Work inside runs on this stream and allocates from ``pool`` (None: CuPy's default pool)."""
        allocating = contextlib.nullcontext() if pool is None else self.cupy.cuda.using_allocator(pool.malloc)
        with self.stream, allocating:
            yield

    @contextlib.contextmanager
    def capturing(self):
        """Within the block (inside ``running``) launches are captured, not run; yields a holder whose
        ``graph`` is set after the block."""
        holder = SimpleNamespace(graph=None)
        self.stream.begin_capture()
        try:
            yield holder
        except BaseException:
            with contextlib.suppress(Exception):     # the capture is broken: end it, keep the first error
                self.stream.end_capture()
            raise
        holder.graph = self.stream.end_capture()

    def launch(self, graph):
        graph.launch(self.stream)

    def node_count(self, graph):
        """The graph's nodes (kernels and copies), from the driver (cuGraphGetNodes); None if it cannot tell."""
        count = ctypes.c_size_t()
        try:
            status = ctypes.CDLL("libcuda.so.1").cuGraphGetNodes(ctypes.c_void_p(graph.graph), None,
                                                                 ctypes.byref(count))
        except (OSError, AttributeError):
            return None
        return count.value if status == 0 else None


class Replayer:
    """One piece of GPU work on memory that stays put: ``work()`` launches it (the Python of a step at one
    batch size). ``run()`` runs it eagerly the first time, with the graph's own pool; captures it the
    second time and launches the graph; replays the graph after. Where the capture fails: one line on
    stderr, and eagerly from then on. ``key``: the pointers the graph holds, set by the owner after
    each run; other pointers need another Replayer."""

    def __init__(self, support, work, what):
        self.support, self.work, self.what = support, work, what
        self.pool = None if support is None else support.new_pool()
        self.graph, self.warm, self.failed, self.key = None, False, support is None, None
        _replayers.add(self)

    def run(self):
        """Returns how the work ran: 'eager', 'captured' (and launched) or 'replayed'."""
        if self.graph is not None:
            self.support.launch(self.graph)
            return "replayed"
        if self.failed:
            with self.support.running() if self.support else contextlib.nullcontext():
                self.work()
            return "eager"
        if not self.warm:
            with self.support.running(self.pool):
                self.work()
            self.warm = True
            return "eager"
        try:
            with self.support.running(self.pool), self.support.capturing() as captured:
                self.work()
        except Exception as exc:  # noqa: BLE001 - any failure: say why, once, and run the work eagerly
            self.failed = True
            reason = " ".join(str(exc).split())[:200]
            print(f"minialex: the CUDA graph of {self.what} could not be captured ({type(exc).__name__}: "
                  f"{reason}); it runs eagerly", file=sys.stderr, flush=True)
            return self.run()
        self.graph = captured.graph
        self.support.launch(self.graph)
        return "captured"


_replayers: weakref.WeakSet = weakref.WeakSet()


def pool_bytes():
    """What the memory pools of the graphs alive now hold (CuPy's ``total_bytes``), in bytes."""
    return sum(replayer.pool.total_bytes() for replayer in list(_replayers)
               if hasattr(replayer.pool, "total_bytes"))


def address(array):
    """Where an array's memory is (what a graph holds of it), or None for None."""
    if array is None:
        return None
    data = array.data
    return data.ptr if hasattr(data, "ptr") else array.__array_interface__["data"][0]


def running(support):
    """``support.running()``, or nothing to do where there is no support."""
    return contextlib.nullcontext() if support is None else support.running()


def gather(source, index, out):
    """out = source[index] along the first axis: a slice's rows copied, or an index array's taken (one launch)."""
    if isinstance(index, slice):
        out[...] = source[index]
    else:
        backend.get_array_module(source).take(source, index, axis=0, out=out)


# ---- the fit loop's bookkeeping on a GPU: their CUDA halves in minialex/kernels.py ----------------

@kernels.gpu(kernels.add_to_sums_cuda)
def add_to_sums(loss, correct, rows, loss_sum, correct_sum):
    """loss_sum += loss * rows, correct_sum += correct, in place: one kernel on a GPU."""
    loss_sum += loss * rows
    correct_sum += correct


@kernels.gpu(kernels.record_step_cuda)
def record_step(loss, correct, rows, step, record, loss_sum, correct_sum):
    """record[step] = loss (the non-finite guard's record), then ``add_to_sums``: one kernel on a GPU.
    ``step``: the 0-d word of the step's values that says which step this is."""
    record[int(step)] = loss
    loss_sum += loss * rows
    correct_sum += correct


# ---- training ------------------------------------------------------------------------------------

class TrainingSteps:
    """``fit``'s steps on a GPU (``Sequential.training_steps``, as ``training.EagerSteps`` on the CPU):
    ``run(step, index)`` trains on the rows ``index`` of (x, y); ``sums()`` is the epoch's (loss sum,
    correct count) so far, on the device. ``counts``: how many steps ran 'eager', 'captured', 'replayed'.

    Each step: the host writes the step's values (``Optimizer.write_step_values``, ``StepDraws``, the
    step's number) and copies them in, copies the batch into the fixed buffers of its batch size, and
    runs that batch size's ``Replayer``, whose work is the model's step reading them:
    ``train_step``, ``record_step`` (the loss into the guard's record, the sums in place) and
    ``apply_gradients``. The host's own counts move on as if the Python had run (the optimiser's
    iterations, the generator by the step's draws), replayed or not.
    """

    def __init__(self, model, x, y, guard):
        xp = backend.get_array_module(x)
        self.model, self.x, self.y, self.guard = model, x, y, guard
        self.support = graph_support(xp) if model.optimizer.reads_step_values else None
        self.values = StepValues(like=x)
        self.draws = StepDraws(self.values)
        self.loss_sum, self.correct = xp.zeros((), dtype=x.dtype), xp.zeros((), dtype=xp.int64)
        self.batches: dict = {}
        self.counts: Counter = Counter()
        self.t = 0

    def start_epoch(self):
        with running(self.support):
            self.loss_sum.fill(0)
            self.correct.fill(0)

    def sums(self):
        return self.loss_sum, self.correct

    def run(self, step, index):
        rows = _rows(index, self.x.shape[0])
        batch = self._batch(rows)
        optimizer, generator = self.model.optimizer, random.get_rng()
        self.t = optimizer.iterations + 1
        optimizer.write_step_values(self.values, self.t)
        self.values["step"] = step
        self.draws.start_step(generator)
        with running(self.support):
            self.values.upload()
            gather(self.x, index, batch.x)
            gather(self.y, index, batch.y)
            how = batch.replayer.run()
        optimizer.iterations = self.t
        generator.position += batch.draws
        batch.replayer.key = self._key(batch)
        self.counts[how] += 1
        return how

    def _batch(self, rows):
        """The buffers and the Replayer of this batch size; a new one where the held pointers changed."""
        batch = self.batches.get(rows)
        if batch is not None and batch.replayer.key not in (None, self._key(batch)):
            batch = None                                      # the old graph holds pointers now stale
        if batch is None:
            xp = backend.get_array_module(self.x)
            batch = SimpleNamespace(rows=rows, draws=0, x=xp.empty((rows,) + self.x.shape[1:], dtype=self.x.dtype),
                                    y=xp.empty((rows,) + self.y.shape[1:], dtype=self.y.dtype))
            batch.replayer = Replayer(self.support, lambda: self._work(batch), f"a training step of {rows} samples")
            self.batches[rows] = batch
        return batch

    def _work(self, batch):
        """The step's Python, as the host runs it once (eagerly, or into a capture)."""
        model, optimizer = self.model, self.model.optimizer
        optimizer.iterations = self.t - 1                       # a failed capture may have moved it on
        self.draws.count = 0
        with random.using_rng(self.draws), optimizer.reading(self.values):
            loss, correct = model.train_step(batch.x, batch.y)
            record_step(loss, correct, batch.rows, self.values.view("step"), self.guard.losses, self.loss_sum,
                        self.correct)
            model.apply_gradients()
        batch.draws = self.draws.count

    def _key(self, batch):
        model = self.model
        arrays = (model.flat_parameters, model.flat_gradients, model.flat_state, self.guard.losses, batch.x, batch.y,
                  *model.optimizer.state_arrays())
        return tuple(address(array) for array in arrays)


def _rows(index, total):
    if isinstance(index, slice):
        return len(range(*index.indices(total)))
    return int(index.shape[0])


# ---- inference -----------------------------------------------------------------------------------

def inference(model):
    """The model's ``Inference``: made once per model, its graphs and buffers live as long as it does."""
    found = _inference.get(model)
    if found is None:
        found = _inference[model] = Inference(model)
    return found


_inference: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Inference:
    """``evaluate_sums`` and ``predict`` on a GPU, batch by batch: each batch copied into the fixed buffer
    of its size, then that size's ``Replayer`` (a forward pass, and for ``evaluate_sums`` the loss and the
    sums in place; for ``predict`` the output, copied out after)."""

    def __init__(self, model):
        self.model = model
        self.batches: dict = {}
        self.counts: Counter = Counter()

    def evaluate_sums(self, x, y, batch_size):
        """Summed loss and correct count over (x, y) already on the device; both stay there."""
        xp = backend.get_array_module(x)
        support = graph_support(xp)
        sums = self._sums(x)
        with running(support):
            sums.loss_sum.fill(0)
            sums.correct.fill(0)
            for start in range(0, x.shape[0], batch_size):
                rows = min(batch_size, x.shape[0] - start)
                batch = self._batch("evaluate", rows, x, y)
                batch.x[...] = x[start:start + rows]
                batch.y[...] = y[start:start + rows]
                self._run(batch)
            return sums.loss_sum.copy(), sums.correct.copy()

    def predict(self, x, batch_size):
        """[the model's output for each batch of x], each a copy on the device."""
        support = graph_support(backend.get_array_module(x))
        outputs = []
        with running(support):
            for start in range(0, x.shape[0], batch_size):
                rows = min(batch_size, x.shape[0] - start)
                batch = self._batch("predict", rows, x)
                batch.x[...] = x[start:start + rows]
                self._run(batch)
                outputs.append(batch.out.copy())
        return outputs

    def _run(self, batch):
        self.counts[batch.replayer.run()] += 1
        batch.replayer.key = self._key(batch)

    def _sums(self, like):
        xp = backend.get_array_module(like)
        key = ("sums", str(like.dtype), xp.__name__)
        if key not in self.batches:
            self.batches[key] = SimpleNamespace(loss_sum=xp.zeros((), dtype=like.dtype),
                                                correct=xp.zeros((), dtype=xp.int64))
        return self.batches[key]

    def _batch(self, kind, rows, x, y=None):
        xp = backend.get_array_module(x)
        key = (kind, rows, str(x.dtype), xp.__name__)
        batch = self.batches.get(key)
        if batch is not None and batch.replayer.key not in (None, self._key(batch)):
            batch = None
        if batch is None:
            batch = SimpleNamespace(kind=kind, rows=rows, out=None, x=xp.empty((rows,) + x.shape[1:], dtype=x.dtype),
                                    y=None if y is None else xp.empty((rows,) + y.shape[1:], dtype=y.dtype),
                                    sums=self._sums(x) if kind == "evaluate" else None)
            what = f"{'an evaluation' if kind == 'evaluate' else 'a prediction'} of {rows} samples"
            batch.replayer = Replayer(graph_support(xp), lambda: self._work(batch), what)
            self.batches[key] = batch
        return batch

    def _work(self, batch):
        if batch.kind == "predict":
            batch.out = self.model(batch.x)
            return
        loss, correct = self.model.forward_loss(batch.x, batch.y, training=False)
        add_to_sums(loss, correct, batch.rows, batch.sums.loss_sum, batch.sums.correct)

    def _key(self, batch):
        model = self.model
        arrays = (model.flat_parameters, model.flat_state, batch.x, batch.y,
                  *((batch.sums.loss_sum, batch.sums.correct) if batch.sums else ()))
        return tuple(address(array) for array in arrays)
