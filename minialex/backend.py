"""The one place that knows NumPy from CuPy.

Everything else asks this module for its array module (``xp``), so each line of layer code
runs on the CPU through NumPy and on an NVIDIA GPU through CuPy::

    from minialex import backend
    backend.set_backend("cupy")          # or "numpy", or "auto"
    with backend.set_backend("numpy"):   # ...or only for a block
        ...
    xp = backend.get_array_module(x)     # the module that owns x
    with backend.using_module(stand_in, "counting"):   # a stand-in for CuPy on the CPU (see there)
        ...

The starting backend comes from ``$MINIALEX_BACKEND`` (default ``numpy``).

Random numbers live in ``minialex.random``, CPU threads in ``minialex.parallel``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys

import numpy

__all__ = [
    "BackendError", "CudaLibrariesMissing", "CupyBroken", "as_strided", "available_backends", "describe_device",
    "fuse", "get_array_module", "get_backend", "missing_cuda_libraries", "on_cpu", "set_backend", "synchronize",
    "to_device", "to_numpy", "using_module", "xp",
]

BACKENDS = ("numpy", "cupy", "auto")
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version: pip install 'minialex[cuda12]' (CUDA 12) "
    "or pip install 'minialex[cuda13]' (CUDA 13)"
)


class BackendError(RuntimeError):
    """An unknown backend name, or a backend this machine cannot run."""


class CudaLibrariesMissing(BackendError):
    """CuPy imports and a GPU answers, but CuPy cannot load a CUDA library minialex needs."""


class CupyBroken(BackendError):
    """CuPy is installed but its import fails (a cache folder it cannot write, a broken install...)."""


def _import_cupy():
    """Return the cupy module if it imports, a GPU answers and CuPy loads the CUDA libraries this code
    needs (``missing_cuda_libraries``); else raise BackendError (CupyBroken when the import of an
    installed CuPy fails, CudaLibrariesMissing for the libraries)."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendError(f"the 'cupy' backend needs CuPy, which is not installed ({exc}); "
                           f"{CUPY_INSTALL_HINT}") from None
    except Exception as exc:    # installed, but its import fails: say what failed, whatever it raised
        raise CupyBroken(_broken(exc)) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own error types
        raise BackendError(f"CuPy is installed but no CUDA device answers ({exc}); "
                           "run on a machine with an NVIDIA GPU and driver, or use --backend numpy") from None
    if count < 1:
        raise BackendError("CuPy is installed but no CUDA device is visible; use --backend numpy")
    missing = missing_cuda_libraries(cupy)
    if missing:
        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
        install = (f"pip install 'minialex[cuda{major}]' installs CuPy with its CUDA {major} libraries"
                   if major in (12, 13) else CUPY_INSTALL_HINT)
        raise CudaLibrariesMissing(f"CuPy {cupy.__version__} sees a GPU but cannot load {' or '.join(missing)}; "
                                   f"{install}, or use --backend numpy")
    return cupy


def _broken(exc) -> str:
    """What to say when an installed CuPy fails to import with ``exc``."""
    fix = "fix what it names"
    if isinstance(exc, PermissionError):
        fix += " (a folder it cannot write: set CUPY_CACHE_DIR to one it can, for its kernel cache)"
    return (f"CuPy is installed but its import fails ({type(exc).__name__}: {' '.join(str(exc).split())}); {fix}, "
            f"or use --backend numpy")


def missing_cuda_libraries(cupy) -> list[str]:
    """What CuPy cannot load, each with CuPy's reason: NVRTC (which compiles every kernel) and cuBLAS
    (the matrix products) come with the CUDA toolkit or its pip wheels, not with the driver."""
    missing = []
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # CuPy's loader raises its own error types
        missing.append(f"NVRTC, the CUDA compiler ({' '.join(str(exc).split())})")
    try:
        cupy.cuda.cublas           # imported on first use: fails if the library does not load
    except Exception as exc:
        missing.append(f"cuBLAS ({' '.join(str(exc).split())})")
    return missing


