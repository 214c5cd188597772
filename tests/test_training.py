"""The fit loop: checkpoints that resume exactly, the non-finite guard, progress output."""
import sys

import numpy as np
import pytest

from minialex import backend, random, training
from minialex.layers import Dense, Flatten, Layer
from minialex.models import Sequential, alexnet_mnist
from minialex.optimizers import Adam

from .test_models import quadrant_data, small_model


def compiled(seed):
    random.set_seed(seed)
    model = small_model()
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_resume_continues_exactly_as_if_never_stopped(tmp_path, xp_backend):
    x, y = quadrant_data(90)
    straight = compiled(seed=4)
    full = straight.fit(x, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0)

    path = tmp_path / "run.npz"
    first = compiled(seed=4)
    first.fit(x, y, epochs=1, batch_size=16, validation_split=0.2, verbose=0, checkpoint=path)
    random.set_seed(999)  # the resumed process starts from a different state on purpose
    resumed = compiled(seed=999)
    history = resumed.fit(x, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0,
                          resume_from=path, checkpoint=path)
    assert history.history == full.history
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.optimizer.iterations == straight.optimizer.iterations == 3 * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]   # no temporary files left


def test_checkpoint_rejects_other_files(tmp_path):
    model = compiled(seed=0)
    model.save_weights(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match="not a minialex checkpoint"):
        model.fit(*quadrant_data(10), epochs=1, verbose=0, resume_from=tmp_path / "weights.npz")


class PoisonAt(Layer):
    """Passes its input through, except that its ``at``-th training forward returns NaN: a blow-up
    inside the network, from inputs that are fine."""

    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at, self.calls = at, 0

    def forward(self, x, training=False):
        if training:
            self.calls += 1
            if self.calls == self.at:
                return x * np.nan
        return x

    def backward(self, dout):
        return dout


def plain_model(seed, poison_at=None):
    random.set_seed(seed)
    layers = [Flatten(input_shape=(8, 8, 1)), Dense(8, activation="relu")]
    layers += [PoisonAt(poison_at)] if poison_at else []
    model = Sequential(layers + [Dense(3, activation="softmax")])
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy")
    return model


