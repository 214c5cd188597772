"""The GPU's matrix products: cuBLAS called directly, so that a CUDA graph can capture them.

CuPy's own products (``a @ b``, ``cupy.matmul``) go through cuBLAS too, but every one of CuPy's cuBLAS
calls first sets its handle's stream (``cublasSetStream``), and CuPy refuses that while a stream is
being captured: ``cupy_backends/cuda/libs/cublas.pyx`` raises NotImplementedError ("calling cuBLAS
API during stream capture is currently unsupported", CuPy issue #6290). So the GPU halves of
minialex's products (``kernels.matmul_cuda``) call ``cublasGemmEx`` themselves, through ctypes, on
the very library CuPy loaded, with a handle of minialex's own for each stream:

- the handle is made, and its stream and workspace are set, the first time a product runs on that
  stream, which is never inside a capture (``minialex.graphs`` runs a step eagerly before it captures
  one). Nothing else ever calls ``cublasSetStream`` on it, which would reset its workspace;
- its workspace is a buffer of ours (``WORKSPACE_BYTES``, set with ``cublasSetWorkspace``), so cuBLAS
  never allocates one inside a capture;
- eager steps and captured ones make the same call on the same stream with the same handle and
  workspace, so cuBLAS's heuristics pick the same algorithm for both (cuBLAS promises the same bits
  run after run on one GPU only for one stream and one configuration).

Arithmetic is float32 (``CUBLAS_COMPUTE_32F``), or float64 for float64 arrays; ``CUPY_TF32=1``, CuPy's
own switch, opts float32 products into TF32 (``CUBLAS_COMPUTE_32F_FAST_TF32``), as it does CuPy's.

cuBLAS reads matrices column by column and minialex's arrays are row by row, so ``C = A @ B`` is asked
of it as ``C^T = B^T A^T``, each operand as it lies in memory (``gemm_arguments``, tested on the CPU
against a column-major product written in NumPy: tests/test_cublas.py).
"""
from __future__ import annotations

import ctypes
import os
import re

WORKSPACE_BYTES = 32 << 20          # what NVIDIA advises for Hopper (4 MiB does for older cards)
OP_N, OP_T = 0, 1                   # cublasOperation_t
CUDA_R_32F, CUDA_R_64F = 0, 1       # cudaDataType_t
COMPUTE_32F, COMPUTE_32F_FAST_TF32, COMPUTE_64F = 68, 77, 70      # cublasComputeType_t
GEMM_DEFAULT = -1                   # cublasGemmAlgo_t: cuBLAS's heuristics choose


def gemm_arguments(a, b, c):
    """cublasGemmEx's (transa, transb, m, n, k, lda, ldb, ldc) for the row-major product c = a @ b, each of
    a, b, c given as (shape, strides in elements) of a 2-D array; cuBLAS is handed b first, then a
    (c^T = b^T a^T, column-major). Returns None where an operand is not laid out as cuBLAS reads
    matrices (one unit stride; c must be row by row): such an operand is copied first."""
    (M, K), (_, N) = a[0], b[0]
    first, second = _operand(b), _operand(a)          # b^T is (N, K) column-major: b's rows, as laid out
    if first is None or second is None or c[0] != (M, N) or not (c[1][1] == 1 or N == 1) or c[1][0] < max(1, N):
        return None
    return first[0], second[0], N, M, K, first[1], second[1], max(1, c[1][0])


def _operand(matrix):
    """(op, ld) that give cuBLAS the transpose of this row-major (rows, columns) matrix, or None."""
    (rows, columns), (row_stride, column_stride) = matrix
    if column_stride == 1 or columns == 1:            # row by row: column-major, it is the transpose
        ld = row_stride if rows > 1 else columns
        return (OP_N, ld) if ld >= max(1, columns) else None
    if row_stride == 1 or rows == 1:                  # column by column: itself, so transpose it
        ld = column_stride if columns > 1 else rows
        return (OP_T, ld) if ld >= max(1, rows) else None
    return None


def matmul(cupy, a, b, out=None):
    """a @ b (2-D, float32 or float64) on the current stream, by one cublasGemmEx; into ``out`` if given
    (C-contiguous, a's dtype). ``cupy`` is the array module: CuPy, or a stand-in that brings a ``gemm``
    of its own (the tests' column-major product in NumPy)."""
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = cupy.empty((M, N), dtype=a.dtype)
    arguments = gemm_arguments(*(_layout(x) for x in (a, b, out)))
    if arguments is None:
        if not out.flags.c_contiguous:
            raise ValueError(f"matmul writes into C-contiguous arrays only, got strides {out.strides}")
        a, b = (x if _operand(_layout(x)) else cupy.ascontiguousarray(x) for x in (a, b))
        arguments = gemm_arguments(*(_layout(x) for x in (a, b, out)))
    if M == 0 or N == 0:
        return out
    if K == 0:
        out.fill(0)
        return out
    gemm = getattr(cupy, "gemm", None) or _cublas_gemm
    gemm(*arguments, _pointer(b), _pointer(a), _pointer(out), a.dtype)
    return out


