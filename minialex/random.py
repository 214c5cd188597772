"""The run's random numbers: one seeded, counter-based generator (SplitMix64).

    from minialex import random
    random.set_seed(0)                     # like keras.utils.set_random_seed
    u = random.get_rng().random((64, 84))  # uniform [0, 1), on the active backend

The i-th number drawn is a fixed function of the seed and i, computed with array operations on the
active backend. So the same seed gives the same initial weights, dropout masks and shuffles on
NumPy and on CuPy, and the generator's whole state is two integers that a checkpoint can save.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager

import numpy

from . import backend

__all__ = ["Generator", "RowSliced", "bits_from", "get_rng", "set_seed", "using_rng"]

GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


class Generator:
    """A counter-based generator: SplitMix64 evaluated at positions ``position + arange(n)``.

    ``z = seed + (position + i + 1) * 0x9E3779B97F4A7C15`` (mod 2**64), then the SplitMix64 finaliser
    scrambles z. Every draw advances ``position`` by the number of values drawn, so the state is
    ``(seed, position)`` and the numbers depend neither on the backend nor on how draws are batched.
    """

    def __init__(self, seed: int = 0):
        if not isinstance(seed, (int, numpy.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = int(seed) & MASK64
        self.position = 0

    def get_state(self) -> dict:
        return {"seed": self.seed, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.seed = int(state["seed"]) & MASK64
        self.position = int(state["position"])

    def bits(self, shape, like=None) -> object:
        """uint64 random bits of the given shape, on the backend of the array ``like`` (default: the
        active backend)."""
        count = _size(shape)
        z = self.bits_at(self.position, count, like)
        self.position += count
        return z.reshape(shape)

    def bits_at(self, position, count, like=None):
        """The SplitMix64 values at positions ``position + 1`` ... ``position + count`` (no state change)."""
        return bits_from(self.start_at(position), count, like)

    def start_at(self, position) -> int:
        """z before the finaliser for the draw after ``position``: seed + (position + 1) * GOLDEN_GAMMA
        (mod 2**64); the i-th draw from there starts from that plus i * GOLDEN_GAMMA."""
        return (self.seed + (position + 1) * GOLDEN_GAMMA) & MASK64

    def reserve(self, shape) -> int:
        """Reserve the draws that ``bits(shape)`` would make, for code that computes them itself (the
        GPU's dropout kernel, ``minialex.kernels``): returns the ``start_at`` of the first, and the
        i-th of them is the finaliser of ``start + i * GOLDEN_GAMMA``. Moves on as ``bits`` would."""
        count = _size(shape)
        start = self.start_at(self.position)
        self.position += count
        return start

    def device_start(self, shape, like):
        """(base, offset): where a kernel's draws for ``shape`` start, ``base[0] + offset`` (mod 2**64) as
        ``reserve`` gives it. Here base is None and offset that start, a number; a generator whose draws
        start on the device (``minialex.step_values.StepDraws``) gives a device word and an offset from it."""
        return None, self.reserve(shape)

    @contextmanager
    def split_rows(self, shards, total):
        """Generators for row slices of a ``total``-row batch (``shards``: slices), one per shard.

        Each draws, for its rows, exactly what this generator would draw for the whole batch
        (``RowSliced``), whichever order the shards run in. On leaving the block this generator
        moves past the whole batch's draws, as if it had made them itself.
        """
        generators = [RowSliced(self, rows.start, rows.stop - rows.start, total) for rows in shards]
        yield generators
        ends = {generator.position for generator in generators}
        if len(ends) != 1:
            raise RuntimeError(f"the shards of one batch drew different amounts: positions {sorted(ends)}")
        self.position = ends.pop()

    def random(self, shape, dtype="float32", like=None):
        """Uniform numbers in [0, 1): 24 random bits for float32, 53 for float64 (on ``like``'s backend)."""
        xp = backend.xp() if like is None else backend.get_array_module(like)
        mantissa = 24 if numpy.dtype(dtype) == numpy.float32 else 53
        top_bits = self.bits(shape, like) >> xp.uint64(64 - mantissa)
        return top_bits.astype(dtype) * xp.asarray(2.0 ** -mantissa, dtype=dtype)

    def uniform(self, low, high, shape, dtype="float32"):
        """Uniform numbers in [low, high)."""
        xp = backend.xp()
        values = self.random(shape, dtype)
        values *= xp.asarray(high - low, dtype=dtype)
        values += xp.asarray(low, dtype=dtype)
        return values

    def permutation(self, n: int):
        """A random permutation of ``arange(n)`` (argsort of random keys), on the active backend."""
        return backend.xp().argsort(self.bits(n))


class RowSliced(Generator):
    """The numbers that rows [first, first + rows) of a ``total``-row batch would get from ``parent``.

    Each draw of shape (rows, ...) returns exactly that slice of what one draw of shape (total, ...)
    from the parent would return, and moves on as that draw would: so the shards' dropout masks,
    put together, are the whole batch's, bit for bit, whichever order the shards draw in. Rows are
    contiguous in a C-order array, so a shard's draws are one run of positions, starting
    ``first * per_row`` after the whole draw's first.
    """

    def __init__(self, parent: Generator, first: int, rows: int, total: int):
        super().__init__(parent.seed)
        self.set_state(parent.get_state())
        self.first, self.rows, self.total = first, rows, total

    def _own_run(self, shape):
        """(where this shard's run of draws starts, how many, how far the whole draw moves on)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or shape[0] != self.rows:
            raise ValueError(f"rows {self.first}..{self.first + self.rows - 1} of a batch draw arrays of shape "
                             f"({self.rows}, ...), not {shape}")
        per_row = _size(shape[1:])
        return self.position + self.first * per_row, self.rows * per_row, self.total * per_row

    def bits(self, shape, like=None) -> object:
        start, count, whole = self._own_run(shape)
        z = self.bits_at(start, count, like)
        self.position += whole
        return z.reshape(shape)

    def reserve(self, shape) -> int:
        start, _, whole = self._own_run(shape)
        self.position += whole
        return self.start_at(start)


def bits_from(start, count, like=None):
    """The SplitMix64 finaliser of ``start + i * GOLDEN_GAMMA`` (mod 2**64) for i < ``count``: the draws
    that start there, as uint64 on the backend of the array ``like`` (default: the active backend)."""
    xp = backend.xp() if like is None else backend.get_array_module(like)
    z = xp.arange(count, dtype=xp.uint64)
    z *= xp.uint64(GOLDEN_GAMMA)
    z += xp.uint64(start)
    z ^= z >> xp.uint64(30)
    z *= xp.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> xp.uint64(27)
    z *= xp.uint64(0x94D049BB133111EB)
    z ^= z >> xp.uint64(31)
    return z


def _size(shape) -> int:
    """The number of elements of an array of this shape (an int is a 1-D shape)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return int(numpy.prod(shape, dtype=numpy.int64))


def set_seed(seed: int) -> Generator:
    """Start the run's generator afresh from ``seed`` (like ``keras.utils.set_random_seed``)."""
    _run["rng"] = Generator(seed)
    return _run["rng"]


def get_rng() -> Generator:
    """The run's generator: initialisation, dropout masks and shuffling all draw from it.

    Inside ``using_rng(g)`` it is ``g`` instead, for that block only.
    """
    return _override.get() or _run["rng"]


@contextmanager
def using_rng(generator: Generator):
    """Within the block, ``get_rng()`` returns ``generator``.

    The choice lives in the current context (``contextvars``), so code running elsewhere at the
    same time (another thread, say) keeps drawing from its own generator.
    """
    token = _override.set(generator)
    try:
        yield generator
    finally:
        _override.reset(token)


_run = {"rng": Generator(0)}
_override: contextvars.ContextVar = contextvars.ContextVar("minialex_rng", default=None)
