"""minialex.viz: each picture is a PNG of its fixed pixel size; train_mnist --plots saves a run that
python -m minialex.viz redraws; and minialex imports and trains without matplotlib."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from minialex import backend, random, train_mnist, viz  # noqa: E402
from minialex.data import load_mnist, preprocess_images  # noqa: E402
from minialex.models import alexnet_mnist  # noqa: E402
from minialex.serialization import load_npz  # noqa: E402
from minialex.training import History  # noqa: E402

from .conftest import MNIST_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = {  # file save_all writes -> its kind in viz.FIGSIZES
    "history.png": "history",
    "filters_before.png": "filters",
    "filters_after.png": "filters",
    "feature_maps.png": "feature_maps",
    "confusion_matrix.png": "confusion_matrix",
    "misclassified.png": "misclassified",
}


def png_size(path):
    """(width, height) read from a PNG's IHDR chunk, once the signature is checked."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def pixels(kind):
    width, height = viz.FIGSIZES[kind]
    return round(width * viz.DPI), round(height * viz.DPI)


def python(*args, cwd=None):
    """Run ``python *args`` in a fresh process that imports this checkout's minialex."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env)


def hide_matplotlib(monkeypatch):
    """Make every ``import matplotlib...`` fail, as if it were not installed."""
    for name in [name for name in sys.modules if name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture(scope="module")
def mnist():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set MINIALEX_DATA_DIR)")
    return load_mnist(MNIST_DIR)


@pytest.fixture(scope="module")
def digits(mnist):
    """The first 200 test digits, preprocessed, and their labels."""
    _, (x_test, y_test) = mnist
    return preprocess_images(x_test[:200]), y_test[:200]


@pytest.fixture(scope="module")
def model():
    with backend.set_backend("numpy"):
        random.set_seed(0)
        yield alexnet_mnist()


def test_save_all_draws_every_picture_as_a_png_of_fixed_size(tmp_path, model, digits):
    x_test, y_test = digits
    history = {"loss": [0.6, 0.1], "accuracy": [0.8, 0.97], "val_loss": [0.07, 0.05], "val_accuracy": [0.98, 0.99]}
    initial = np.random.default_rng(0).uniform(-0.1, 0.1, (3, 3, 1, 32)).astype("float32")
    paths = viz.save_all(model, history, x_test, y_test, tmp_path / "pictures", initial_kernel=initial)
    assert [path.name for path in paths] == list(PICTURES)
    for path in paths:
        assert png_size(path) == pixels(PICTURES[path.name]), path.name
        assert path.stat().st_size < 200_000


def test_save_all_without_initial_kernel_skips_the_before_picture(tmp_path, model, digits):
    x_test, y_test = digits
    paths = viz.save_all(model, History({"loss": [1.0]}), x_test[:20], y_test[:20], tmp_path)
    assert [path.name for path in paths] == [name for name in PICTURES if name != "filters_before.png"]


def test_history_takes_a_history_or_its_dict_with_or_without_validation(tmp_path):
    history = History({"loss": [2.0, 1.0, 0.5], "accuracy": [0.3, 0.6, 0.8]})
    assert png_size(viz.plot_history(history, tmp_path / "a.png")) == pixels("history")
    assert png_size(viz.plot_history(history.history, tmp_path / "b.png")) == pixels("history")
    with pytest.raises(ValueError, match="no 'loss'"):
        viz.plot_history({}, tmp_path / "c.png")


def test_layer_activations_show_what_lrn_and_pooling_do(model, digits):
    x_test, _ = digits
    rows = viz.layer_activations(model, x_test[0])
    names = [name for name, _ in rows]
    assert names == ["input"] + [layer.name for layer in model.layers[:9]]
    shapes = {name: maps.shape for name, maps in rows}
    assert shapes["conv2d"] == shapes["local_response_norm"] == (30, 30, 32)
    assert shapes["max_pool2d"] == (15, 15, 32) and shapes["max_pool2d_1"] == (7, 7, 64)
    conv, lrn, pool = (maps for _, maps in rows[1:4])
    assert np.all(lrn <= conv) and np.allclose(lrn, conv, rtol=1e-3)   # LRN divides by >= 1; tiny alpha
    np.testing.assert_array_equal(pool, lrn.reshape(15, 2, 15, 2, 32).max(axis=(1, 3)))   # 2x2 maxima
    with pytest.raises(ValueError, match="one image of shape"):
        viz.layer_activations(model, x_test[:2])


def test_confusion_matrix_counts_and_checks_labels(tmp_path):
    counts = viz.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), num_classes=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    labels = np.array([0, 29, 29], dtype=np.uint8)   # uint8, as loaded: 29 * 30 + 29 overflows uint8
    assert viz.confusion_matrix(labels, labels, num_classes=30)[29, 29] == 2
    with pytest.raises(ValueError, match="argmax"):
        viz.plot_confusion_matrix(np.eye(3, dtype=int), np.arange(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="0..9"):
        viz.confusion_matrix(np.array([10]), np.array([0]))


def test_picture_inputs_are_checked(tmp_path, digits):
    x_test, y_test = digits
    with pytest.raises(ValueError, match=r"\(KH, KW, 1, F\)"):
        viz.plot_filters(np.zeros((3, 3, 2, 4)), tmp_path / "f.png")
    with pytest.raises(ValueError, match="N images"):
        viz.plot_misclassified(x_test[:5], y_test[:4], y_test[:4], tmp_path / "m.png")
    path = viz.plot_misclassified(x_test[:5], y_test[:5], y_test[:5], tmp_path / "none_wrong.png", limit=8)
    assert png_size(path) == pixels("misclassified")


def test_plots_run_saves_weights_and_history_and_viz_redraws_it(tmp_path, mnist, mnist_dir, monkeypatch, capsys):
    run = tmp_path / "run"
    argv = ["--limit", "256", "--epochs", "1", "--plots", str(run), "--data-dir", str(mnist_dir), "--backend", "numpy"]
    assert train_mnist.main(argv) == 0
    printed = capsys.readouterr().out
    for name in PICTURES:
        assert f"Saved {run / name}" in printed
        assert png_size(run / name) == pixels(PICTURES[name])
    history = json.loads((run / viz.HISTORY).read_text())
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"] and len(history["loss"]) == 1

    random.set_seed(0)   # train_mnist seeds, then builds: the same seed rebuilds the initial weights
    initial, _ = load_npz(run / viz.INITIAL_WEIGHTS)
    trained, _ = load_npz(run / viz.WEIGHTS)
    for name, weight in alexnet_mnist().weight_items():
        np.testing.assert_array_equal(initial[name], weight)
    assert not np.array_equal(initial["conv2d/kernel"], trained["conv2d/kernel"])

    def first_500_test_digits(data_dir):   # the redraw itself, on fewer digits
        assert data_dir == str(mnist_dir)
        (x_train, y_train), (x_test, y_test) = mnist
        return (x_train, y_train), (x_test[:500], y_test[:500])

    monkeypatch.setattr(viz, "load_mnist", first_500_test_digits)
    for name in PICTURES:
        (run / name).unlink()
    assert viz.main([str(run), "--data-dir", str(mnist_dir)]) == 0
    assert capsys.readouterr().out.split() == [str(run / name) for name in PICTURES]
    assert all(png_size(run / name) == pixels(PICTURES[name]) for name in PICTURES)


def test_viz_command_errors_are_one_line_with_status_2(tmp_path, capsys):
    result = python("-m", "minialex.viz", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr == f"error: no such folder: {tmp_path / 'missing'}\n"
    assert viz.main([str(tmp_path)]) == 2
    assert "lacks weights.npz and history.json" in capsys.readouterr().err


def test_plots_without_matplotlib_trains_then_says_so(tmp_path, mnist, monkeypatch, capsys):
    (x_train, y_train), (x_test, y_test) = mnist
    monkeypatch.setitem(train_mnist.LOADERS, "mnist", lambda data_dir: ((x_train[:64], y_train[:64]),
                                                                        (x_test[:100], y_test[:100])))
    hide_matplotlib(monkeypatch)
    assert train_mnist.main(["--epochs", "1", "--plots", str(tmp_path), "--backend", "numpy"]) == 2
    out, err = capsys.readouterr()
    assert "Test accuracy" in out
    assert err.count("\n") == 1 and "pip install 'minialex[viz]'" in err and "python -m minialex.viz" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.json", "initial_weights.npz", "weights.npz"]


NO_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None           # any import of matplotlib now fails
import numpy as np
import minialex
from minialex import viz

minialex.set_seed(0)
model = minialex.alexnet_mnist()
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
x = np.random.default_rng(0).random((8, 32, 32, 1), dtype=np.float32)
history = model.fit(x, np.eye(10, dtype=np.float32)[:8], epochs=1, batch_size=4, verbose=0)
print("trained", len(history.history["loss"]))
try:
    viz.plot_history(history, "history.png")
except viz.MatplotlibMissing as exc:
    print(exc)
sys.exit(viz.main(["."]))
"""


