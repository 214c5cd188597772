"""NVRTC, the compiler CuPy runs on a GPU machine, on every kernel the tutorial network launches: no GPU.

On a GPU, CuPy writes a kernel's CUDA source when it is first called (``cupy.ElementwiseKernel`` for
the CUDA halves of ``minialex.kernels``, ``cupy.fuse`` for ``backend.fuse``'s functions) and compiles it
with NVRTC, a host library NVIDIA ships on PyPI. Both run here without a card:

1. the tutorial network (and the one with BatchNormalization, for that layer's elementwise kernels)
   takes a training step and an inference batch (batch 64, float32 and float64)
   through a stand-in for CuPy (``backend.using_module`` with the launch counter's arrays), which keeps
   each fused kernel's arguments: the real shapes and dtypes;
2. each call is made again with CuPy's own ``ElementwiseKernel`` and ``cupy.fuse``, on CuPy arrays that
   hold no memory; where CuPy would launch, their ``__cupy_override_elementwise_kernel__`` (CuPy's hook
   for arrays that run kernels their own way) takes the kernel and its arguments, and CuPy's own code
   generator writes the source, with the headers and options ``compile_with_cache`` adds;
3. NVRTC compiles it for sm_75 (Turing: the T4 of free notebook services), sm_80 (A100) and sm_90
   (H100, H200). An error fails, and so do a register spill and a warning on a line minialex wrote (a
   kernel's operation; not CuPy's headers, nor what CuPy writes around it).

``test_a_kernel_with_a_cuda_only_mistake_fails`` shows mistakes a C++ compiler for the CPU accepts
failing here. Skipped, saying why, where CuPy, NVRTC or the CUDA headers are missing (the dev extra
installs them on Linux). Step 2 calls CuPy 14's code generator by its private names, hence the dev
extra's pin. What compiles here may still run wrong on a card: that is the GPU check's.
"""
import re
from collections import namedtuple
from unittest import mock

import numpy
import pytest

from minialex import backend, kernels, random, stand_in
from minialex.models import alexnet_mnist
from minialex.step_values import StepDraws

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (the dev extra brings it on Linux)")
from cupy._core import _carray, _kernel, _scalar, core  # noqa: E402  (CuPy's code generator)
from cupy.cuda import compiler, memory, nvrtc  # noqa: E402


ARCHS = ("75", "80", "90")
NDARRAY, INDEXER, SCALAR = 1, 2, 3          # CuPy's _ArgKind (cupy/_core/_kernel.pxd)
INDEX_32_BITS = 1 << 31                     # CuPy indexes with int below this many bytes


# ---- 1. what the network launches, recorded on the CPU ------------------------------------------

ArraySpec = namedtuple("ArraySpec", "shape dtype strides")


class Recorder(stand_in.CountingModule):
    """The launch counter's stand-in for CuPy (NumPy underneath, nothing counted) that keeps what runs
    as a kernel and its arguments (a ``backend.fuse`` function, or a ``kernels.Kernel``), arrays as their
    ArraySpec."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def record(self, what, args, kwargs=None):
        def spec(a):
            if isinstance(a, StepDraws):
                return DrawsOnDevice()
            return ArraySpec(a.shape, a.dtype, a.strides) if isinstance(a, numpy.ndarray) else a
        self.calls.append((what, [spec(a) for a in args], {key: spec(a) for key, a in (kwargs or {}).items()}))

    def fuse(self, function):
        def call(*args):
            self.record(function, args)
            return function(*args)
        return call

    def run_kernel(self, kernel, *args, **kwargs):
        self.record(kernel, args, kwargs)
        return kernel.numpy_half(*args, **kwargs)


class DrawsOnDevice:
    """A step's draws (``StepDraws``) as the CUDA half sees them: from a word of device memory."""

    @staticmethod
    def device_start(shape, like):
        return device_array((), numpy.uint64), 0


def launched(dtype, norm="lrn"):
    """[(function, arguments, keyword arguments)] of the fused kernels of a training step in ``fit`` (its
    per-step numbers read from the step's values), one by ``train_on_batch`` (passed as arguments) and an
    inference batch of the tutorial network (``norm='batchnorm'``: the chapter's, with BatchNormalization
    where LRN is)."""
    recorder = Recorder()
    data = numpy.random.default_rng(0)
    with backend.using_module(recorder, "recording"):
        random.set_seed(0)
        model = alexnet_mnist(dtype=dtype, norm=norm)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        x = backend.to_device(data.random((64, 32, 32, 1)), dtype)
        y = backend.to_device(numpy.eye(10)[data.integers(0, 10, 64)], dtype)
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        model.train_on_batch(x, y)
        model.evaluate_sums(x, y, 64)
    return recorder.calls


