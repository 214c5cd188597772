"""The README's promise: one seed gives the same initial weights, dropout masks and shuffles on NumPy
and on CuPy. Each leg draws on its own backend and compares host copies, bit for bit, with the same
draws made on NumPy (the NumPy leg compares NumPy with itself: the plumbing; the CuPy leg is the proof,
and skips where no GPU answers)."""
import numpy as np

from minialex import backend, random
from minialex.layers import Dense, Dropout
from minialex.models import Sequential, alexnet_mnist


def draws(seed):
    """Everything a seeded run draws, as host arrays: weights, masks, permutations, then the state."""
    random.set_seed(seed)
    weights = alexnet_mnist().get_weights()
    ones = backend.to_device(np.ones((64, 84), dtype=np.float32))
    masks = [backend.to_numpy(Dropout(rate).forward(ones, training=True)) for rate in (0.5, 0.3)]
    rng = random.get_rng()
    shuffles = [backend.to_numpy(rng.permutation(n)) for n in (48000, 10)]
    uniform = backend.to_numpy(rng.uniform(-2.0, 3.0, (5, 7), dtype="float64"))
    return {"weights": weights, "masks": masks, "shuffles": shuffles, "uniform": [uniform],
            "state": rng.get_state()}


def fit_order(seed, n=20, batch_size=6, epochs=2):
    """The sample indices fit's shuffled batches hold, in the order training sees them."""
    random.set_seed(seed)
    model = Sequential([Dense(2, activation="softmax", input_shape=(1,))])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    seen = []
    original = model.train_step

    def recording_step(x, y):
        seen.append(backend.to_numpy(x)[:, 0].astype(int))
        return original(x, y)

    model.train_step = recording_step
    x = np.arange(n, dtype=np.float32).reshape(n, 1)      # sample i holds the value i
    y = np.eye(2, dtype=np.float32)[np.arange(n) % 2]
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return np.concatenate(seen)


def assert_same(here, numpy_draws, name):
    assert len(here) == len(numpy_draws), name
    for k, (ours, reference) in enumerate(zip(here, numpy_draws)):
        assert isinstance(ours, np.ndarray), f"{name}[{k}] is not a host copy"
        assert ours.dtype == reference.dtype and ours.shape == reference.shape, f"{name}[{k}]"
        np.testing.assert_array_equal(ours, reference, err_msg=f"{name}[{k}] differs from NumPy's")


def test_same_seed_same_weights_masks_and_shuffles_as_numpy(xp_backend):
    here = draws(7)
    with backend.set_backend("numpy"):
        on_numpy = draws(7)
    for name in ("weights", "masks", "shuffles", "uniform"):
        assert_same(here[name], on_numpy[name], name)
    assert here["state"] == on_numpy["state"]
    assert len(on_numpy["weights"]) == 16 and on_numpy["masks"][0].any() and not on_numpy["masks"][0].all()


def test_fit_shuffles_the_same_on_each_backend(xp_backend):
    here = fit_order(3)
    with backend.set_backend("numpy"):
        on_numpy = fit_order(3)
    np.testing.assert_array_equal(here, on_numpy)
    assert sorted(here[:20]) == list(range(20)) and list(here[:20]) != list(range(20))   # shuffled, each once