def test_non_finite_loss_stops_with_the_last_good_weights(monkeypatch):
    monkeypatch.setattr(training, "SNAPSHOT_SECONDS", 0.0)   # a copy at every step: the latest good weights
    x, y = quadrant_data(60)
    model = plain_model(seed=2, poison_at=3)                # batch size 10: the third step blows up
    with pytest.raises(training.NonFiniteLossError, match=r"epoch 1, step 3 became non-finite.*"
                                                          r"restored to those before epoch 1, step 2") as error:
        model.fit(x, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    assert error.value.history is not None and error.value.history.history == {}
    twin = plain_model(seed=2)
    twin.train_on_batch(x[:10], y[:10])      # the second step's weights gave a finite loss; the third's did not
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 1


def test_a_checkpoint_holds_only_weights_that_gave_a_finite_loss(tmp_path):
    x, y = quadrant_data(60)
    path = tmp_path / "run.npz"
    model = plain_model(seed=2, poison_at=8)                # batch size 10: the second epoch's second step
    with pytest.raises(training.NonFiniteLossError):
        model.fit(x, y, epochs=3, batch_size=10, verbose=0, checkpoint=path)
    twin = plain_model(seed=2)
    twin.fit(x, y, epochs=1, batch_size=10, verbose=0)
    epochs, _ = training.load_checkpoint(path, model)
    assert epochs == 1
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_deferred_guard_as_on_a_gpu_rolls_back(monkeypatch):
    """The GPU path checks the device-side losses at refreshes and restores its last proven copy."""
    monkeypatch.setattr(backend, "get_backend", lambda: "cupy")   # arrays stay NumPy: only the policy changes
    x, y = quadrant_data(60)
    model = plain_model(seed=2, poison_at=5)
    initial = model.get_weights()
    with pytest.raises(training.NonFiniteLossError, match=r"epoch 1, step 5 became non-finite.*fit started from"):
        model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_deferred_guard_keeps_a_copy_once_the_next_step_proves_it(monkeypatch):
    """A copy taken at a check is of weights not tried yet: the next finite loss makes it the good one."""
    monkeypatch.setattr(backend, "get_backend", lambda: "cupy")
    x, y = quadrant_data(40)
    model = plain_model(seed=3)
    guard = training.NonFiniteGuard(model, steps=4, inputs=x)

    def step(index, poisoned=False):
        loss, _ = model.train_step(x[index * 10:(index + 1) * 10], y[index * 10:(index + 1) * 10])
        guard.before_update(index, np.float32(np.nan) if poisoned else loss)
        model.apply_gradients()

    step(0)
    guard.check(0)                                  # copy of the weights after one update: not yet proven
    after_one = model.get_weights()
    step(1)                                         # ...proven here: they give a finite loss
    step(2, poisoned=True)
    with pytest.raises(training.NonFiniteLossError, match="step 3 became non-finite.*before epoch 1, step 2"):
        guard.check(2)
    for a, b in zip(model.get_weights(), after_one):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_weights_that_overflow_are_not_kept():
    """Adam at lr 1e6: finite weights so large that the forward pass overflows. fit puts back weights
    whose predictions are finite (before: the weights kept gave NaN predictions)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 32, 32, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]
    random.set_seed(0)
    model = alexnet_mnist()
    model.compile(optimizer=Adam(1e6), loss="categorical_crossentropy")
    with pytest.raises(training.NonFiniteLossError, match="Try a lower learning rate"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(model.predict(x[:32])).all()
    assert np.isfinite(model.evaluate(x, y)[0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_inputs_are_blamed_not_the_learning_rate():
    """Inputs of 1e30 are finite, but overflow the network: the message says so, not 'a lower learning rate'."""
    x, y = quadrant_data(32)
    with pytest.raises(training.NonFiniteLossError, match=r"The inputs reach 1e\+30: scale them to about \[0, 1\] "
                                                          r"first") as error:
        compiled(seed=0).fit(x * 1e30, y, epochs=1, batch_size=16, verbose=0)
    assert "learning rate" not in str(error.value)
    model = plain_model(seed=1, poison_at=1)
    with pytest.raises(training.NonFiniteLossError, match="No update had been made, so the learning rate played "
                                                          "no part") as error:
        model.train_on_batch(x, y)
    assert "Try a lower learning rate" not in str(error.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_train_on_batch_refuses_bad_input_and_keeps_its_weights():
    x, y = quadrant_data(20)
    model = plain_model(seed=1)
    before = model.get_weights()
    x[3, 1, 2, 0] = np.nan
    x[7, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"bad input: x holds 2 non-finite values \(NaN or infinity\), "
                                         r"in samples \[3, 7\]") as error:
        model.train_on_batch(x, y)
    assert "learning rate" not in str(error.value)
    poisoned = plain_model(seed=1, poison_at=1)
    with pytest.raises(training.NonFiniteLossError, match="weights were not updated"):
        poisoned.train_on_batch(x[8:], y[8:])
    for a, b, c in zip(model.get_weights(), poisoned.get_weights(), before):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    assert model.optimizer.iterations == poisoned.optimizer.iterations == 0


def test_nan_only_in_the_validation_data_is_bad_input_before_any_step():
    x, y = quadrant_data(40)
    x_val, y_val = quadrant_data(10, seed=1)
    x_val[4, 0, 0, 0] = np.nan
    model = plain_model(seed=1)
    with pytest.raises(ValueError, match=r"validation_data x holds 1 non-finite value .* samples \[4\]"):
        model.fit(x, y, epochs=1, validation_data=(x_val, y_val), verbose=0)
    y[35, 0] = np.nan
    with pytest.raises(ValueError, match=r"bad input: y holds 1 non-finite value .* samples \[35\]"):
        model.fit(x, y, epochs=1, validation_split=0.25, verbose=0)   # in the part that validation_split holds out
    assert model.optimizer.iterations == 0


def test_verbose_output_is_one_line_per_epoch_like_keras(capsys):
    model = compiled(seed=0)
    model.fit(*quadrant_data(40), epochs=2, batch_size=16, validation_split=0.25, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("2/2 [") and "ms/step - loss: " in lines[1]
    assert lines[1].split(" - ")[2:] and "val_accuracy: " in lines[3]


def test_quiet_mode_prints_nothing(capsys):
    compiled(seed=0).fit(*quadrant_data(20), epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_last_partial_batch_is_used():
    model = compiled(seed=0)
    model.fit(*quadrant_data(35), epochs=1, batch_size=16, verbose=0)
    assert model.optimizer.iterations == 3


def test_the_progress_bar_fits_where_it_runs(monkeypatch):
    import types

    import tqdm.notebook
    import tqdm.std

    assert training.progress_bar() == (tqdm.std.tqdm, None)        # a terminal's bar, none in a log file

    class KernelShell:
        config = {"IPKernelApp": {}}

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = KernelShell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)          # Jupyter without ipywidgets: a text bar
    assert training.progress_bar() == (tqdm.std.tqdm, False)
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    assert training.progress_bar() == (tqdm.notebook.tqdm, False)  # with it: the widget


def test_the_fit_loop_uses_only_what_trainable_lists():
    """training.py drives a model through the members of ``training.Trainable`` and nothing else
    (no guessing at a model's insides), and Sequential has every one of them."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(training))
    def is_model(node):     # ``model`` or ``self.model``
        return (isinstance(node, ast.Name) and node.id == "model") or (
            isinstance(node, ast.Attribute) and node.attr == "model" and isinstance(node.value, ast.Name))

    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_model(node.value)}
    listed = set(training.Trainable.__annotations__) | {
        name for name, value in vars(training.Trainable).items() if callable(value) and not name.startswith("_")}
    assert used and used <= listed, sorted(used - listed)
    model = small_model()
    assert all(hasattr(model, name) for name in listed), sorted(name for name in listed if not hasattr(model, name))
