"""The checker itself, the whole tutorial network end to end, and the command-line table."""
import sys

import numpy as np
import pytest

from minialex import backend, gradcheck, random
from minialex.layers import Dense, Softmax
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


def test_samples_carry_signal_where_most_gradients_are_zero():
    analytic = np.zeros(5376 * 84)                      # dense/kernel after ReLU and dropout: mostly zeros
    analytic[np.random.default_rng(0).choice(analytic.size, 300, replace=False)] = 1.0
    picked = gradcheck.sample_indices(analytic, 20, seed=0)
    assert len(set(picked.tolist())) == 20
    assert (analytic[picked] != 0).sum() == 15 and (analytic[picked] == 0).sum() == 5
    few = np.zeros(100)
    few[[3, 50]] = 2.0
    assert sorted(gradcheck.sample_indices(few, 20, seed=1)[few[gradcheck.sample_indices(few, 20, seed=1)] != 0]) \
        == [3, 50]


def test_a_backward_that_drops_gradient_fails_the_sampled_check(xp_backend):
    """A Dense whose kernel gradient loses its second half: sampling among the zeros catches it."""
    class HalfDense(Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["kernel"][self.grads["kernel"].shape[0] // 2:] = 0.0
            return dx

    errors = gradcheck.check_layer(HalfDense(40, dtype="float64"), gradcheck.tie_free((3, 60), seed=2), samples=12)
    assert errors["kernel"] > 0.1 and errors["bias"] <= gradcheck.TOLERANCE


def test_a_tensor_without_signal_fails(xp_backend):
    errors = gradcheck.check_layer(Dense(3, dtype="float64"), backend.to_device(np.zeros((2, 4))))
    assert errors["kernel"] == gradcheck.NO_SIGNAL and errors["bias"] <= gradcheck.TOLERANCE


def test_the_softmax_layer_inside_a_model_is_checked(xp_backend):
    """A Softmax layer that is not the model's last runs its own backward; a wrong one fails."""
    x = gradcheck.tie_free((3, 5), seed=0)
    y = backend.to_device(np.eye(4)[[0, 3, 1]])
    model = gradcheck.softmax_inside_model()
    assert max(gradcheck.check_model(model, x, y, samples=None).values()) <= gradcheck.TOLERANCE

    class ForgetfulSoftmax(Softmax):
        def backward(self, dout):
            return self._y * dout          # the Jacobian's diagonal only

    model.layers[1] = ForgetfulSoftmax()
    model.layers[1].build((6,))
    assert max(gradcheck.check_model(model, x, y, samples=None).values()) > 1e-2


def test_relative_error_definition():
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == gradcheck.NO_SIGNAL == float("inf")
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
                 "SoftmaxCrossEntropy", "alexnet_mnist", "naive conv2d", "naive maxpool2d", "naive LRN",
                 "naive dense", "naive dropout", "naive relu", "naive softmax,", "naive softmax cross-entropy",
                 "Softmax layer"):
        assert name in out
    assert "FAIL" not in out and out.count("PASS") >= 60 and "all passed" in out


def test_command_line_reports_an_unavailable_backend(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)     # `import cupy` fails, as where CuPy is not installed
    assert gradcheck.main(["--backend", "cupy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the 'cupy' backend needs CuPy") and "pip install 'minialex[cuda12]'" in err
