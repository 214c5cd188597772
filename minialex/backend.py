"""The one place that knows NumPy from CuPy.

Everything else asks this module for its array module (``xp``), so each line of layer code
runs on the CPU through NumPy and on an NVIDIA GPU through CuPy::

    from minialex import backend
    backend.set_backend("cupy")          # or "numpy", or "auto"
    with backend.set_backend("numpy"):   # ...or only for a block
        ...
    xp = backend.get_array_module(x)     # the module that owns x

The starting backend comes from ``$MINIALEX_BACKEND`` (default ``numpy``).

Random numbers come from one seeded :class:`Generator` (``backend.set_seed``,
``backend.get_rng``). It is counter-based (SplitMix64): the i-th number drawn is a fixed
function of the seed and i, computed with array ops on the active backend. So the same seed gives
the same run, on NumPy and CuPy alike, and the generator's whole state is two integers that a
checkpoint can save.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy

__all__ = [
    "BackendError", "BatchShard", "Generator", "as_strided", "available_backends", "describe_device",
    "get_array_module", "get_backend", "get_rng", "set_backend", "set_seed",
    "synchronize", "to_device", "to_numpy", "using_rng", "xp",
]

BACKENDS = ("numpy", "cupy", "auto")
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version: pip install 'minialex[cuda12]' (CUDA 12) "
    "or pip install 'minialex[cuda13]' (CUDA 13)"
)


class BackendError(RuntimeError):
    """An unknown backend name, or a backend this machine cannot run."""


def _import_cupy():
    """Return the cupy module if it imports and a GPU answers; else raise BackendError."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendError(f"the 'cupy' backend needs CuPy, which is not installed ({exc}); "
                           f"{CUPY_INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own error types
        raise BackendError(f"CuPy is installed but no CUDA device answers ({exc}); "
                           "run on a machine with an NVIDIA GPU and driver, or use --backend numpy") from None
    if count < 1:
        raise BackendError("CuPy is installed but no CUDA device is visible; use --backend numpy")
    return cupy


def cupy_available() -> bool:
    """True where CuPy imports and a CUDA device answers."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def available_backends() -> list[str]:
    """The concrete backends this machine can run, e.g. ``['numpy']`` or ``['numpy', 'cupy']``."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


def _resolve(name: str):
    """Map a backend name to (concrete name, array module)."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    name = name.lower()
    if name == "numpy":
        return "numpy", numpy
    if name == "cupy":
        return "cupy", _import_cupy()
    if cupy_available():
        return "cupy", _import_cupy()
    return "numpy", numpy


class _BackendScope:
    """What set_backend returns: the switch has already happened; ``with`` undoes it on exit."""

    def __init__(self, previous):
        self._previous = previous

    def __enter__(self):
        return get_backend()

    def __exit__(self, *exc_info):
        _state["name"], _state["xp"] = self._previous
        return False


def set_backend(name: str) -> _BackendScope:
    """Switch the active backend to 'numpy', 'cupy' or 'auto' (CuPy where a GPU answers).

    Usable as a plain call or as a context manager that restores the previous backend.
    """
    resolved = _resolve(name)
    previous = (_state["name"], _state["xp"])
    _state["name"], _state["xp"] = resolved
    return _BackendScope(previous)


def get_backend() -> str:
    """The active backend's name: 'numpy' or 'cupy'."""
    _ensure_backend()
    return _state["name"]


def xp():
    """The active backend's array module (numpy or cupy)."""
    return _state_xp()


def get_array_module(*arrays):
    """The module that owns the arrays: cupy if any is a CuPy array, else numpy."""
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            return _import_cupy()
    return numpy


def to_device(array, dtype=None):
    """Move an array (NumPy, CuPy or a list) onto the active backend, optionally casting."""
    return _state_xp().asarray(array, dtype=dtype)


