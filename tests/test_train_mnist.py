"""The example: it prints what the notebook prints, and user mistakes end in one clear line."""
import subprocess
import sys
from pathlib import Path

from minialex import backend
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


def test_bad_numbers_are_refused(capsys):
    assert main(["--backend", "numpy", "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_the_example_script_runs_the_package(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_mnist.py"), "--backend", "numpy",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.startswith("error: ")
