"""CUDA graph capture and replay, emulated on the CPU: the launch counter's stand-in, grown.

    from minialex import graph_stand_in
    with graph_stand_in.emulating() as counter:     # the backend: the stand-in, able to capture
        model.fit(x, y)                             # minialex.graphs captures the step and replays it
    counter.total                                   # host calls: a replay is one

A CUDA graph is a recording. While a stream captures, the host's Python runs as usual, but every
kernel it launches is recorded, with its arguments, instead of run; launching the graph then runs
the recorded kernels, in order, on the same memory and with the same arguments, and none of the
Python. The stand-in for CuPy (``minialex.stand_in``) already sees every launch; this module records
them the same way, on NumPy arrays:

- inside a capture each launch is recorded with its arguments: an array by its memory (a view of the
  same bytes: a pointer), anything else by value, frozen as it was then (a deep copy, made afresh for
  each replay, so that a generator or a step count in it stays where it was, as a kernel's argument
  does on a card);
- a capture runs nothing: whatever its Python wrote into memory that existed before the capture is
  put back when it ends. What it allocated belongs to the capture's own pool;
- a capture fails (``CaptureError``) on a host read (``float(x)``, ``bool(x)``, ``x.get()``...), an
  upload (host data to the device) or an allocation while no pool of its own is in force, the three
  things a capture on a card cannot take (or, for the last, takes and later hands to other code
  while the graph still writes there: CuPy issue #9655);
- ``Graph.launch()`` replays the recorded launches: one host call, none of the model's Python.

``Graph.held()`` lists the memory a graph reads or writes outside its pool (the pointers it holds),
``Graph.trace()`` describes its launches (what, on which arrays, with which frozen values), so that
two captures can be compared. ``minialex.graphs`` captures through ``MODULE.graphs``, the same three
verbs it uses with CuPy (``running``, ``capturing``, ``launch``). tests/test_graphs.py holds the
rules of a captured step with it.
"""
from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace

import numpy

from . import stand_in

NAME = "emulating"          # what backend.get_backend() says: not 'numpy', not 'cupy'


class CaptureError(RuntimeError):
    """What a capture on a card would not take: a host read, an upload, an allocation outside its pool."""


class Pool:
    """A capture's own memory: the arrays it allocated, alive as long as the graph."""

    def __init__(self):
        self.roots: dict = {}

    def __contains__(self, root):
        return id(root) in self.roots

    def add(self, root):
        self.roots[id(root)] = root


def _root(array):
    """The array that owns ``array``'s memory (through views, and ``as_strided``'s holder)."""
    while True:
        base = array.base
        if not isinstance(base, numpy.ndarray):
            base = getattr(base, "base", None)         # as_strided keeps its source in a holder's ``base``
        if not isinstance(base, numpy.ndarray):
            return array
        array = base


