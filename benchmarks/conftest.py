"""Benchmark fixtures: the backend (``--backend numpy|cupy``, numpy by default), the tutorial model
and a batch at its real shapes, and a ``run`` helper that synchronises the device around each call."""
import pytest

import common
from minialex import backend


@pytest.fixture(scope="session")
def bench_backend(request):
    name = request.config.getoption("--backend")
    name = "numpy" if name == "all" else name
    if name == "cupy" and not backend.cupy_available():
        pytest.skip("CuPy or a CUDA device is not available")
    with backend.set_backend(name):
        yield name


@pytest.fixture
def model(bench_backend):
    return common.tutorial_model()


@pytest.fixture
def batch(bench_backend):
    return common.tutorial_batch()


@pytest.fixture
def run(benchmark):
    """Time function() with the device synchronised after each call, after a few warm-up calls;
    returns the median seconds (None under --benchmark-disable, which only runs it once)."""
    def measure(function, rounds=15):
        def call():
            function()
            backend.synchronize()
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=3)
        return benchmark.stats.stats.median if benchmark.stats else None
    return measure
