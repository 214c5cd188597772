"""A stand-in for CuPy on the CPU: NumPy arrays that count the kernel launches CuPy would make.

    from minialex import stand_in
    with stand_in.counting() as counter:      # the active backend is now the stand-in
        ...                                   # code takes its GPU path, on NumPy, counted
    print(counter.total)

On a GPU a small network's step is bound by launches, not FLOPs: the host spends roughly 5-15
microseconds on every CuPy call that starts a kernel. This module counts those calls without a GPU,
through ``backend.using_module``: ``backend.get_array_module`` and ``backend.xp()`` return
``CountingModule``, and the arrays are ``CountingArray`` (NumPy arrays that count). What CuPy would
launch a kernel for counts one:

- every ufunc call (operators, in-place and ``out=`` included), every reduction (sum, max, argmax ...),
  every matrix product;
- every copy: ``copy()``, ``astype``, ``x[...] = y`` (a copy or a fill), a reshape that must copy,
  a fancy-index gather ``x[indices]``; creation that fills (``zeros``, ``ones``, ``arange``) and
  moving data onto the device (``asarray`` of host data);
- a fused function (``backend.fuse``) once, whatever it does inside, and a kernel of
  ``minialex.kernels`` as many times as its CUDA half launches (``Kernel.launches``), running its
  NumPy half.

Views (slices, ``.T``, reshapes that need no copy, ``as_strided``) and ``empty`` cost nothing. The
backend reports itself as neither 'numpy' nor 'cupy', so everything runs as on the GPU: one thread,
the unsharded step, the fit loop's deferred checks. ``FUNCTION_LAUNCHES`` says what each array-module
function costs; one it does not list counts one and is named in ``LaunchCounter.assumed``.

``benchmarks/launch_count.py`` counts the tutorial network with it; the tests hold every layer's GPU
path to the CPU's results and to a launch budget through it (``tests/test_launch_count.py``).

Every launch goes through one function, ``_launch``; ``minialex.graph_stand_in`` builds its emulator
of CUDA graph capture and replay on that: while it captures, ``_launch`` hands it each launch, and a
host read, an upload or an allocation is put to it first (``_active["capture"]``). Work inside a
fused kernel or a ``Kernel``'s NumPy half is the kernel's own (``_active["depth"]`` above 0): neither
counted nor handed on. Device arrays come back to the host with ``get()``, as CuPy's do.
"""
from __future__ import annotations

import contextlib
import functools
import operator
import sys
from collections import Counter
from pathlib import Path

import numpy

from . import backend

NAME = "counting"       # what backend.get_backend() says while counting: not 'numpy', not 'cupy'

# launches of array-module functions (anything not listed counts one, and is named in the report)
FUNCTION_LAUNCHES = {
    "empty": 0, "empty_like": 0,
    "zeros": 1, "zeros_like": 1, "ones": 1, "ones_like": 1, "full": 1, "full_like": 1, "arange": 1,
    "copyto": 1, "argmax": 1, "argmin": 1, "ascontiguousarray": 1, "mean": 1,
    "argsort": 1, "nonzero": 1, "flatnonzero": 1,     # a sort, a scan: a few kernels in fact, counted as one
    "take": 1,              # a gather
    "pad": 2,               # cupy.pad with zeros: empty, fill, one copy into the middle
    # cupy.concatenate: one copy per array, or one kernel for more than 8 small ones
    "concatenate": lambda arrays, *args, **kwargs: 1 if len(arrays) > 8 else len(arrays),
}


class LaunchCounter:
    """Counts launches by label: the innermost open ``label(...)`` block gets each one."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.assumed: set[str] = set()
        self.labels: list[str] = []
        self.paused = 0
        self.trace = None           # a label (or True for all): record where each of its launches comes from
        self.lines: list[tuple] = []

    def add(self, launches=1):
        if launches and not self.paused:
            label = self.labels[-1] if self.labels else "loop"
            self.counts[label] += launches
            if self.trace is True or (self.trace is not None and self.trace in (label, _part(label))):
                self.lines.append((label, launches, _caller()))

    @contextlib.contextmanager
    def label(self, name):
        self.labels.append(name)
        try:
            yield
        finally:
            self.labels.pop()

    @contextlib.contextmanager
    def pause(self):
        """Inside a fused kernel: its operations are one launch, already counted."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    @property
    def total(self):
        return sum(self.counts.values())


_active: dict = {"counter": None, "capture": None, "depth": 0, "freezing": None}


def _part(label):
    """The part a label names: a layer's name for ('forward' | 'backward', name), else the label itself."""
    return label[1] if isinstance(label, tuple) else label