# ---- 2. the source CuPy writes for each, without a device ---------------------------------------

Launch = namedtuple("Launch", "name source options ours")   # ours: the lines of it minialex wrote


class DeviceArray(cupy.ndarray):
    """A CuPy array that holds no memory: CuPy hands it the kernels it would launch on it, and it has
    CuPy's code generator write their source (into ``written``) instead."""

    written: list = []

    def __cupy_override_elementwise_kernel__(self, kernel, *args, **kwargs):
        DeviceArray.written.append(Launch(kernel.name, *elementwise_source(kernel, args), kernel.operation))

    def __matmul__(self, other):            # cuBLAS, not a kernel minialex writes: only its shape matters
        return device_array(self.shape[:-1] + other.shape[-1:], self.dtype)

    def sum(self, axis=None, out=None, **kwargs):    # CuPy's own reduction, not minialex's: likewise
        return out if out is not None else device_array(reduced_shape(self.shape, axis), self.dtype)

    mean = sum


def reduced_shape(shape, axis):
    return () if axis is None else tuple(n for k, n in enumerate(shape) if k != axis % len(shape))


def device_array(shape, dtype, strides=None):
    dtype = numpy.dtype(dtype)
    size = max(1, int(numpy.prod(shape)) * dtype.itemsize)
    nowhere = memory.MemoryPointer(memory.UnownedMemory(1 << 40, size, None, 0), 0)    # never read
    return DeviceArray(shape, dtype, memptr=nowhere, strides=strides)


class UnwrittenReduction:
    """In ``cupy.ReductionKernel``'s place: the reduced array's shape, no source (reductions are checked
    on a card)."""

    def __init__(self, *definition):
        pass

    def __call__(self, *args, axis=None):
        first = next(a for a in args if isinstance(a, cupy.ndarray))
        outputs = [a for a in args[2:] if isinstance(a, cupy.ndarray)]
        return outputs[0] if outputs else device_array(reduced_shape(first.shape, axis), first.dtype)


class DeviceCupy:
    """Just enough of the cupy module for the kernels' CUDA halves: CuPy's own ElementwiseKernel, arrays
    that hold no memory, and a cuBLAS product that does nothing (cuBLAS's kernels are not minialex's)."""
    __name__ = "cupy"
    ElementwiseKernel, ReductionKernel, uint64 = cupy.ElementwiseKernel, UnwrittenReduction, cupy.uint64

    @staticmethod
    def gemm(*arguments):
        pass

    @staticmethod
    def empty(shape, dtype):
        return device_array(shape, dtype)

    @staticmethod
    def empty_like(array):
        return device_array(array.shape, array.dtype)


DEVICE_CUPY = DeviceCupy()


def cuda_sources(function, args, kwargs):
    """[Launch] of what ``function(*args, **kwargs)`` launches on CuPy: a kernel's CUDA half, or ``cupy.fuse``
    of a ``backend.fuse`` function, as ``backend.fuse`` asks for it (every line of which CuPy writes)."""
    on_device = [device_array(*a) if isinstance(a, ArraySpec) else a for a in args]
    DeviceArray.written = []
    if isinstance(function, kernels.Kernel):
        function.cuda_half(DEVICE_CUPY, *on_device,
                           **{key: device_array(*a) if isinstance(a, ArraySpec) else a for key, a in kwargs.items()})
        return DeviceArray.written
    cupy.fuse(function)(*on_device)
    return [launch._replace(ours="") for launch in DeviceArray.written]


