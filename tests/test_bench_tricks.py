"""benchmarks/bench_tricks.py stays runnable: at a batch of 2, each of its plain ways computes what
the fast way it is timed against computes (the twins are held to the fast layers by test_naive.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_tricks  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def net():
    return bench_tricks.Network(batch=2)


def test_every_trick_and_its_plain_way_agree(net):
    tricks = bench_tricks.trick_comparisons(net)
    assert len(tricks) == 7       # im2col's C == 1 branch, col2im by taps, 2 LRN, 3 pool
    for comparison in tricks:
        bench_tricks.check_agree(comparison)


def test_every_layer_kind_has_its_twin_timed(net):
    names = [comparison.name for comparison in bench_tricks.twin_comparisons(net)]
    for kind in ("conv forward", "conv backward", "max-pool forward", "max-pool backward", "LRN forward",
                 "LRN backward", "dense forward", "dense backward", "softmax cross-entropy"):
        assert any(name.startswith(kind) for name in names), kind