def _caller():
    """'file:line  code' of the first frame outside this file (where a launch comes from)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None:
        return "?"
    import linecache

    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}  {code}"


def _count(launches=1):
    counter = _active["counter"]
    if counter is not None:
        counter.add(launches)


def _launch(launches, function, args, kwargs=None):
    """``function(*args, **kwargs)`` (plain NumPy work), counted as ``launches`` launches; a capture in
    progress records it (not what runs inside a kernel: that is the kernel's own)."""
    _count(launches)
    capture = _active["capture"]
    if capture is None or _active["depth"]:
        return function(*args, **(kwargs or {}))
    return capture.launch(launches, function, args, kwargs or {})


def _on_host(what):
    """A capture in progress is told that the host reads, uploads or allocates ``what`` (it may refuse)."""
    capture = _active["capture"]
    if capture is not None and not _active["depth"]:
        capture.refuse(what)


def _allocated(array):
    """A capture in progress is told of memory allocated outside any launch (``empty``)."""
    capture = _active["capture"]
    if capture is not None and not _active["depth"]:
        capture.allocate(array)
    return array


def _plain(value):
    """CountingArrays (also inside lists, tuples and dicts) as plain NumPy arrays."""
    if isinstance(value, CountingArray):
        return value.view(numpy.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    return value


def _counting(value):
    """Results back as CountingArrays; NumPy scalars become 0-d arrays (CuPy returns 0-d arrays)."""
    if isinstance(value, numpy.ndarray):
        return value if isinstance(value, CountingArray) else value.view(CountingArray)
    if isinstance(value, numpy.generic):
        return numpy.asarray(value).view(CountingArray)
    if isinstance(value, tuple):
        return tuple(_counting(v) for v in value)
    if isinstance(value, list):
        return [_counting(v) for v in value]
    return value


def _basic(index):
    """True for an index that makes a view (ints, slices, None, Ellipsis), not a gather."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(part, (int, numpy.integer, slice)) or part is None or part is Ellipsis for part in parts)


def _copy_array(array, order="C"):
    return array.copy(order)


class CountingArray(numpy.ndarray):
    """A NumPy array that counts each operation CuPy would launch a kernel for."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _plain(out)
        result = _launch(1, getattr(ufunc, method), _plain(inputs), kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _counting(result)

    def __array_function__(self, func, types, args, kwargs):
        return _module_function(func.__name__, func)(*args, **kwargs)

    def __getitem__(self, index):
        plain, index = self.view(numpy.ndarray), _plain(index)
        if not _basic(index):
            return _counting(_launch(1, operator.getitem, (plain, index)))     # a fancy index gathers: a kernel
        result = plain[index]                    # a view; one element stays a 0-d view, as on CuPy
        return _counting(result if isinstance(result, numpy.ndarray) else plain[(*_tuple(index), Ellipsis)])

    def __setitem__(self, index, value):
        if isinstance(value, numpy.ndarray) and not isinstance(value, CountingArray):
            _on_host("an upload (host data written into a device array)")
        _launch(1, operator.setitem, (self.view(numpy.ndarray), _plain(index), _plain(value)))   # a copy or a fill

    def copy(self, order="C"):
        return _counting(_launch(1, _copy_array, (self.view(numpy.ndarray), order)))

    def astype(self, dtype, *args, copy=True, **kwargs):
        plain = self.view(numpy.ndarray)
        if not copy and numpy.dtype(dtype) == self.dtype:
            return self
        return _counting(_launch(1, numpy.ndarray.astype, (plain, dtype, *args), dict(kwargs, copy=copy)))

    def fill(self, value):
        _launch(1, numpy.ndarray.fill, (self.view(numpy.ndarray), value))

    def reshape(self, *shape, **kwargs):
        plain = self.view(numpy.ndarray)
        result = plain.reshape(*shape, **kwargs)
        if numpy.may_share_memory(result, plain):
            return _counting(result)             # a view
        return _counting(_launch(1, numpy.reshape, (plain, shape[0] if len(shape) == 1 else shape), kwargs))

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

    def flatten(self, order="C"):
        return self.copy(order).reshape(-1)

    def _reduction(name):
        def method(self, *args, **kwargs):
            return _counting(_launch(1, getattr(numpy.ndarray, name), (self.view(numpy.ndarray), *_plain(args)),
                                     _plain(kwargs)))
        method.__name__ = name
        return method

    argmax, argmin, argsort, dot = _reduction("argmax"), _reduction("argmin"), _reduction("argsort"), _reduction("dot")
    del _reduction

    # ---- the host's side: reading back and writing in, as CuPy's arrays do ----------------------
    def get(self):
        """A host copy (a device-to-host copy: the host waits for the device)."""
        _on_host("a host read (get)")
        return self.view(numpy.ndarray).copy()

    def set(self, host):
        """Copy the host array ``host`` in (a host-to-device copy: one launch, as CuPy's ``set``)."""
        _on_host("an upload (set)")
        _count(1)
        self.view(numpy.ndarray)[...] = host

    def _read(what):
        def method(self, *args):
            _on_host(f"a host read ({what})")
            return getattr(self.view(numpy.ndarray), what)(*args)
        method.__name__ = what
        return method

    __float__, __int__, __bool__ = _read("__float__"), _read("__int__"), _read("__bool__")
    __index__, item, tolist = _read("__index__"), _read("item"), _read("tolist")
    del _read

    def __deepcopy__(self, memo):
        """A device array is memory, not a value: where ``_active["freezing"]`` is set (an emulated graph
        freezing a launch's arguments) it stays itself, and is listed; else a copy, as NumPy makes it."""
        frozen = _active["freezing"]
        if frozen is not None:
            frozen.append(self)
            return self
        return _counting(self.view(numpy.ndarray).copy())


def _tuple(index):
    return index if isinstance(index, tuple) else (index,)


def _module_function(name, function):
    """``function`` (a NumPy function) counting its launches from FUNCTION_LAUNCHES."""
    @functools.wraps(function)
    def counted(*args, **kwargs):
        if name == "asarray" or name == "array":
            source = args[0] if args else kwargs.get("a")
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            on_device = isinstance(source, CountingArray)
            if on_device and name == "asarray" and (dtype is None or numpy.dtype(dtype) == source.dtype):
                return source                                    # nothing to do
            if not on_device:
                _on_host("an upload (asarray of host data)")
            launches = 1                                         # a host-to-device copy, or a cast
        else:
            counter = _active["counter"]
            if name not in FUNCTION_LAUNCHES and counter is not None and not counter.paused:
                counter.assumed.add(name)
            launches = FUNCTION_LAUNCHES.get(name, 1)
            launches = launches(*args, **kwargs) if callable(launches) else launches
        if not launches:                                         # empty: memory, no launch
            return _allocated(_counting(function(*_plain(args), **_plain(kwargs))))
        return _counting(_launch(launches, function, _plain(args), _plain(kwargs)))
    return counted


def _as_strided(array, shape=None, strides=None, **kwargs):
    return _counting(numpy.lib.stride_tricks.as_strided(_plain(array), shape=shape, strides=strides, **kwargs))


class CountingModule:
    """The array module while counting: NumPy's names, with functions that count their launches.

    Ufuncs pass through as they are (a CountingArray counts them when called); ``fuse`` stands for
    ``cupy.fuse``: what ``backend.fuse`` and ``minialex.kernels`` call on a module that is not NumPy.
    """

    __name__ = "minialex_launch_count"
    ndarray = CountingArray         # the arrays backend.get_array_module gives to this module

    def __init__(self):
        self.lib = type("lib", (), {"stride_tricks": type("stride_tricks", (), {
            "as_strided": staticmethod(_as_strided)})})

    def __getattr__(self, name):
        value = getattr(numpy, name)
        if callable(value) and not isinstance(value, (numpy.ufunc, type)):
            value = _module_function(name, value)
        setattr(self, name, value)
        return value

    @staticmethod
    def fuse(function):
        """What ``backend.fuse`` asks for: ``function`` run as ONE launch."""
        @functools.wraps(function)
        def fused(*args, **kwargs):
            return _run_as_launches(1, function, args, kwargs)
        return fused

    @staticmethod
    def run_kernel(kernel, *args, **kwargs):
        """What a ``minialex.kernels.Kernel`` asks for: its NumPy half, counted as the launches of its CUDA half."""
        return _run_as_launches(kernel.launches, kernel.numpy_half, args, kwargs)


def _run_as_launches(launches, function, args, kwargs):
    """function(*args, **kwargs), counted as ``launches`` launches, whatever it does inside."""
    return _launch(launches, _kernel_work(function), args, kwargs)


def _kernel_work(function):
    """``function`` run as the inside of one kernel: what it does there is neither counted nor recorded,
    and it may read device memory (``_active["depth"]``)."""
    @functools.wraps(function)
    def inside(*args, **kwargs):
        counter = _active["counter"]
        _active["depth"] += 1
        try:
            with counter.pause() if counter is not None else contextlib.nullcontext():
                return function(*args, **kwargs)
        finally:
            _active["depth"] -= 1
    inside.kernel = function                    # what runs as one kernel (a Kernel's NumPy half, a fused function)
    return inside


MODULE = CountingModule()


@contextlib.contextmanager
def counting(counter: LaunchCounter | None = None, module: CountingModule = MODULE, name: str = NAME):
    """Within the block, the active backend is the counting stand-in (``module``: it, or a module built
    on it, such as ``minialex.graph_stand_in``'s); yields the LaunchCounter."""
    counter = counter or LaunchCounter()
    previous_counter = _active["counter"]
    _active["counter"] = counter
    try:
        with backend.using_module(module, name):
            yield counter
    finally:
        _active["counter"] = previous_counter
