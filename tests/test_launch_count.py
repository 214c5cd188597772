"""The launch counter (minialex.stand_in) on toy code whose launches are known by hand; the tutorial
network's count (benchmarks/launch_count.py) against the docs; each layer alone against its budget."""
import functools
import sys
from pathlib import Path

import numpy as np
import pytest

from minialex import backend, stand_in

from .layer_budgets import LAYER_BUDGETS, layer_launches

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import launch_count  # noqa: E402  (the script whose table the docs show)


def toy(x):
    """13 launches on CuPy, counted line by line."""
    xp = backend.get_array_module(x)
    y = xp.maximum(x, 0)                # 1  a ufunc
    y += 1.0                            # 1  in place
    xp.multiply(y, 2.0, out=y)          # 1  out=
    column_sums = y.sum(axis=0)         # 1  a reduction
    xp.empty((3, 4), dtype=x.dtype)     # 0  nothing is written
    z = xp.zeros((3, 4), dtype=x.dtype)  # 1  a fill
    z[...] = y                          # 1  a copy
    y.T.reshape(-1)                     # 1  a reshape that must copy
    y.reshape(-1)                       # 0  a view
    y[1:, ::2]                          # 0  a view
    y[[0, 2]]                           # 1  a gather
    product = y @ y.T                   # 1  a matrix product
    y.astype("float64")                 # 1  a cast is a copy
    xp.fuse(lambda a, b: (a * b + a) / b)(y, z)    # 1  a fused kernel, whatever it does inside
    xp.concatenate([y, z])              # 2  one copy per array
    return column_sums, product         # eleven 1s and a 2: 13


def test_the_counter_counts_the_toy_by_hand():
    with stand_in.counting() as counter:
        x = backend.to_device(np.arange(12.0, dtype=np.float32).reshape(3, 4) - 5)   # 1: host to device
        counter.counts.clear()
        sums, product = toy(x)
    assert counter.total == 13
    assert isinstance(sums, stand_in.CountingArray) and sums.shape == (4,)


def test_results_are_numpy_s_and_the_backend_comes_back():
    plain = np.arange(12.0, dtype=np.float32).reshape(3, 4) - 5
    with stand_in.counting():
        assert backend.get_backend() == stand_in.NAME
        sums, product = toy(backend.to_device(plain))
    expected = (np.maximum(plain, 0) + 1) * 2
    np.testing.assert_array_equal(np.asarray(sums), expected.sum(axis=0))
    np.testing.assert_array_equal(np.asarray(product), expected @ expected.T)
    assert backend.get_backend() == "numpy" and backend.xp() is np
    assert backend.get_array_module(backend.to_device(plain)) is np


def test_labels_take_the_innermost_and_scalars_stay_on_the_device():
    with stand_in.counting() as counter:
        x = backend.to_device(np.ones(5, dtype=np.float32))
        counter.counts.clear()
        with counter.label("outer"):
            total = x.sum()                 # a 0-d array, as CuPy returns
            with counter.label("inner"):
                total = total * 2 + 1       # 2
    assert isinstance(total, stand_in.CountingArray) and float(total) == 11.0
    assert dict(counter.counts) == {"outer": 1, "inner": 2}


@pytest.fixture(scope="module")
def tutorial_counts():
    return launch_count.count_launches()


def test_the_tutorial_step_is_within_the_issue_s_targets(tutorial_counts):
    """Issue 13: at most 100 launches per training step and 40 per inference batch (317 and 90 before)."""
    step, inference = sum(tutorial_counts["step"].values()), sum(tutorial_counts["inference"].values())
    assert step <= 100 and inference <= 40, (step, inference)
    assert not tutorial_counts["assumed"], "functions without a launch count in FUNCTION_LAUNCHES"
    assert tutorial_counts["step"][("forward", "conv2d")] > 0 and tutorial_counts["step"]["optimiser"] > 0


def test_the_batchnorm_chapter_s_network_makes_the_tutorial_s_count(monkeypatch):
    """89 launches a training step and 34 an inference batch (docs/tutorial.md, "After AlexNet"): a
    GPU runs the batch whole, through each BatchNormalization's kernels (4 forward, 3 backward), not
    through the sums that CPU shards add up when they meet."""
    import common

    monkeypatch.setattr(common, "tutorial_model", functools.partial(common.tutorial_model, norm="batchnorm"))
    counts = launch_count.count_launches()
    assert (sum(counts["step"].values()), sum(counts["inference"].values())) == (89, 34)
    assert [counts["step"][(way, "batch_normalization")] for way in ("forward", "backward")] == [4, 3]


DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", ["launches.md", "launches.zh.md"])
def test_the_docs_show_what_the_counter_counts_and_quote_the_code(tutorial_counts, name):
    import re

    text = (DOCS / name).read_text(encoding="utf-8")
    shown = re.search(r"^```text\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)[1]
    step, inference = sum(tutorial_counts["step"].values()), sum(tutorial_counts["inference"].values())
    expected = launch_count.table(tutorial_counts, launch_count.layer_names())
    assert shown == expected + f"\n\nRESULT launches_per_step={step} launches_per_inference_batch={inference}\n"
    sources = "".join(path.read_text() for path in (DOCS.parent / "minialex").rglob("*.py"))
    for code in re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        assert code in sources, f"docs/{name} quotes code that is not in minialex:\n{code}"


@pytest.mark.parametrize("name", sorted(LAYER_BUDGETS))
def test_each_layer_alone_is_within_its_budget(name):
    make_layer, shape, budget = LAYER_BUDGETS[name]
    counts, assumed = layer_launches(make_layer, shape)
    assert all(count <= most for count, most in zip(counts, budget)), (name, counts, budget)
    assert not assumed, f"{name}: functions without a launch count in FUNCTION_LAUNCHES: {assumed}"
