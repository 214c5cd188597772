"""The benchmark scripts that the README quotes still run and report what they claim to: the step
profile (benchmarks/step_profile.py) names every layer and adds up, for both of the tutorial's
networks, fit_loop.py times fit against the same work bare, compare.py says plainly
when a peer (Keras, PyTorch) is not installed, and the kernel table (benchmarks/kernel_table.py) lists
every launch of a step's graph and matches a card's kernels to them, and weights_hash.py gives a seeded
run's weights one digest. Timings are not checked: tests assert, benchmarks measure."""
import argparse
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import compare  # noqa: E402
import fit_loop  # noqa: E402
import kernel_table  # noqa: E402
import step_profile  # noqa: E402
import weights_hash  # noqa: E402


@pytest.mark.parametrize("norm", ["lrn", "batchnorm"])
def test_the_step_profile_names_every_layer_and_adds_up(capsys, norm):
    step_profile.main(["--steps", "2", "--threads", "2", "--norm", norm])
    out = capsys.readouterr().out
    for layer in common.tutorial_model(norm=norm).layers:
        assert re.search(rf"^\| {layer.name} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \|", out, re.M), layer.name
    result = dict(item.split("=") for item in re.search(r"^RESULT (.*)$", out, re.M).group(1).split())
    assert float(result["products_ms"]) < float(result["shard_ms"]) <= float(result["step_ms"]) * 1.5
    assert "floor at the GEMM rate" in out


def test_the_fit_loop_benchmark_times_fit_against_the_same_work_bare(capsys):
    fit_loop.main(["--images", "200", "--rounds", "1", "--threads", "1"])
    out = capsys.readouterr().out
    result = dict(item.split("=") for item in re.search(r"^RESULT (.*)$", out, re.M).group(1).split())
    assert float(result["fit_s"]) > 0 and float(result["bare_s"]) > 0
    assert "160 training + 40 validation images" in out


def test_the_product_shapes_are_the_layers_own():
    model = common.tutorial_model()
    conv, dense = model.layers[3], model.layers[10]          # conv2d_1 (15x15x32 -> 64), dense (3136 -> 84)
    forward, backward = step_profile.products(conv, 32)
    assert forward == [(32 * 15 * 15, 9 * 32, 64)] and len(backward) == 1 + 9
    assert step_profile.products(dense, 32) == ([(32, 3136, 84)], [(3136, 32, 84), (32, 84, 3136)])


def test_compare_says_when_keras_is_missing_or_left_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_reference", None)      # import fails as if TensorFlow were absent
    model, why = compare.keras_reference(argparse.Namespace(no_keras=False), 1, None, None)
    assert model is None and "pip install 'minialex[bench]'" in why
    model, why = compare.keras_reference(argparse.Namespace(no_keras=True), 1, None, None)
    assert model is None and "--no-keras" in why


def test_the_kernel_table_lists_every_launch_of_a_step_s_graph(capsys):
    rows = kernel_table.recorded_rows(8)
    assert len(rows) == 71          # the step's 79 launches less the 3 copies before the graph: 76, the four
    assert sum(row.launches for row in rows) == 76      # col2im_by_taps and the loss making two each
    assert sum(row.flops for row in rows) == common.step_flops(common.tutorial_model(), 8)
    assert {"conv2d forward", "dense_2 backward", "optimiser", "loop"} <= {row.part for row in rows}
    kernel_table.main(["--batch", "8"])
    out = capsys.readouterr().out
    assert re.search(r"^RESULT kernels=71 step_device_ms=0.0000 largest=\S+:\S+$", out, re.M)


def card_kernels(rows):
    """What a card would run for these launches (names as CUPTI gives them), 1 µs each, and where a
    launch makes more than one kernel, those too: the step's values and batch copied in first."""
    names = {"matmul": ["sm90_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x128x32"],
             "col2im_by_taps": ["sm90_xmma_gemm_f32f32_f32f32_f32_nn_n", "minialex_col2im"],
             "softmax_cross_entropy": ["minialex_softmax_cross_entropy", "cupy_sum"]}
    kernels = [("Memcpy HtoD (Pageable -> Device)", 1.0), ("cupy_take", 1.0), ("cupy_take", 1.0)]
    for k, row in enumerate(rows):
        found = names.get(row.what) or ([f"minialex_{row.what}"] if row.token == "K" else [f"cupy_{row.what}"])
        if row.what == "matmul" and k % 3 == 0:
            found = found + ["void splitKreduce_kernel<32, 16, int, float, float, float>"]   # split K: two
        kernels += [(name, 1.0) for name in found]
    return kernels


def test_the_kernel_table_matches_a_card_s_kernels_to_the_launches():
    rows = kernel_table.recorded_rows(8)
    matched = kernel_table.match(rows, card_kernels(rows))
    outside, *launches = matched
    assert outside[0] is None and [name for name, _ in outside[1]] == ["Memcpy HtoD (Pageable -> Device)",
                                                                        "cupy_take", "cupy_take"]
    for k, (row, kernels) in enumerate(launches):
        expected = 2 if row.launches > 1 or (row.what == "matmul" and k % 3 == 0) else 1
        assert len(kernels) == expected, (k, row, kernels)
    lines = kernel_table.table(matched)
    assert len(lines) == 1 + 72 and "3.0" in lines[1] and "(outside the graph)" in lines[1]
    assert all(" 2.0 " in line or " 1.0 " in line for line in lines[2:])


def test_the_weights_hash_is_the_seeded_run_s_and_tells_runs_apart(mnist_dir):
    first = weights_hash.weights_hash(images=96, data_dir=mnist_dir)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert weights_hash.weights_hash(images=96, data_dir=mnist_dir) == first
    assert weights_hash.weights_hash(images=96, validation_split=0.0, data_dir=mnist_dir) != first
