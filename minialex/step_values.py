"""What changes from one training step to the next, in one small buffer on the device that the kernels read.

A step on a GPU launches the same kernels on the same arrays every time, except for a few numbers
that the host works out per step: Adam's step size alpha_t (from its iteration count and learning
rate), where the dropout layers' random draws start (the run's generator moves on every step), and
the step's place in the epoch (where its loss is recorded). Passed to the kernels as arguments, those
numbers would be frozen into a CUDA graph (``minialex.graphs``) at its capture, and every replay would
reuse the first step's. So they live here instead, in ``StepValues``: one buffer of ``SLOTS`` 8-byte
words, written on the host and copied to the device once a step, before the step's kernels run; the
kernels take a pointer to their word (``view(name)``) and read it when they run, replayed or not.

``StepDraws`` is the run's generator as a step's kernels see it: their draws start at the word
``draws_start`` (the generator's next draw, written by the host each step), each dropout layer at a
fixed offset from it that the step's Python works out in the same order every step.

On NumPy there is no device: the host buffer is the buffer, and nothing is copied (the CPU's fit loop
does not use it: it passes the numbers themselves, ``minialex.training``).
"""
from __future__ import annotations

import math

import numpy

from . import backend, random

SLOTS = ("step", "iteration", "learning_rate", "alpha", "draws_start")
FLOATS = ("learning_rate", "alpha")        # float64 bit patterns; the others are unsigned 64-bit integers


class StepValues:
    """One small buffer of per-step values: ``values[name] = number`` on the host, ``upload()`` once a
    step (one copy), ``view(name)`` a 0-d device array the kernels read."""

    def __init__(self, like):
        """On the backend of the array ``like``."""
        xp = backend.get_array_module(like)
        self.host = numpy.zeros(len(SLOTS), dtype=numpy.uint64)
        self.device = self.host if xp is numpy else xp.zeros(len(SLOTS), dtype=xp.uint64)
        self._views = {}

    def __setitem__(self, name, value):
        if name in FLOATS:
            self.host.view(numpy.float64)[SLOTS.index(name)] = value
        else:
            self.host[SLOTS.index(name)] = value

    def __getitem__(self, name):
        if name in FLOATS:
            return float(self.host.view(numpy.float64)[SLOTS.index(name)])
        return int(self.host[SLOTS.index(name)])

    def upload(self):
        """Copy the host's values to the device: one copy, ordered before the kernels launched after it."""
        if self.device is not self.host:
            self.device.set(self.host)

    def view(self, name):
        """The 0-d device array (uint64, or float64 for ``FLOATS``) of one value: its address never changes."""
        if name not in self._views:
            k = SLOTS.index(name)
            word = self.device[k:k + 1]
            self._views[name] = (word.view(numpy.float64) if name in FLOATS else word).reshape(())
        return self._views[name]


class StepDraws(random.Generator):
    """The run's generator as one step's kernels draw from it: from the device word ``draws_start``.

    ``start_step(generator)`` writes where ``generator``'s next draw starts into that word; each
    ``device_start(shape)`` then gives (the word, this draw's offset from it) and moves on by the
    draw's size, as the generator itself would, in the same order every step. ``count`` is how far the
    step has drawn: the driver moves the run's generator on by it once the step has run. ``bits``
    (what a kernel's NumPy half draws with) reads the word and draws the very same numbers.
    """

    def __init__(self, values: StepValues):
        super().__init__(0)
        self.values, self.count = values, 0

    def start_step(self, generator):
        self.values["draws_start"] = generator.start_at(generator.position)
        self.count = 0

    def device_start(self, shape, like):
        offset, self.count = self.count, self.count + _size(shape)
        return self.values.view("draws_start"), (offset * random.GOLDEN_GAMMA) & random.MASK64

    def reserve(self, shape) -> int:
        raise TypeError("a step's draws start on the device: ask device_start, not reserve")

    def bits(self, shape, like=None):
        base, offset = self.device_start(shape, like)
        start = (int(base) + offset) & random.MASK64          # a device read: this runs as a kernel would
        return random.bits_from(start, _size(shape), like).reshape(shape)


def _size(shape) -> int:
    return math.prod((shape,) if isinstance(shape, int) else shape)
