"""The benchmark scripts that the README quotes still run and report what they claim to: the step
profile (benchmarks/step_profile.py) names every layer and adds up, and compare.py says plainly
when a peer (Keras, PyTorch) is not installed. Timings are not checked: tests assert, benchmarks measure."""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import compare  # noqa: E402
import step_profile  # noqa: E402


def test_the_step_profile_names_every_layer_and_adds_up(capsys):
    step_profile.main(["--steps", "2", "--threads", "1"])
    out = capsys.readouterr().out
    for layer in common.tutorial_model().layers:
        assert re.search(rf"^\| {layer.name} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \|", out, re.M), layer.name
    result = dict(item.split("=") for item in re.search(r"^RESULT (.*)$", out, re.M).group(1).split())
    assert float(result["products_ms"]) < float(result["shard_ms"]) <= float(result["step_ms"]) * 1.5
    assert "floor at the GEMM rate" in out


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