def to_numpy(array):
    """Bring an array back to the host as a NumPy array (no copy if it already is one)."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return numpy.asarray(array)


def as_strided(array, shape, strides):
    """A strided view of ``array`` (NumPy's or CuPy's ``as_strided``, whichever owns it)."""
    module = get_array_module(array)
    return module.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def synchronize():
    """Wait for the device to finish queued work (a no-op on NumPy); use it before timing."""
    if get_backend() == "cupy":
        _state["xp"].cuda.get_current_stream().synchronize()


def cpu_workers() -> int:
    """How many threads CPU work may use: as many as BLAS uses (it follows OMP_NUM_THREADS /
    OPENBLAS_NUM_THREADS, else one per core, and any ``threadpoolctl`` limit in force); 1 on a GPU,
    where one queue does the work."""
    if get_backend() != "numpy":
        return 1
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return max(counts) if counts else 1


def single_threaded_blas():
    """A context in which BLAS runs on the calling thread only (for work split across threads)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def cpu_thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, started on first use and kept for later calls."""
    pools = _cpu["pools"]
    if workers not in pools:
        pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="minialex")
    return pools[workers]


def _blas_controller():
    """threadpoolctl's handle on NumPy's BLAS, found once: finding it takes ~0.4 ms, asking it µs."""
    if _cpu["blas"] is None:
        from threadpoolctl import ThreadpoolController

        _cpu["blas"] = ThreadpoolController()
    return _cpu["blas"]


_cpu: dict = {"blas": None, "pools": {}}


def describe_device() -> str:
    """A line saying what runs the arrays, e.g. 'numpy on the CPU' or 'cupy on NVIDIA H200'."""
    if get_backend() == "cupy":
        cupy = _state["xp"]
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__} on {name} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})"
    return f"numpy {numpy.__version__} on the CPU ({cpu_workers()} BLAS threads)"


# --------------------------------------------------------------------------------------------
# Random numbers


_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class Generator:
    """A counter-based generator: SplitMix64 evaluated at positions ``position + arange(n)``.

    ``z = seed + (position + i + 1) * 0x9E3779B97F4A7C15`` (mod 2**64), then the SplitMix64 finaliser
    scrambles z. Every draw advances ``position`` by the number of values drawn, so the state is
    ``(seed, position)`` and the numbers depend neither on the backend nor on how draws are batched.
    """

    def __init__(self, seed: int = 0):
        if not isinstance(seed, (int, numpy.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = int(seed) & _MASK64
        self.position = 0

    def get_state(self) -> dict:
        return {"seed": self.seed, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.seed = int(state["seed"]) & _MASK64
        self.position = int(state["position"])

    def bits(self, shape) -> object:
        """uint64 random bits of the given shape, on the active backend."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = int(numpy.prod(shape, dtype=numpy.int64))
        z = self._bits_at(self.position, count)
        self.position += count
        return z.reshape(shape)

    def _bits_at(self, position, count):
        """The SplitMix64 values at positions ``position + 1`` ... ``position + count``."""
        module = _state_xp()
        start = (self.seed + (position + 1) * _GOLDEN_GAMMA) & _MASK64
        z = module.arange(count, dtype=module.uint64)
        z *= module.uint64(_GOLDEN_GAMMA)
        z += module.uint64(start)
        z ^= z >> module.uint64(30)
        z *= module.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> module.uint64(27)
        z *= module.uint64(0x94D049BB133111EB)
        z ^= z >> module.uint64(31)
        return z

    def random(self, shape, dtype="float32"):
        """Uniform numbers in [0, 1): 24 random bits for float32, 53 for float64."""
        module = _state_xp()
        mantissa = 24 if numpy.dtype(dtype) == numpy.float32 else 53
        top_bits = self.bits(shape) >> module.uint64(64 - mantissa)
        return top_bits.astype(dtype) * module.asarray(2.0 ** -mantissa, dtype=dtype)

    def uniform(self, low, high, shape, dtype="float32"):
        """Uniform numbers in [low, high)."""
        module = _state_xp()
        values = self.random(shape, dtype)
        values *= module.asarray(high - low, dtype=dtype)
        values += module.asarray(low, dtype=dtype)
        return values

    def permutation(self, n: int):
        """A random permutation of ``arange(n)`` (argsort of random keys), on the active backend."""
        return _state_xp().argsort(self.bits(n))


class BatchShard(Generator):
    """The numbers that rows [first, first + rows) of a ``total``-row batch would get.

    A batch split into shards that run on different threads (a data-parallel training step) draws
    per shard, in any order. Each draw of shape (rows, ...) here returns exactly the slice of what one
    draw of shape (total, ...) from the parent would return, and moves on as that draw would: so the
    shards' dropout masks, put together, are the whole batch's, bit for bit.
    """

    def __init__(self, parent: Generator, first: int, rows: int, total: int):
        super().__init__(parent.seed)
        self.position = parent.position
        self.first, self.rows, self.total = first, rows, total

    def bits(self, shape) -> object:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or shape[0] != self.rows:
            raise ValueError(f"a shard of {self.rows} rows draws arrays of shape ({self.rows}, ...), "
                             f"not {shape}")
        per_row = int(numpy.prod(shape[1:], dtype=numpy.int64))
        z = self._bits_at(self.position + self.first * per_row, self.rows * per_row)
        self.position += self.total * per_row
        return z.reshape(shape)


def set_seed(seed: int) -> Generator:
    """Start the run's generator afresh from ``seed`` (like ``keras.utils.set_random_seed``)."""
    _state["rng"] = Generator(seed)
    return _state["rng"]


def get_rng() -> Generator:
    """The run's generator: initialisation, dropout masks and shuffling all draw from it.

    Inside ``using_rng(g)`` it is ``g``, on that thread only.
    """
    return getattr(_thread_local, "rng", None) or _state["rng"]


@contextmanager
def using_rng(generator: Generator):
    """Within the block, ``get_rng()`` on this thread returns ``generator`` (a shard's, say)."""
    previous = getattr(_thread_local, "rng", None)
    _thread_local.rng = generator
    try:
        yield generator
    finally:
        _thread_local.rng = previous


_thread_local = threading.local()
_state = {"name": None, "xp": None, "rng": Generator(0)}


def _ensure_backend():
    """Pick the starting backend from $MINIALEX_BACKEND the first time one is needed."""
    if _state["name"] is None:
        _state["name"], _state["xp"] = _resolve(os.environ.get("MINIALEX_BACKEND", "numpy"))


def _state_xp():
    _ensure_backend()
    return _state["xp"]
