"""The example: it prints what the notebook prints, and user mistakes end in one clear line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minialex import backend, train_mnist
from minialex.train_mnist import main

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_run_prints_what_the_notebook_prints(mnist_dir, tmp_path, capsys):
    checkpoint = tmp_path / "run.npz"
    status = main(["--backend", "numpy", "--data-dir", str(mnist_dir), "--limit", "320", "--epochs", "1",
                   "--save", str(checkpoint)])
    out = capsys.readouterr().out
    assert status == 0
    assert "x_train shape: (320, 32, 32, 1) y_train shape: (320, 10)" in out
    assert "x_test shape: (10000, 32, 32, 1) y_test shape: (10000, 10)" in out
    assert "Total params: 585,546" in out and "Epoch 1/1" in out and "val_accuracy: " in out
    assert "Running time: " in out and "Test accuracy: " in out and "Ran on: numpy" in out
    assert checkpoint.exists()
    status = main(["--backend", "numpy", "--data-dir", str(mnist_dir), "--limit", "320", "--epochs", "2",
                   "--resume", str(checkpoint)])
    resumed = capsys.readouterr().out
    assert status == 0 and "Epoch 2/2" in resumed and "Epoch 1/2" not in resumed


def test_a_missing_dataset_is_one_clear_line(tmp_path, capsys):
    assert main(["--backend", "numpy", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]


def test_an_unavailable_backend_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)     # `import cupy` fails, as where CuPy is not installed
    assert main(["--backend", "cupy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the 'cupy' backend needs CuPy")
    assert "pip install 'minialex[cuda12]'" in err[0] and backend.get_backend() == "numpy"


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--learning-rate", "nan"], "--learning-rate must be a positive finite number, got nan"),
    (["--learning-rate", "inf"], "--learning-rate must be a positive finite number, got inf"),
    (["--save", ""], "--save is empty: give a path"),
    (["--resume", ""], "--resume is empty: give a path"),
    (["--data-dir", ""], "--data-dir is empty: give a path"),
    (["--plots", ""], "--plots is empty: give a path"),
])
def test_bad_numbers_and_empty_paths_are_refused_before_any_work(flags, message, capsys):
    assert main(["--backend", "numpy", "--data-dir", "never-read"] + flags) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err


def tiny_mnist(data_dir=None):
    """MNIST's shapes, 50 training and 20 test images: the example's steps in a second."""
    rng = np.random.default_rng(0)
    return ((rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50).astype(np.uint8)),
            (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20).astype(np.uint8)))


def test_a_limit_above_the_data_says_it_was_clamped(monkeypatch, capsys):
    monkeypatch.setitem(train_mnist.LOADERS, "mnist", tiny_mnist)
    assert main(["--backend", "numpy", "--limit", "1000", "--epochs", "1", "--batch-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "--limit 1000 is more than the 50 training images: all 50 are used" in out
    assert "x_train shape: (50, 32, 32, 1)" in out


def test_the_backend_is_the_flag_else_the_variable_else_auto(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)     # no CuPy here, so cupy is refused where it is asked for
    monkeypatch.setenv("MINIALEX_BACKEND", "cupy")
    assert main(["--data-dir", "never-read"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MINIALEX_BACKEND=cupy (pass --backend to choose another): the 'cupy' backend "
                          "needs CuPy")
    assert main(["--backend", "numpy", "--data-dir", "never-read"]) == 2
    assert "never-read" in capsys.readouterr().err          # the flag won: on to the data
    monkeypatch.delenv("MINIALEX_BACKEND")
    assert main(["--data-dir", "never-read"]) == 2
    assert "never-read" in capsys.readouterr().err and backend.get_backend() == "numpy"   # auto, without a GPU


def test_the_example_script_runs_the_package(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_mnist.py"), "--backend", "numpy",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.startswith("error: ")
