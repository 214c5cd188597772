"""The backend switch, the array helpers and the counter-based generator."""
import ast
import builtins
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minialex import backend, random

PACKAGE = Path(__file__).resolve().parents[1] / "minialex"


def test_set_backend_call_and_context_manager():
    with backend.set_backend("numpy") as name:
        assert name == "numpy" and backend.xp() is np
    backend.set_backend("numpy")
    assert backend.get_backend() == "numpy"


def stand_in_cupy(devices=1, nvrtc=None, cublas=None, cuda_version=12090):
    """A stand-in for the cupy module: ``devices`` GPUs answer (an int, or an exception that the device
    count raises); NVRTC and cuBLAS load unless ``nvrtc`` / ``cublas`` is the exception they raise."""
    def answer(value):
        if isinstance(value, Exception):
            raise value
        return value

    class Cuda:
        runtime = SimpleNamespace(getDeviceCount=lambda: answer(devices), runtimeGetVersion=lambda: cuda_version)
        nvrtc = SimpleNamespace(getVersion=lambda: answer(nvrtc) or (12, 9))

        @property
        def cublas(self):
            return answer(cublas) or SimpleNamespace()

    return SimpleNamespace(__name__="cupy", __version__="14.2.0", cuda=Cuda())


NO_NVRTC = RuntimeError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12": No such file')
NO_CUBLAS = ImportError('Failure finding "libcublasLt.so.13 or libcublasLt.so.12": No such file')


def test_auto_falls_back_to_numpy_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", stand_in_cupy(devices=RuntimeError("cudaErrorNoDevice")))
    assert backend.available_backends() == ["numpy"]
    with backend.set_backend("auto"):
        assert backend.get_backend() == "numpy"
    assert capsys.readouterr().err == ""                      # no GPU: nothing to say


@pytest.mark.parametrize("nvrtc,cublas,missing", [(NO_NVRTC, None, ["NVRTC"]), (None, NO_CUBLAS, ["cuBLAS"]),
                                                  (NO_NVRTC, NO_CUBLAS, ["NVRTC", "cuBLAS"])])
def test_cupy_without_its_cuda_libraries_says_what_is_missing_and_how_to_install_it(monkeypatch, nvrtc, cublas,
                                                                                      missing):
    monkeypatch.setitem(sys.modules, "cupy", stand_in_cupy(nvrtc=nvrtc, cublas=cublas))
    with pytest.raises(backend.CudaLibrariesMissing) as error:
        backend.set_backend("cupy")
    message = str(error.value)
    assert "\n" not in message and "sees a GPU" in message and "pip install 'minialex[cuda12]'" in message
    assert [name for name in ("NVRTC", "cuBLAS") if name in message] == missing
    assert "libnvrtc.so" in message if nvrtc else "libcublasLt.so" in message
    assert backend.get_backend() == "numpy" and not backend.cupy_available()