def _arrays_in(value):
    """The arrays in ``value`` (itself, or inside tuples, lists and dicts)."""
    if isinstance(value, numpy.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays_in(item)


IMMUTABLE = (bool, int, float, complex, str, bytes, slice, type(None), type(Ellipsis), numpy.generic, numpy.dtype, type)


def _frozen(value, device_arrays):
    """``value`` as a graph keeps it: arrays by their memory (plain views), containers rebuilt, numbers and
    code as they are, any other object deep-copied with the device arrays inside it kept by their memory
    (and added to ``device_arrays``)."""
    if isinstance(value, numpy.ndarray):
        return value.view(numpy.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(_frozen(item, device_arrays) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item, device_arrays) for key, item in value.items()}
    if isinstance(value, IMMUTABLE) or callable(value):
        return value
    stand_in._active["freezing"] = device_arrays
    try:
        return copy.deepcopy(value)
    finally:
        stand_in._active["freezing"] = None


def _as_arrays(value):
    """A launch's result with NumPy scalars made 0-d arrays (memory the graph writes, as CuPy's are)."""
    if isinstance(value, numpy.generic):
        return numpy.asarray(value)
    if isinstance(value, tuple):
        return tuple(_as_arrays(item) for item in value)
    if isinstance(value, list):
        return [_as_arrays(item) for item in value]
    return value


def _write_into(recorded, fresh):
    """Copy a replay's ``fresh`` results into the memory the capture's results occupy."""
    if isinstance(recorded, (tuple, list)):
        for old, new in zip(recorded, fresh):
            _write_into(old, new)
    elif isinstance(recorded, numpy.ndarray) and fresh is not None:
        target = recorded.view(numpy.ndarray)
        if not (isinstance(fresh, numpy.ndarray) and _root(fresh) is _root(target)):
            target[...] = fresh


class Launch:
    """One recorded launch: ``function`` on frozen arguments, its results' memory, and the launch
    counter's label in force when it was made (the part of the step: see benchmarks/launch_count.py)."""

    def __init__(self, launches, function, args, kwargs, result, device_arrays):
        self.launches, self.function, self.result = launches, function, result
        self.args, self.kwargs = _frozen(args, device_arrays), _frozen(kwargs, device_arrays)
        counter = stand_in._active["counter"]
        self.label = counter.labels[-1] if counter is not None and counter.labels else "loop"

    def replay(self):
        fresh = self.function(*_frozen(self.args, []), **_frozen(self.kwargs, []))
        _write_into(self.result, fresh)

    @property
    def name(self):
        function = self.function
        owner = getattr(function, "__self__", None)
        if isinstance(owner, numpy.ufunc):
            return f"{owner.__name__}.{function.__name__}"
        return getattr(function, "__qualname__", None) or getattr(function, "__name__", repr(function))


class Graph:
    """A capture's launches, its pool and the memory it holds; ``launch()`` replays them."""

    def __init__(self, launches, pool, held):
        self.launches, self.pool, self._held = launches, pool, held

    def launch(self):
        stand_in._count(1)                      # one host call, whatever the graph holds
        for launch in self.launches:
            launch.replay()

    def held(self):
        """The arrays (the memory that owns them) that the graph reads or writes and its pool does not own."""
        return list(self._held.values())

    def trace(self):
        """[(launch's name, its arguments described)]: arrays as (shape, dtype, strides, which memory:
        'held k' or 'pool k', numbered in order of appearance), frozen objects by their attributes."""
        numbers: dict = {}

        def describe(value):
            if isinstance(value, numpy.ndarray):
                root = _root(value)
                if id(root) not in numbers:
                    kind = "pool" if root in self.pool else "held"
                    numbers[id(root)] = f"{kind} {sum(1 for n in numbers.values() if n.startswith(kind))}"
                return (value.shape, str(value.dtype), value.strides, numbers[id(root)])
            if isinstance(value, (tuple, list)):
                return tuple(describe(item) for item in value)
            if isinstance(value, dict):
                return tuple((key, describe(item)) for key, item in value.items())
            if isinstance(value, IMMUTABLE) or callable(value):
                return value
            return (type(value).__name__, describe(vars(value)))

        return [(launch.name, describe(launch.args), describe(launch.kwargs)) for launch in self.launches]


class Capture:
    """A capture in progress: what ``minialex.stand_in`` hands it, it records or refuses."""

    def __init__(self, pool):
        self.pool, self.launches = pool, []
        self.saved: dict = {}                   # memory from before the capture that it wrote: put back at the end
        self.held: dict = {}

    def refuse(self, what):
        raise CaptureError(f"{what} inside a CUDA graph capture: a graph replays launches only (a host read "
                           f"or a synchronous copy breaks a capture on a card, and its value would be frozen)")

    def allocate(self, array):
        """``array`` is new memory: the pool's, or refused where no pool of the capture's own is in force."""
        root = _root(array)
        if (self.pool is not None and root in self.pool) or id(root) in self.held:
            return
        if self.pool is None:
            raise CaptureError("an allocation outside the capture's pool: memory from a pool shared with eager "
                               "code goes back to it when freed, and eager code then writes where the graph "
                               "still reads (CuPy issue #9655); capture with a pool of the graph's own")
        self.pool.add(root)

    def launch(self, launches, function, args, kwargs):
        device_arrays: list = []
        for array in _arrays_in((args, kwargs)):
            self._hold(array)
        record = Launch(launches, function, args, kwargs, None, device_arrays)
        for array in device_arrays:
            self._hold(array)
        result = _as_arrays(function(*args, **kwargs))
        for array in _arrays_in(result):
            self.allocate(array)
        record.result = _frozen(result, [])
        self.launches.append(record)
        return result

    def _hold(self, array):
        """Memory a launch touches: the pool's, or held by the graph (saved, to be put back at the end)."""
        root = _root(array)
        if (self.pool is not None and root in self.pool) or id(root) in self.held:
            return
        self.held[id(root)] = root
        self.saved[id(root)] = root.copy()

    def end(self):
        """Put back what the capture's Python wrote into memory held from before it."""
        for key, root in self.held.items():
            root[...] = self.saved[key]
        return Graph(self.launches, self.pool or Pool(), self.held)


class GraphSupport:
    """The verbs ``minialex.graphs`` captures with, as its CuPy support has them."""

    def __init__(self):
        self.pool = None

    def new_pool(self):
        return Pool()

    @contextlib.contextmanager
    def running(self, pool=None):
        """Work inside allocates from ``pool`` (None: the shared pool)."""
        previous, self.pool = self.pool, pool
        try:
            yield
        finally:
            self.pool = previous

    @contextlib.contextmanager
    def capturing(self):
        """Within the block the launches are recorded, not run; yields a holder whose ``graph`` is set after."""
        if stand_in._active["capture"] is not None:
            raise CaptureError("a capture inside a capture")
        capture = Capture(self.pool)
        holder = SimpleNamespace(graph=None)
        stand_in._active["capture"] = capture
        try:
            yield holder
        finally:
            stand_in._active["capture"] = None
            graph = capture.end()
        holder.graph = graph

    def launch(self, graph):
        graph.launch()

    def node_count(self, graph):
        return len(graph.launches)


class EmulatorModule(stand_in.CountingModule):
    """The stand-in's array module, with ``graphs``: what captures and replays on it."""

    __name__ = "minialex_graph_emulator"

    def __init__(self):
        super().__init__()
        self.graphs = GraphSupport()


MODULE = EmulatorModule()


@contextlib.contextmanager
def emulating(counter: stand_in.LaunchCounter | None = None):
    """Within the block the active backend is the emulator; yields the LaunchCounter (host calls: each
    launch outside a graph, each copy to the device and each graph launch count one)."""
    with stand_in.counting(counter, MODULE, NAME) as counter:
        yield counter
