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
"""
from __future__ import annotations

import contextlib
import functools
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


_active: dict = {"counter": None}


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


def _copies(result, source):
    """One launch when ``result`` is new memory (a copy), none when it is a view of ``source``."""
    return 0 if numpy.may_share_memory(result, source) else 1


class CountingArray(numpy.ndarray):
    """A NumPy array that counts each operation CuPy would launch a kernel for."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _count(1)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _counting(result)

    def __array_function__(self, func, types, args, kwargs):
        return _module_function(func.__name__, func)(*args, **kwargs)

    def __getitem__(self, index):
        plain = self.view(numpy.ndarray)
        result = plain[_plain(index)]
        if isinstance(result, numpy.ndarray):
            _count(_copies(result, plain))       # a fancy index gathers (a kernel); a slice is a view
        return _counting(result)                 # (a scalar read is a device-to-host copy, not counted)

    def __setitem__(self, index, value):
        _count(1)                                # a copy or a fill (a scatter with a fancy index)
        self.view(numpy.ndarray)[_plain(index)] = _plain(value)

    def copy(self, order="C"):
        _count(1)
        return _counting(self.view(numpy.ndarray).copy(order))

    def astype(self, dtype, *args, copy=True, **kwargs):
        plain = self.view(numpy.ndarray)
        result = plain.astype(dtype, *args, copy=copy, **kwargs)
        _count(_copies(result, plain))
        return _counting(result)

    def fill(self, value):
        _count(1)
        self.view(numpy.ndarray).fill(value)

    def reshape(self, *shape, **kwargs):
        plain = self.view(numpy.ndarray)
        result = plain.reshape(*shape, **kwargs)
        _count(_copies(result, plain))
        return _counting(result)

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

    def flatten(self, order="C"):
        return self.copy(order).reshape(-1)

    def _reduction(name):
        def method(self, *args, **kwargs):
            _count(1)
            return _counting(getattr(self.view(numpy.ndarray), name)(*_plain(args), **_plain(kwargs)))
        method.__name__ = name
        return method

    argmax, argmin, argsort, dot = _reduction("argmax"), _reduction("argmin"), _reduction("argsort"), _reduction("dot")
    del _reduction


def _module_function(name, function):
    """``function`` (a NumPy function) counting its launches from FUNCTION_LAUNCHES."""
    @functools.wraps(function)
    def counted(*args, **kwargs):
        if name == "asarray" or name == "array":
            source = args[0] if args else kwargs.get("a")
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            same = isinstance(source, CountingArray) and (dtype is None or numpy.dtype(dtype) == source.dtype)
            _count(0 if same and name == "asarray" else 1)       # else: a host-to-device copy, or a cast
        else:
            counter = _active["counter"]
            if name not in FUNCTION_LAUNCHES and counter is not None and not counter.paused:
                counter.assumed.add(name)
            launches = FUNCTION_LAUNCHES.get(name, 1)
            _count(launches(*args, **kwargs) if callable(launches) else launches)
        return _counting(function(*_plain(args), **_plain(kwargs)))
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
    _count(launches)
    counter = _active["counter"]
    with counter.pause() if counter is not None else contextlib.nullcontext():
        return function(*args, **kwargs)


MODULE = CountingModule()


@contextlib.contextmanager
def counting(counter: LaunchCounter | None = None):
    """Within the block, the active backend is the counting stand-in; yields the LaunchCounter."""
    counter = counter or LaunchCounter()
    previous_counter = _active["counter"]
    _active["counter"] = counter
    try:
        with backend.using_module(MODULE, NAME):
            yield counter
    finally:
        _active["counter"] = previous_counter