def elementwise_source(kernel, args):
    """(source, NVRTC options) that ``kernel(*args)`` compiles, as ``ElementwiseKernel.__call__`` makes
    them: the arguments' C types found as it finds them (types decided by the kernel, arrays broadcast,
    contiguous axes merged as its ``_reduce_dims`` merges them), the text written by CuPy's generator."""
    ins, outs = list(args[:kernel.nin]), list(args[kernel.nin:])
    in_types, out_types, type_map = kernel._decide_params_type(
        tuple(a.dtype if isinstance(a, cupy.ndarray) else None for a in ins), tuple(a.dtype for a in outs))
    raw = [p.raw for p in kernel.params[:-1]]                # the last parameter is CuPy's indexer
    shape = numpy.broadcast_shapes(*(a.shape for a, r in zip(args, raw) if isinstance(a, cupy.ndarray) and not r))
    args = ins + (outs or [device_array(shape, t) for t in out_types])   # cupy.fuse's kernels make their outputs
    looped = {i: broadcast_strides(a, shape) for i, (a, r) in enumerate(zip(args, raw))
              if isinstance(a, cupy.ndarray) and not r}
    strided = [strides for i, strides in looped.items() if not c_contiguous(shape, strides, args[i].itemsize)]
    ndim = merged_ndim(shape, strided) if kernel.reduce_dims else len(shape)
    infos = []
    for i, a in enumerate(args):
        if not isinstance(a, cupy.ndarray):
            infos.append(_kernel._ArgInfo(SCALAR, _scalar.CScalar, numpy.dtype(in_types[i]), 0, True, True))
        elif i in looped:
            infos.append(_kernel._ArgInfo(NDARRAY, type(a), a.dtype, ndim, c_contiguous(shape, looped[i], a.itemsize),
                                          a.nbytes <= INDEX_32_BITS))
        else:
            infos.append(_kernel._ArgInfo(NDARRAY, type(a), a.dtype, a.ndim, a.flags.c_contiguous,
                                          a.nbytes <= INDEX_32_BITS))
    infos.append(_kernel._ArgInfo(INDEXER, _carray.Indexer, None, ndim, True, numpy.prod(shape) <= INDEX_32_BITS))
    code = _kernel._get_elementwise_kernel_code(tuple(infos), type_map, kernel.params, kernel.operation, kernel.name,
                                                kernel.preamble, **kernel.kwargs)
    return full_source(code, kernel.kwargs.get("options", ()))


def broadcast_strides(array, shape):
    """``array``'s strides once broadcast to ``shape`` (0 along the axes it is repeated on)."""
    lead = len(shape) - array.ndim
    kept = zip(array.shape, shape[lead:], array.strides)
    return (0,) * lead + tuple(0 if n == 1 and m != 1 else stride for n, m, stride in kept)


def c_contiguous(shape, strides, itemsize):
    """CuPy's rule: each axis longer than 1 steps over all the axes after it."""
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def merged_ndim(shape, strided):
    """How many axes of the loop's ``shape`` CuPy's ``_reduce_dims`` keeps, ``strided`` holding the strides
    of the looped arrays that are not C-contiguous: one if there are none; else, above two axes, those
    that no strided array lets it merge into the next."""
    if len(shape) <= 1 or not strided:
        return min(len(shape), 1)
    if len(shape) == 2:
        return 2
    sizes, kept, last = list(shape), 0, -1
    for axis in range(len(shape)):
        if sizes[axis] == 1:
            continue
        if last >= 0:
            if all(s[axis] * sizes[axis] == s[last] for s in strided):
                sizes[axis] *= sizes[last]
            else:
                kept += 1
        last = axis
    return kept + (last >= 0)


class CompileRequest(Exception):
    """What ``core.compile_with_cache`` asks CuPy's compiler for: (source, options)."""


def full_source(code, options):
    """(source, NVRTC options) for a kernel's code, as ``core.compile_with_cache`` and CuPy's compiler
    make them on a GPU: CuPy's headers, the C++ standard, the include paths, then -ftz=true."""
    def ask(source, options=(), **kwargs):
        raise CompileRequest(source, options)

    with mock.patch.object(compiler, "_compile_module_with_cache", ask):
        try:
            core.compile_with_cache(code, tuple(options))
        except CompileRequest as request:
            source, options = request.args
    return source, options + ("-ftz=true",)


# ---- 3. NVRTC's verdict ---------------------------------------------------------------------------

def problems(launch, arch):
    """What NVRTC says is wrong with a kernel for sm_``arch``: its errors, ptxas's warnings (a register
    spill), and its warnings on the lines minialex wrote (not on CuPy's headers or on what CuPy writes
    around them, such as cupy.fuse's temporaries, read before they are set); [] if none. The options are
    CuPy's, then those its compiler adds for a card of that generation (a cubin; functions on the device
    unless marked), then ptxas's warning on spills."""
    program = nvrtc.createProgram(launch.source, "kernel.cu", (), ())
    try:
        nvrtc.compileProgram(program, launch.options + (f"-arch=sm_{arch}", "--device-as-default-execution-space",
                                                        "--ptxas-options=--warn-on-spills"))
        found = []
    except nvrtc.NVRTCError as error:
        found = [str(error)]
    log = nvrtc.getProgramLog(program)
    nvrtc.destroyProgram(program)
    lines, ours = launch.source.splitlines(), {line.strip() for line in launch.ours.splitlines()} - {""}
    for message in log.splitlines():
        warning = re.match(r"kernel\.cu\((\d+)\): warning", message)
        if re.search(r"\berror\b", message, re.IGNORECASE) or re.match("ptxas.*warning", message) or (
                warning and lines[int(warning[1]) - 1].strip() in ours):
            found.append(message)
    return found


