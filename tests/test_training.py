"""The fit loop: checkpoints that resume exactly, the non-finite guard, progress output."""
import numpy as np
import pytest

from minialex import backend, random, training
from minialex.layers import Dense, Flatten
from minialex.models import Sequential
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


def nan_data(bad_index):
    x, y = quadrant_data(60)
    x[bad_index, 0, 0, 0] = np.nan
    return x, y


def plain_model(seed):
    random.set_seed(seed)
    model = Sequential([Flatten(input_shape=(8, 8, 1)), Dense(8, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy")
    return model


def test_non_finite_loss_stops_with_the_last_good_weights():
    x, y = nan_data(bad_index=25)          # batch size 10: the third step sees it
    model = plain_model(seed=2)
    with pytest.raises(training.NonFiniteLossError, match="epoch 1, step 3"):
        model.fit(x, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    twin = plain_model(seed=2)
    twin.train_on_batch(x[:10], y[:10])
    twin.train_on_batch(x[10:20], y[10:20])
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_deferred_guard_as_on_a_gpu_rolls_back(monkeypatch):
    """The GPU path checks the device-side losses at refreshes and restores its last snapshot."""
    monkeypatch.setattr(backend, "get_backend", lambda: "cupy")   # arrays stay NumPy: only the policy changes
    x, y = nan_data(bad_index=45)
    model = plain_model(seed=2)
    initial = model.get_weights()
    with pytest.raises(training.NonFiniteLossError, match=r"epoch 1, step 5;.*restored to those after step 0"):
        model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
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