def test_auto_says_in_one_line_why_it_uses_numpy_on_a_gpu_without_cuda_libraries(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", stand_in_cupy(cublas=NO_CUBLAS, cuda_version=13000))
    with backend.set_backend("auto"):
        assert backend.get_backend() == "numpy"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("minialex: backend 'auto' uses NumPy: ")
    assert "cuBLAS" in lines[0] and "pip install 'minialex[cuda13]'" in lines[0]


def test_cupy_with_its_cuda_libraries_is_the_backend(monkeypatch):
    cupy = stand_in_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with backend.set_backend("auto"):
        assert backend.get_backend() == "cupy" and backend.xp() is cupy
    assert backend.get_backend() == "numpy"


@pytest.mark.parametrize("name", ["tensorflow", "", "CUDA", None])
def test_unknown_backend_is_a_clear_error(name):
    with pytest.raises(backend.BackendError, match="unknown backend"):
        backend.set_backend(name)
    assert backend.get_backend() == "numpy"


def test_cupy_without_cupy_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    with pytest.raises(backend.BackendError, match=r"pip install 'minialex\[cuda12\]'.*\[cuda13\]"):
        backend.set_backend("cupy")
    assert backend.get_backend() == "numpy"


class StandInArray(np.ndarray):
    """The arrays of StandIn: NumPy arrays of another type."""


class StandIn:
    """The least a stand-in module needs: its array type; anything else is NumPy's."""
    __name__ = "stand_in"
    ndarray = StandInArray

    def __getattr__(self, name):
        return getattr(np, name)


def test_using_module_makes_a_stand_in_the_backend_for_a_block():
    stand_in = StandIn()
    plain = np.ones(3)
    with backend.using_module(stand_in, "stand-in") as module:
        assert module is stand_in and backend.xp() is stand_in and backend.get_backend() == "stand-in"
        own = plain.view(StandInArray)
        assert backend.get_array_module(plain, own) is stand_in and not backend.on_cpu(own)
        assert backend.get_array_module(plain) is np and backend.on_cpu(plain)
    assert backend.get_backend() == "numpy" and backend.xp() is np
    assert backend.get_array_module(own) is np


def test_environment_variable_picks_the_starting_backend():
    code = "from minialex import backend; print(backend.get_backend())"
    env = {"MINIALEX_BACKEND": "numpy", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["MINIALEX_BACKEND"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown backend 'nonsense'" in bad.stderr


def test_array_helpers(xp_backend):
    x = backend.to_device([[1, 2], [3, 4]], dtype="float32")
    assert backend.get_array_module(x) is backend.xp()
    assert backend.get_array_module(np.zeros(2), x) is backend.xp()
    back = backend.to_numpy(x)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and back.tolist() == [[1, 2], [3, 4]]
    view = backend.as_strided(x, (2,), (x.strides[0] + x.strides[1],))
    assert backend.to_numpy(view).tolist() == [1, 4]


def test_generator_is_reproducible_and_batching_independent(xp_backend):
    one = random.Generator(42)
    whole = backend.to_numpy(one.bits(10))
    two = random.Generator(42)
    parts = np.concatenate([backend.to_numpy(two.bits(3)), backend.to_numpy(two.bits(7))])
    np.testing.assert_array_equal(whole, parts)
    assert one.get_state() == two.get_state() == {"seed": 42, "position": 10}
    assert not np.array_equal(whole, backend.to_numpy(random.Generator(43).bits(10)))


def test_generator_matches_splitmix64_reference():
    """The first outputs of SplitMix64 seeded with 0, computed in plain Python integers."""
    def splitmix64(state):
        state = (state + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return state, z ^ (z >> 31)

    state, expected = 0, []
    for _ in range(5):
        state, value = splitmix64(state)
        expected.append(value)
    assert backend.to_numpy(random.Generator(0).bits(5)).tolist() == expected


def test_generator_distributions(xp_backend):
    rng = random.Generator(3)
    u = backend.to_numpy(rng.random(100_000, "float32"))
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    v = backend.to_numpy(rng.uniform(-2.0, 3.0, (50, 40), "float64"))
    assert v.shape == (50, 40) and v.dtype == np.float64 and v.min() >= -2.0 and v.max() < 3.0
    p = backend.to_numpy(rng.permutation(1000))
    assert sorted(p.tolist()) == list(range(1000)) and p.tolist() != list(range(1000))


def test_set_seed_restarts_the_run_generator():
    random.set_seed(5)
    first = backend.to_numpy(random.get_rng().random(4))
    random.set_seed(5)
    np.testing.assert_array_equal(first, backend.to_numpy(random.get_rng().random(4)))
    with pytest.raises(TypeError, match="seed"):
        random.set_seed(1.5)


def test_layer_loss_and_optimizer_modules_never_import_numpy_or_cupy():
    modules = sorted((PACKAGE / "layers").glob("*.py")) + [PACKAGE / "losses.py", PACKAGE / "optimizers.py"]
    assert len(modules) > 5
    for path in modules:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not any(n.split(".")[0] in ("numpy", "cupy", "cupyx") for n in names), f"{path.name} imports {names}"


class FailingImport:
    """A finder on sys.meta_path that makes ``import cupy`` raise ``error``, as an installed CuPy does
    when it cannot create its kernel cache in a home that is not writable."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise self.error
        return None


def test_auto_uses_numpy_when_an_installed_cupy_fails_to_import_and_says_why(monkeypatch, capsys):
    denied = PermissionError(13, "Permission denied", "/home/user/.cupy")
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [FailingImport(denied)] + sys.meta_path)
    with backend.set_backend("auto"):
        assert backend.get_backend() == "numpy"
    err = capsys.readouterr().err
    assert err == ("minialex: backend 'auto' uses NumPy: CuPy is installed but its import fails (PermissionError: "
                   "[Errno 13] Permission denied: '/home/user/.cupy'); fix what it names (a folder it cannot write: "
                   "set CUPY_CACHE_DIR to one it can, for its kernel cache), or use --backend numpy\n")
    with pytest.raises(backend.BackendError, match=r"^CuPy is installed but its import fails \(PermissionError"):
        backend.set_backend("cupy")
    assert backend.available_backends() == ["numpy"]