def cupy_available() -> bool:
    """True where CuPy imports, a CUDA device answers and CuPy loads NVRTC and cuBLAS."""
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
    try:
        return "cupy", _import_cupy()
    except (CudaLibrariesMissing, CupyBroken) as exc:   # CuPy there but not working: say so, in one line
        print(f"minialex: backend 'auto' uses NumPy: {exc}", file=sys.stderr)
    except BackendError:     # no CuPy, or no GPU: NumPy, nothing to say
        pass
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
    """Switch the active backend to 'numpy', 'cupy' or 'auto' (CuPy where a GPU answers and CuPy loads
    its CUDA libraries; else NumPy, saying why in one line on stderr when CuPy is there but fails: its
    import, or the libraries it needs).

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
    """The module that owns the arrays: cupy if any is a CuPy array, the stand-in of ``using_module``
    if any is its ``ndarray``, else numpy."""
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            return sys.modules["cupy"]      # a CuPy array exists, so cupy is imported: no driver query
    stand_in = _state["stand_in"]
    if stand_in is not None and any(isinstance(array, stand_in.ndarray) for array in arrays):
        return stand_in
    return numpy


@contextlib.contextmanager
def using_module(module, name: str):
    """Within the block, ``module`` stands in for CuPy: ``xp()`` is ``module``, ``get_backend()`` says
    ``name``, and ``get_array_module`` returns ``module`` for arrays of its type ``module.ndarray``.

    ``name`` should be neither 'numpy' nor 'cupy': code then takes its GPU path (``on_cpu`` is false
    for the stand-in's arrays), asks ``module.fuse(function)`` for what ``backend.fuse`` fuses and
    ``module.run_kernel(kernel, *args)`` for a ``minialex.kernels.Kernel``, and runs them on the CPU.
    The launch counter (``minialex.stand_in``) is such a module:
    NumPy arrays that count what CuPy would launch. On exit the previous backend comes back. Yields
    ``module``.
    """
    previous = dict(_state)
    _state.update(name=name, xp=module, stand_in=module)
    try:
        yield module
    finally:
        _state.update(previous)


def on_cpu(*arrays) -> bool:
    """True if the arrays are NumPy's. Where a GPU path differs from the CPU's (one fused kernel where
    NumPy takes several steps), ``minialex.kernels.Kernel`` asks this to choose."""
    return get_array_module(*arrays) is numpy


def fuse(function):
    """``function``, elementwise maths on arrays, as ONE kernel on a GPU; on NumPy, ``function`` itself.

    On CuPy each operation is a kernel launch, which costs the host more time than a small network's
    arithmetic; ``cupy.fuse`` compiles the whole function into one. Write it with operators and ufuncs
    on its arguments only (no branching on them, at most one reduction, at the end). On NumPy it runs
    line by line, exactly as written. Another array module (the launch counter's stand-in,
    ``minialex.stand_in``) is asked for its own ``fuse``.
    """
    compiled = {}

    @functools.wraps(function)
    def call(*args):
        module = get_array_module(*args)
        if module is numpy:
            return function(*args)
        if module not in compiled:
            compiled[module] = module.fuse(function)
        return compiled[module](*args)

    return call


def to_device(array, dtype=None):
    """Move an array (NumPy, CuPy or a list) onto the active backend, optionally casting."""
    return _state_xp().asarray(array, dtype=dtype)


def to_numpy(array):
    """Bring an array back to the host as a NumPy array (no copy if it already is one); a device array
    (CuPy's, or a stand-in's) comes back through its ``get()``."""
    stand_in = _state["stand_in"]
    if type(array).__module__.startswith("cupy") or (stand_in is not None and isinstance(array, stand_in.ndarray)):
        return array.get()
    return numpy.asarray(array)


def as_strided(array, shape, strides):
    """A strided view of ``array`` (NumPy's or CuPy's ``as_strided``, whichever owns it)."""
    module = get_array_module(array)
    return module.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def synchronize():
    """Wait for the device to finish queued work, on every stream (a no-op on NumPy); use it before timing."""
    if get_backend() == "cupy":
        _state["xp"].cuda.Device().synchronize()


def describe_device() -> str:
    """A line saying what runs the arrays, e.g. 'numpy on the CPU' or 'cupy on NVIDIA H200'."""
    if get_backend() == "cupy":
        cupy = _state["xp"]
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__} on {name} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})"
    return f"numpy {numpy.__version__} on the CPU ({cpu_model()}, {os.cpu_count()} cores)"


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` shows it (benchmark figures name it)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


_state = {"name": None, "xp": None, "stand_in": None}


def _ensure_backend():
    """Pick the starting backend from $MINIALEX_BACKEND the first time one is needed."""
    if _state["name"] is None:
        name = os.environ.get("MINIALEX_BACKEND") or "numpy"     # set but empty: as unset
        try:
            _state["name"], _state["xp"] = _resolve(name)
        except BackendError as exc:
            raise BackendError(f"MINIALEX_BACKEND={name}: {exc} (or unset it)") from None


def _state_xp():
    _ensure_backend()
    return _state["xp"]
