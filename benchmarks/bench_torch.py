"""The PyTorch reference at the same shapes: each layer and the whole training step, on the CPU with
as many threads as BLAS uses here, or on the GPU with --backend cupy. Skipped where torch is absent."""
import pytest

import common

torch = pytest.importorskip("torch")
from torch_reference import Reference, blocks  # noqa: E402

NAMES = [name for name, _, _ in blocks()]


@pytest.fixture(scope="module")
def reference(bench_backend):
    device = "cuda" if bench_backend == "cupy" else "cpu"
    if device == "cpu":
        torch.set_num_threads(common.set_threads(None) or torch.get_num_threads())
    return Reference(device=device)


def synchronised(reference, function):
    def call():
        function()
        reference.synchronize()
    return call


def test_torch_training_step(benchmark, reference):
    benchmark.pedantic(synchronised(reference, reference.train_step), rounds=20, iterations=1, warmup_rounds=3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["forward", "forward_backward"])
def test_torch_layer(benchmark, reference, name, kind):
    shape = dict((n, s) for n, _, s in reference.named_blocks)[name]
    forward, forward_backward = reference.layer_functions(name, shape, common.BATCH)
    function = forward if kind == "forward" else forward_backward
    benchmark.pedantic(synchronised(reference, function), rounds=15, iterations=1, warmup_rounds=3)