@pytest.fixture(scope="module")
def nvrtc_ready():
    """Skip, saying why, where NVRTC or the CUDA headers it needs cannot be loaded."""
    try:
        version = nvrtc.getVersion()
        core.assemble_cupy_compiler_options(())          # finds the CUDA runtime's headers, or raises
    except Exception as exc:  # CuPy's loader raises its own error types
        pytest.skip(f"NVRTC or the CUDA headers cannot be loaded ({' '.join(str(exc).split())}); "
                    "the dev extra installs them on Linux")
    return version


@pytest.fixture(scope="module", params=["float32", "float64"])
def launches(request, nvrtc_ready):
    """[Launch] of every kernel the tutorial network launches in this dtype, each distinct source once
    (the same kernel at another shape is often the same text)."""
    distinct = {}
    for function, args, kwargs in launched(request.param):
        for launch in cuda_sources(function, args, kwargs):
            distinct.setdefault(launch.source, launch)
    return list(distinct.values())


BATCHNORM_KERNELS = {"minialex_batchnorm_normalize", "minialex_batchnorm_inference",
                     "minialex_batchnorm_moving_average", "minialex_batchnorm_backward"}


@pytest.fixture(scope="module", params=["float32", "float64"])
def batchnorm_launches(request, nvrtc_ready):
    """[Launch] of BatchNormalization's elementwise kernels in the chapter's network (its reductions,
    CuPy's ReductionKernel, are checked on a card)."""
    distinct = {}
    for function, args, kwargs in launched(request.param, norm="batchnorm"):
        for launch in cuda_sources(function, args, kwargs):
            if launch.name in BATCHNORM_KERNELS:
                distinct.setdefault(launch.source, launch)
    return list(distinct.values())


def test_nvrtc_compiles_batchnorm_s_elementwise_kernels_cleanly(batchnorm_launches):
    assert {launch.name for launch in batchnorm_launches} == BATCHNORM_KERNELS
    for arch in ARCHS:
        found = {f"{launch.name} #{i}": problems(launch, arch) for i, launch in enumerate(batchnorm_launches)}
        assert not {name: lines for name, lines in found.items() if lines}, arch


TUTORIAL_KERNELS = {   # minialex.kernels' (not BatchNormalization's: the network has none) and backend.fuse's
    "minialex_im2col", "minialex_col2im", "minialex_lrn", "minialex_lrn_backward", "minialex_max_pool",
    "minialex_max_pool_backward", "minialex_dropout", "minialex_dropout_from_values", "minialex_softmax_cross_entropy",
    "minialex_adam", "minialex_adam_from_values", "minialex_add_bias_relu", "minialex_record_step",
    "minialex_add_to_sums", "relu_backward", "gradient",
}


def test_the_recording_finds_every_kernel_the_network_launches(launches):
    assert {launch.name for launch in launches} == TUTORIAL_KERNELS


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_every_kernel_cleanly(launches, arch):
    found = {f"{launch.name} #{i}": problems(launch, arch) for i, launch in enumerate(launches)}
    assert not {name: lines for name, lines in found.items() if lines}


# ---- a mistake only CUDA sees fails ---------------------------------------------------------------

def lrn_launch(dtype, replace=("", "")):
    """The Launch of the LRN kernel at conv2d's output (64, 30, 30, 32), with ``replace`` = (old, new)
    applied to its parameters and its operation."""
    name, in_params, out_params, operation = (part.replace(*replace) for part in kernels.LRN)
    kernel = cupy.ElementwiseKernel(in_params, out_params, operation, "minialex_" + name)
    x = device_array((64, 30, 30, 32), dtype)
    DeviceArray.written = []
    kernel(x, 32, 2, 1.0, 2e-5, 0.75, device_array(x.shape, dtype), device_array(x.shape, dtype))
    (launch,) = DeviceArray.written
    return launch


MISTAKES = {   # (old, new) in the LRN kernel. cpp_kernels.py's C++ build accepts all but the typo, and
               # computes the right numbers: only NVRTC (and CuPy, for the typo) sees them
    "a host-only function": ("max(d - R, 0)", "std::max(d - R, 0)"),      # <algorithm>'s: not device code
    "a missing cast": ("pow(den, beta)", "pow(den, 0.75)"),     # float32: pow(float, double) is ambiguous in CUDA
    "a typo in a parameter's type": ("int32 R", "int23 R"),
    "an unused variable (a warning)": ("T sum = 0;", "T sum = 0, unused;"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_kernel_with_a_cuda_only_mistake_fails(nvrtc_ready, mistake):
    assert problems(lrn_launch("float32"), "75") == []
    try:
        found = problems(lrn_launch("float32", MISTAKES[mistake]), "75")
    except (KeyError, TypeError) as error:      # CuPy cannot decide the parameters' types
        found = [repr(error)]
    assert found, f"{mistake}: no error"
