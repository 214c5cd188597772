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

__all__ = ["Generator", "get_rng", "set_seed", "using_rng"]

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

    def bits(self, shape) -> object:
        """uint64 random bits of the given shape, on the active backend."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = int(numpy.prod(shape, dtype=numpy.int64))
        z = self.bits_at(self.position, count)
        self.position += count
        return z.reshape(shape)

    def bits_at(self, position, count):
        """The SplitMix64 values at positions ``position + 1`` ... ``position + count`` (no state change)."""
        xp = backend.xp()
        start = self.start_at(position)
        z = xp.arange(count, dtype=xp.uint64)
        z *= xp.uint64(GOLDEN_GAMMA)
        z += xp.uint64(start)
        z ^= z >> xp.uint64(30)
        z *= xp.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> xp.uint64(27)
        z *= xp.uint64(0x94D049BB133111EB)
        z ^= z >> xp.uint64(31)
        return z

    def start_at(self, position) -> int:
        """z before the finaliser for the draw after ``position``: seed + (position + 1) * GOLDEN_GAMMA
        (mod 2**64); the i-th draw from there starts from that plus i * GOLDEN_GAMMA."""
        return (self.seed + (position + 1) * GOLDEN_GAMMA) & MASK64

    def take(self, count: int) -> int:
        """Reserve the next ``count`` draws for code that computes them itself (the GPU's dropout
        kernel, ``minialex.kernels``): returns their ``start_at`` and moves on as ``bits`` would."""
        start = self.start_at(self.position)
        self.position += count
        return start

    def random(self, shape, dtype="float32"):
        """Uniform numbers in [0, 1): 24 random bits for float32, 53 for float64."""
        xp = backend.xp()
        mantissa = 24 if numpy.dtype(dtype) == numpy.float32 else 53
        top_bits = self.bits(shape) >> xp.uint64(64 - mantissa)
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
