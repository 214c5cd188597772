"""The checker itself, the whole tutorial network end to end, and the command-line table."""
import numpy as np
import pytest

from minialex import backend, gradcheck, random
from minialex.models import alexnet_mnist


def test_whole_tutorial_network_end_to_end(xp_backend):
    random.set_seed(0)
    model = alexnet_mnist(dtype="float64")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = gradcheck.tie_free((2, 32, 32, 1), seed=1, low=0.0, high=1.0)
    y = backend.to_device(np.eye(10)[[4, 9]])
    errors = gradcheck.check_model(model, x, y, samples=12)
    assert len(errors) == 1 + 16
    assert max(errors.values()) <= gradcheck.TOLERANCE, errors


def test_relative_error_definition():
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert gradcheck.relative_error(np.array([1.0, 0.0]), np.array([1.0, 1e-9])) == pytest.approx(1e-9)
    assert gradcheck.relative_error(np.array([2.0, -4.0]), np.array([2.0, -3.0])) == pytest.approx(0.25)


def test_tie_free_inputs_are_distinct_and_avoid_zero():
    x = gradcheck.tie_free((3, 7, 5), seed=0)
    values = np.sort(x.ravel())
    assert np.diff(values).min() > 0.009 and np.abs(values).min() > 0.001 and x.dtype == np.float64


def test_command_line_table_passes(capsys):
    assert gradcheck.main(["--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for name in ("Conv2D", "MaxPool2D", "LRN", "Dropout", "Dense", "ReLU", "Softmax", "Flatten",
                 "SoftmaxCrossEntropy", "alexnet_mnist"):
        assert name in out
    assert "FAIL" not in out and out.count("PASS") >= 40 and "all passed" in out


def test_command_line_reports_an_unavailable_backend(monkeypatch, capsys):
    def refuse(name):
        raise backend.BackendError("the 'cupy' backend needs CuPy, which is not installed")

    monkeypatch.setattr(backend, "set_backend", refuse)
    assert gradcheck.main(["--backend", "cupy"]) == 2
    assert "needs CuPy" in capsys.readouterr().err
