"""Adam and SGD against their update rules written out by hand."""
import numpy as np
import pytest

from minialex import backend
from minialex.optimizers import SGD, Adam, get_optimizer


def test_adam_follows_keras_update_rule(xp_backend):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(4)]
    param = backend.to_device(p0.copy())
    opt = Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-7)
    m = v = np.zeros(6)
    expected = p0.copy()
    for t, g in enumerate(grads, start=1):
        opt.apply([param], [backend.to_device(g)])
        m = m + (1 - 0.8) * (g - m)
        v = v + (1 - 0.99) * (g * g - v)
        alpha = 0.01 * np.sqrt(1 - 0.99 ** t) / (1 - 0.8 ** t)
        expected = expected - alpha * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(backend.to_numpy(param), expected, rtol=1e-12)
    assert opt.iterations == 4


def test_adam_first_step_moves_each_weight_by_about_the_learning_rate(xp_backend):
    param = backend.to_device(np.zeros(3, dtype=np.float32))
    Adam(1e-3).apply([param], [backend.to_device(np.array([5.0, -0.2, 0.05], dtype=np.float32))])
    np.testing.assert_allclose(backend.to_numpy(param), [-1e-3, 1e-3, -1e-3], rtol=1e-3)
    assert param.dtype == np.float32


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd(xp_backend, momentum):
    param = backend.to_device(np.array([1.0, 2.0]))
    opt = SGD(learning_rate=0.1, momentum=momentum)
    velocity, expected = np.zeros(2), np.array([1.0, 2.0])
    for g in ([1.0, -1.0], [0.5, 0.5]):
        opt.apply([param], [backend.to_device(np.array(g))])
        velocity = momentum * velocity - 0.1 * np.array(g)
        expected = expected + velocity
    np.testing.assert_allclose(backend.to_numpy(param), expected)


def test_state_saves_and_restores(xp_backend):
    rng = np.random.default_rng(1)
    grads = [backend.to_device(rng.standard_normal(5)) for _ in range(3)]
    a, b = backend.to_device(np.ones(5)), backend.to_device(np.ones(5))
    first = Adam(0.05)
    first.apply([a], [grads[0]])
    state = {k: (backend.to_numpy(v) if hasattr(v, "shape") else v) for k, v in first.get_state().items()}
    second = Adam(0.05)
    second.set_state(state)
    b[...] = a
    for g in grads[1:]:
        first.apply([a], [g])
        second.apply([b], [g])
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert second.iterations == 3


def test_bad_settings():
    for bad in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="learning_rate must be a positive finite number"):
            Adam(learning_rate=bad)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.5)
    with pytest.raises(ValueError, match="unknown optimizer"):
        get_optimizer("rmsprop")
    with pytest.raises(ValueError, match="gradients"):
        Adam().apply([np.zeros(2)], [])
    assert isinstance(get_optimizer("Adam"), Adam)