def test_minialex_imports_and_trains_without_matplotlib(tmp_path):
    result = python("-c", NO_MATPLOTLIB, cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "trained 1", "minialex.viz draws with matplotlib, which is not installed: pip install 'minialex[viz]'"]
    assert result.returncode == 2
    assert result.stderr == ("error: minialex.viz draws with matplotlib, which is not installed: "
                             "pip install 'minialex[viz]'\n")
    assert not (tmp_path / "history.png").exists()


@pytest.mark.parametrize("content, said", [('{"loss": [0.5, 0.4', "is not a readable history (Expecting"),
                                           ('["loss"]', "is not a history of a run")])
def test_a_damaged_history_is_named_with_its_file(tmp_path, capsys, content, said):
    small = alexnet_mnist()
    small.save_weights(tmp_path / viz.WEIGHTS)
    (tmp_path / viz.HISTORY).write_text(content)
    assert viz.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / viz.HISTORY} {said}") and err.count("\n") == 1


def test_the_history_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from minialex import serialization

    writes = []
    monkeypatch.setattr(serialization.os, "replace", lambda source, target: writes.append((source, target)))
    viz.save_run(tmp_path, alexnet_mnist(), {"loss": [0.5]})
    assert [Path(target).name for _, target in writes] == [viz.WEIGHTS, viz.HISTORY]