def _layout(array):
    """(shape, strides in elements) of a 2-D array."""
    return tuple(array.shape), tuple(s // array.itemsize for s in array.strides)


def _pointer(array):
    data = array.data
    return data.ptr if hasattr(data, "ptr") else array.ctypes.data


# ---- cuBLAS itself --------------------------------------------------------------------------------

_state: dict = {"library": None, "handles": {}}


def _cublas_gemm(transa, transb, m, n, k, lda, ldb, ldc, a_ptr, b_ptr, c_ptr, dtype):
    """cublasGemmEx on the current stream's handle: C = op(A) op(B), alpha 1, beta 0, column-major."""
    import cupy
    import numpy

    library = _library()
    handle = _handle(cupy)
    double = numpy.dtype(dtype) == numpy.float64
    scalar = ctypes.c_double if double else ctypes.c_float
    data_type = CUDA_R_64F if double else CUDA_R_32F
    tf32 = int(os.environ.get("CUPY_TF32", "0") or 0) > 0
    compute = COMPUTE_64F if double else (COMPUTE_32F_FAST_TF32 if tf32 else COMPUTE_32F)
    one, zero = scalar(1.0), scalar(0.0)
    _check(library.cublasGemmEx(
        handle, transa, transb, m, n, k, ctypes.byref(one), ctypes.c_void_p(a_ptr), data_type, lda,
        ctypes.c_void_p(b_ptr), data_type, ldb, ctypes.byref(zero), ctypes.c_void_p(c_ptr), data_type, ldc,
        compute, GEMM_DEFAULT), "cublasGemmEx")


def _handle(cupy):
    """This device's and the current stream's handle of ours: made, and given its stream and workspace,
    on first use (outside any capture: a step runs eagerly before it is captured)."""
    stream = cupy.cuda.get_current_stream()
    key = (cupy.cuda.Device().id, stream.ptr)
    if key not in _state["handles"]:
        if stream.ptr not in (0, 1) and stream.is_capturing():
            raise RuntimeError("minialex's cuBLAS handle for this stream would be made inside a capture; "
                               "run one step eagerly on the stream first")
        library = _library()
        handle = ctypes.c_void_p()
        _check(library.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        _check(library.cublasSetStream_v2(handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)       # after the stream: that resets it
        _check(library.cublasSetWorkspace_v2(handle, ctypes.c_void_p(workspace.data.ptr),
                                             ctypes.c_size_t(WORKSPACE_BYTES)), "cublasSetWorkspace")
        _state["handles"][key] = (handle, workspace, stream)       # the stream and workspace live as long
    return _state["handles"][key][0]


def _library():
    """The cuBLAS CuPy loaded (libcublas.so.12 or .13), found in this process's memory map; ctypes
    argument types set for the calls made here."""
    if _state["library"] is None:
        import cupy_backends.cuda.libs.cublas  # noqa: F401  (loads the library CuPy links against)

        library = ctypes.CDLL(loaded_library("libcublas.so"))
        void, size, integer = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        library.cublasGemmEx.argtypes = [void, integer, integer, integer, integer, integer, void, void, integer,
                                         integer, void, integer, integer, void, void, integer, integer, integer,
                                         integer]
        library.cublasSetStream_v2.argtypes = [void, void]
        library.cublasSetWorkspace_v2.argtypes = [void, void, size]
        library.cublasGetStatusString.restype = ctypes.c_char_p
        _state["library"] = library
    return _state["library"]


def loaded_library(prefix):
    """The path of the shared library this process loaded whose file name starts with ``prefix``
    (e.g. 'libcublas.so'), from /proc/self/maps; else ``prefix`` itself, for the loader to find."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if re.fullmatch(re.escape(prefix) + r"(\.\d+)*", os.path.basename(path)):
                    return path
    except OSError:
        pass
    return prefix


def _check(status, call):
    if status != 0:
        reason = _library().cublasGetStatusString(status)
        raise RuntimeError(f"{call} failed: cuBLAS status {status} ({reason.decode() if reason else '?'})")
