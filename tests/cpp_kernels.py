"""The kernels' CUDA halves compiled as plain C++ for the CPU: a stand-in for ``cupy.ElementwiseKernel``.

``CPP_CUPY`` is just enough of the cupy module for the CUDA halves of ``minialex.kernels``: NumPy
arrays (``empty``, matrix products and sums are NumPy's), and an ``ElementwiseKernel`` that compiles
the kernel's operation with g++ as a loop over ``i``: non-raw arrays bound to their i-th element
(inputs broadcast to the outputs' shape first, as CuPy broadcasts them), raw ones indexed freely (the
arrays are C-contiguous, so a flat index is an offset, as CuPy's CArray makes it). Each library is
built in a temporary folder that is gone once it is loaded. Reductions (``cupy.ReductionKernel``)
are not here: those halves run on a GPU only. Matrix products (``minialex.cublas.matmul``, cuBLAS on a
GPU) get ``gemm``: cuBLAS's column-major contract written in NumPy over the arrays' memory, so that
the arguments minialex hands cuBLAS (which operand, transposed or not, leading dimensions) are tested.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CTYPES = {"int32": "int", "int64": "long long", "uint64": "unsigned long long", "float32": "float",
          "float64": "double"}


def have_compiler() -> bool:
    return shutil.which("g++") is not None


class CppElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name):
        self.params = [p.split() for p in (in_params + "," + out_params).split(",")]   # [("raw",) type, name]
        self.operation, self.libraries = operation, {}

    def _library(self, dtype, is_array):
        """The compiled loop for T = dtype, with the parameters that are arrays (not scalars) marked."""
        key = (dtype, is_array)
        if key not in self.libraries:
            args, binds = ["ptrdiff_t _n"], []
            for words, array in zip(self.params, is_array):
                kind, name = words[-2], words[-1]
                c = CTYPES[dtype] if kind == "T" else CTYPES[kind]
                if words[0] == "raw":
                    args.append(f"{c}* {name}")
                elif array:
                    args.append(f"{c}* _raw_{name}")
                    binds.append(f"{c}& {name} = _raw_{name}[i];")
                else:
                    args.append(f"{c} {name}")
            source = (f"#include <cmath>\n#include <cstddef>\n#include <algorithm>\nusing namespace std;\n"
                      f"typedef {CTYPES[dtype]} T;\nextern \"C\" void run({', '.join(args)}) {{\n"
                      f"for (ptrdiff_t i = 0; i < _n; ++i) {{ {' '.join(binds)}\n{self.operation}\n}} }}\n")
            with tempfile.TemporaryDirectory(prefix="minialex_cpp_") as folder:
                (Path(folder) / "k.cpp").write_text(source)
                subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", f"{folder}/k.so", f"{folder}/k.cpp"],
                               check=True, capture_output=True)
                self.libraries[key] = ctypes.CDLL(f"{folder}/k.so")     # loaded: the file may go
        return self.libraries[key]

    def __call__(self, *args):
        assert len(args) == len(self.params), "give every input and every output"
        dtype = next(str(a.dtype) for words, a in zip(self.params, args) if words[-2] == "T" and hasattr(a, "dtype"))
        looped = [a for words, a in zip(self.params, args) if isinstance(a, np.ndarray) and words[0] != "raw"]
        shape = np.broadcast_shapes(*(a.shape for a in looped)) if looped else ()
        values, keep = [], []
        for words, a in zip(self.params, args):
            if isinstance(a, np.ndarray):
                if words[0] != "raw" and a.shape != shape:        # an input broadcast, as CuPy does
                    a = np.ascontiguousarray(np.broadcast_to(a, shape))
                assert a.flags.c_contiguous
                keep.append(a)
                values.append(ctypes.c_void_p(a.ctypes.data))
            elif words[-2] in ("int32", "uint64"):
                values.append({"int32": ctypes.c_int, "uint64": ctypes.c_ulonglong}[words[-2]](int(a)))
            else:
                values.append((ctypes.c_float if dtype == "float32" else ctypes.c_double)(float(a)))
        is_array = tuple(isinstance(a, np.ndarray) for a in args)
        self._library(dtype, is_array).run(ctypes.c_ssize_t(int(np.prod(shape))), *values)


def column_major(pointer, rows, columns, ld, dtype):
    """The (rows, columns) matrix stored column by column at ``pointer``, ``ld`` elements apart: a view."""
    dtype = np.dtype(dtype)
    extent = ld * (columns - 1) + rows
    flat = np.ctypeslib.as_array((ctypes.c_char * (extent * dtype.itemsize)).from_address(pointer)).view(dtype)
    return np.lib.stride_tricks.as_strided(flat, (rows, columns), (dtype.itemsize, ld * dtype.itemsize))


def gemm(transa, transb, m, n, k, lda, ldb, ldc, a_pointer, b_pointer, c_pointer, dtype):
    """cublasGemmEx's contract (alpha 1, beta 0): C (m, n) = op(A) op(B), every matrix column-major."""
    a = column_major(a_pointer, *((k, m) if transa else (m, k)), lda, dtype)
    b = column_major(b_pointer, *((n, k) if transb else (k, n)), ldb, dtype)
    column_major(c_pointer, m, n, ldc, dtype)[...] = (a.T if transa else a) @ (b.T if transb else b)


class CppCupy:
    """Just enough of the cupy module for the kernels' CUDA halves: NumPy arrays, C++ kernels, cuBLAS's gemm."""
    __name__ = "cupy"
    empty, empty_like = staticmethod(np.empty), staticmethod(np.empty_like)
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    uint64, ElementwiseKernel, gemm = np.uint64, CppElementwiseKernel, staticmethod(gemm)


CPP_CUPY = CppCupy()      # one, so that each kernel compiles once (minialex.kernels keeps them per module)
