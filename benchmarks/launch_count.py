"""Kernel launches per training step and per inference batch, counted on the CPU.

    python benchmarks/launch_count.py

On a GPU a small network's step is bound by launches, not FLOPs: the host spends roughly 5-15
microseconds on every CuPy call that starts a kernel, and at batch 64 most of this network's kernels
finish faster than that. This script counts those calls without a GPU. It runs the tutorial network
on NumPy through a *counting stand-in* for the array module (``backend.using_module``):
``backend.get_array_module`` and ``backend.xp()`` return ``CountingModule``, and the arrays are
``CountingArray`` (NumPy arrays that count). What CuPy would launch a kernel for counts one:

- every ufunc call (operators, in-place and ``out=`` included), every reduction (sum, max, argmax ...),
  every matrix product;
- every copy: ``copy()``, ``astype``, ``x[...] = y`` (a copy or a fill), a reshape that must copy,
  a fancy-index gather ``x[indices]``; creation that fills (``zeros``, ``ones``, ``arange``) and
  moving data onto the device (``asarray`` of host data);
- a fused kernel (``backend.fuse``, ``minialex.kernels``) once, whatever it does inside.

Views (slices, ``.T``, reshapes that need no copy, ``as_strided``) and ``empty`` cost nothing. The
backend reports itself as neither 'numpy' nor 'cupy', so everything runs as on the GPU: one thread,
the unsharded step (``minialex.parallel`` shards only on NumPy), the fit loop's deferred checks.

One step is counted as the difference between ``fit`` over three batches and over two (so the
epoch's own work cancels out and the step counted is a warm one); one inference batch likewise with
``evaluate_sums``, which ``fit``'s validation and ``evaluate`` run. The script prints launches by part
and ends with ``RESULT launches_per_step=N launches_per_inference_batch=M``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy  # noqa: E402

from minialex import backend  # noqa: E402
from minialex.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, LocalResponseNorm,  # noqa: E402
                             MaxPool2D, ReLU, Softmax)

BATCH = 64
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
        """What ``backend.fuse`` and ``minialex.kernels`` ask for: ``function`` (a fused function, or a
        kernel's NumPy half) run as ONE launch."""
        @functools.wraps(function)
        def fused(*args, **kwargs):
            _count(1)
            counter = _active["counter"]
            with counter.pause() if counter is not None else contextlib.nullcontext():
                return function(*args, **kwargs)
        return fused


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


def labelled(counter, name, function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with counter.label(name):
            return function(*args, **kwargs)
    return call


def instrument(model, counter):
    """Label the launches of each layer's forward and backward, the loss, accuracy and the optimiser."""
    for layer in model.layers:
        layer.forward = labelled(counter, ("forward", layer.name), layer.forward)
        layer.backward = labelled(counter, ("backward", layer.name), layer.backward)
    model.loss.forward = labelled(counter, ("forward", "loss + accuracy"), model.loss.forward)
    model.forward_loss = labelled(counter, ("forward", "loss + accuracy"), model.forward_loss)
    model.loss.backward = labelled(counter, ("backward", "loss + accuracy"), model.loss.backward)
    model.optimizer.apply = labelled(counter, "optimiser", model.optimizer.apply)


def _counted_run(batches, what):
    """Launches (by label) of ``fit`` over ``batches`` batches ('step') or of ``evaluate_sums`` ('inference')."""
    import common
    from minialex import random

    counter = LaunchCounter()
    with counting(counter):
        model = common.tutorial_model()
        x, y = common.tutorial_batch(BATCH * batches)
        instrument(model, counter)
        counter.counts.clear()
        if what == "step":
            random.set_seed(1)
            model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, shuffle=True)
        else:
            model.evaluate_sums(x, y, BATCH)
    return counter


def count_launches():
    """{'step': Counter of one training step by label, 'inference': one inference batch, 'assumed': names}."""
    result, assumed = {}, set()
    for what in ("step", "inference"):
        three, two = _counted_run(3, what), _counted_run(2, what)
        difference = Counter(three.counts)
        difference.subtract(two.counts)
        result[what] = Counter({k: v for k, v in difference.items() if v})
        assumed |= three.assumed
    result["assumed"] = assumed
    return result


def layer_names():
    import common

    with counting():
        return [layer.name for layer in common.tutorial_model().layers]


def table(counts, names):
    """The report: one row per layer (training forward, backward; inference), then loss, optimiser, loop."""
    step, inference = counts["step"], counts["inference"]
    lines = [f"{'part':<24}{'step: forward':>14}{'backward':>10}{'inference':>11}"]

    def row(label, forward, backward, infer):
        cells = [f"{v:>{w}}" if v else f"{'':>{w}}" for v, w in ((forward, 14), (backward, 10), (infer, 11))]
        lines.append((f"{label:<24}" + "".join(cells)).rstrip())

    parts = names + ["loss + accuracy"]
    for name in parts:
        row(name, step[("forward", name)], step[("backward", name)], inference[("forward", name)])
    row("optimiser", 0, step["optimiser"], inference["optimiser"])
    row("loop (fit / evaluate)", 0, step["loop"], inference["loop"])
    known = {(way, name) for way in ("forward", "backward") for name in parts} | {"optimiser", "loop"}
    for label in sorted((set(step) | set(inference)) - known, key=str):
        row(str(label), step[label], 0, inference[label])
    forward = sum(v for k, v in step.items() if isinstance(k, tuple) and k[0] == "forward")
    lines.append("-" * 59)
    row("total", forward, sum(step.values()) - forward, sum(inference.values()))
    lines.append(f"{'':<24}{'step: ' + str(sum(step.values())):>24}")
    return "\n".join(lines)


def trace(name):
    """Where each launch of part ``name`` (a layer's name, 'optimiser' or 'loop') comes from, in one
    warm fit step over one batch (the loop's lines include the epoch's own work)."""
    import common

    counter = LaunchCounter()
    with counting(counter):
        model = common.tutorial_model()
        x, y = common.tutorial_batch(BATCH)
        instrument(model, counter)
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
        counter.trace = name
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    for label, launches, where in counter.lines:
        print(f"{label[0] if isinstance(label, tuple) else label:<10}{launches:>3}  {where}")


# ---- each layer alone ----------------------------------------------------------------------------

#: every layer of minialex.layers: a small case of it and its launch budget on a GPU, (training
#: forward, backward, inference forward), at most; tests/test_launch_count.py holds each layer to its
#: budget, and tests/test_layer_recipe.py asks every layer for an entry
LAYER_BUDGETS = {
    "Conv2D": (lambda: Conv2D(8, 3, padding="same", activation="relu"), (4, 8, 8, 3), (4, 6, 4)),
    "MaxPool2D": (lambda: MaxPool2D(2), (4, 8, 8, 3), (1, 1, 1)),
    "LocalResponseNorm": (lambda: LocalResponseNorm(), (4, 8, 8, 3), (1, 1, 1)),
    "BatchNormalization": (lambda: BatchNormalization(), (4, 8, 8, 3), (4, 3, 1)),
    "Dense": (lambda: Dense(5, activation="relu"), (4, 8), (3, 4, 3)),
    "Dropout": (lambda: Dropout(0.5), (4, 8), (1, 1, 0)),
    "ReLU": (lambda: ReLU(), (4, 8), (1, 1, 1)),
    "Softmax": (lambda: Softmax(), (4, 8), (5, 4, 5)),
    "Flatten": (lambda: Flatten(), (4, 2, 2, 3), (0, 0, 0)),
}


def layer_launches(make_layer, shape):
    """(training forward, backward, inference forward) launches of a layer alone on inputs of ``shape``
    (built first: creating its weights is not counted), and the functions counted by assumption."""
    counter = LaunchCounter()
    with counting(counter):
        layer = make_layer()
        x = backend.to_device(numpy.random.default_rng(0).random(shape, dtype=numpy.float32))
        layer.forward(x)
        counter.counts.clear()
        with counter.label("inference"):
            layer.forward(x)
        with counter.label("forward"):
            y = layer.forward(x, training=True)
        dout = backend.xp().ones_like(y)
        with counter.label("backward"):
            layer.backward(dout)
    return (counter.counts["forward"], counter.counts["backward"], counter.counts["inference"]), counter.assumed


def layer_table():
    """One row per layer: its launches alone, and its budget."""
    lines = [f"{'layer':<20}{'input':<16}{'forward':>8}{'backward':>10}{'inference':>11}    budget"]
    for name, (make_layer, shape, budget) in LAYER_BUDGETS.items():
        (forward, backward, inference), _ = layer_launches(make_layer, shape)
        lines.append(f"{name:<20}{'x'.join(map(str, shape)):<16}{forward:>8}{backward:>10}{inference:>11}    "
                     f"{'/'.join(map(str, budget))}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", metavar="PART", help="list where each launch of one part comes from "
                        "(a layer's name as in the table, 'loss + accuracy', 'optimiser' or 'loop')")
    parser.add_argument("--layers", action="store_true", help="each layer alone, against its budget")
    args = parser.parse_args(argv)
    if args.trace:
        return trace(args.trace)
    if args.layers:
        return print(layer_table())
    counts = count_launches()
    print(f"Kernel launches of the tutorial network, batch {BATCH}, as CuPy would make them "
          "(counted on NumPy; see this file's docstring)\n")
    print(table(counts, layer_names()))
    if counts["assumed"]:
        print(f"\n(counted as one launch each, not in FUNCTION_LAUNCHES: {', '.join(sorted(counts['assumed']))})")
    print(f"\nRESULT launches_per_step={sum(counts['step'].values())} "
          f"launches_per_inference_batch={sum(counts['inference'].values())}")


if __name__ == "__main__":
    main()
