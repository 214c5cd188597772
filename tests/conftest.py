"""One suite over both backends.

Tests that take the ``xp_backend`` fixture run once per backend: NumPy always, CuPy where it
imports and a GPU answers (a clean skip elsewhere). ``pytest --backend cupy`` runs only the CuPy
leg (and fails loudly if CuPy cannot run): the tests with a parameter 'cupy' (``xp_backend``'s, or
another fixture's GPU leg, such as ``cuda`` in test_kernels.py); it deselects the rest, which run on
the CPU alone. ``--backend numpy`` runs the NumPy leg and the CPU-only tests.

A test builds its layers inside itself, never at collection (in a parametrize list or at module
level): a layer built once holds its parameters on the backend active then, and the other leg
would meet them there.
"""
import os
from pathlib import Path

import pytest

from minialex import backend, random

MNIST_DIR = Path(os.environ.get("MINIALEX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "mnist"))


def pytest_generate_tests(metafunc):
    if "xp_backend" in metafunc.fixturenames:
        choice = metafunc.config.getoption("--backend")
        names = ["numpy", "cupy"] if choice == "all" else [choice]
        metafunc.parametrize("xp_backend", names, indirect=True)


def pytest_collection_modifyitems(config, items):
    """Under ``--backend cupy``, deselect this suite's tests that are not a CuPy leg."""
    if config.getoption("--backend") != "cupy":
        return
    here = Path(__file__).resolve().parent

    def numpy_only(item):
        in_suite = here in Path(str(item.fspath)).resolve().parents
        callspec = getattr(item, "callspec", None)
        values = callspec.params.values() if callspec is not None else ()
        return in_suite and not any(isinstance(value, str) and value == "cupy" for value in values)

    deselected = [item for item in items if numpy_only(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not numpy_only(item)]


@pytest.fixture
def xp_backend(request):
    """Make the parametrised backend active for the test; yields its name."""
    name = request.param
    if name == "cupy" and request.config.getoption("--backend") != "cupy" and not backend.cupy_available():
        pytest.skip("CuPy or a CUDA device is not available")
    with backend.set_backend(name):
        random.set_seed(1234)
        yield name


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set MINIALEX_DATA_DIR)")
    return MNIST_DIR
