"""Sequential: building, summary, compile, training, evaluate/predict and weights."""
import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minialex import backend, losses, random
from minialex.layers import Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D, Softmax
from minialex.models import Sequential, alexnet_mnist
from minialex.optimizers import SGD, Adam
from minialex.parallel import INFERENCE_ROWS


def quadrant_data(n=240, seed=0):
    """8x8 images with one bright quadrant among three; the label is which."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0)]):
        x[labels == k, r:r + 4, c:c + 4, 0] += 0.7
    return x, np.eye(3, dtype=np.float32)[labels]


def small_model(dtype="float32"):
    return Sequential([
        Conv2D(4, 3, activation="relu", padding="same", input_shape=(8, 8, 1), dtype=dtype),
        MaxPool2D(2),
        Flatten(),
        Dense(16, activation="relu", dtype=dtype),
        Dropout(0.2),
        Dense(3, activation="softmax", dtype=dtype),
    ])


def test_summary_matches_keras_for_the_tutorial_model(capsys):
    model = alexnet_mnist()
    model.summary()
    text = capsys.readouterr().out
    counts = [layer.count_params() for layer in model.layers]
    assert counts == [320, 0, 0, 18496, 0, 0, 73856, 147584, 73792, 0, 263508, 0, 7140, 0, 850]
    shapes = [layer.output_shape for layer in model.layers]
    assert shapes[:6] == [(30, 30, 32), (30, 30, 32), (15, 15, 32), (15, 15, 64), (15, 15, 64), (7, 7, 64)]
    assert shapes[8:10] == [(7, 7, 64), (3136,)] and shapes[-1] == (10,)
    assert "Total params: 585,546" in text and "(None, 7, 7, 128)" in text and "conv2d_4 (Conv2D)" in text


def test_add_and_unique_names():
    model = Sequential()
    model.add(Dense(4, input_shape=(3,)))
    model.add(Dense(2))
    assert [layer.name for layer in model.layers] == ["dense", "dense_1"]
    assert model.built and model.output_shape == (2,)


def test_parameters_live_in_one_flat_buffer(xp_backend):
    model = small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    total = model.count_params()
    assert model.flat_parameters.shape == (total,)
    model.flat_parameters[...] = 0.5
    assert float(model.layers[0].params["kernel"].sum()) == pytest.approx(0.5 * 36)


def test_fit_learns_and_reports_keras_history(xp_backend):
    x, y = quadrant_data()
    random.set_seed(0)
    model = small_model()
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=6, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 6 for v in history.history.values()) and history.epoch == list(range(6))
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["val_accuracy"][-1] >= 0.9
    loss, accuracy = model.evaluate(x[180:], y[180:], batch_size=7)
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    assert accuracy == pytest.approx(history.history["val_accuracy"][-1])


def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = quadrant_data(100)
    model = small_model()
    model.compile(optimizer=SGD(1e-9), loss="categorical_crossentropy")
    history = model.fit(x, y, epochs=1, batch_size=32, validation_split=0.3, verbose=0)
    expected_loss, expected_accuracy = model.evaluate(x[70:], y[70:])
    assert history.history["val_loss"][0] == pytest.approx(expected_loss, rel=1e-5)
    assert history.history["val_accuracy"][0] == pytest.approx(expected_accuracy)


def test_the_same_seed_gives_the_same_run(xp_backend):
    x, y = quadrant_data(64)
    runs = []
    for _ in range(2):
        random.set_seed(11)
        model = small_model()
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        runs.append((model.fit(x, y, epochs=2, batch_size=10, verbose=0).history, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_train_on_batch_predict_and_evaluate_in_batches(xp_backend):
    x, y = quadrant_data(50)
    model = small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    loss, accuracy = model.train_on_batch(x[:20], y[:20])
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    whole = model.predict(x, batch_size=50)
    assert isinstance(whole, np.ndarray) and whole.shape == (50, 3)
    np.testing.assert_allclose(model.predict(x, batch_size=7), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-5)
    assert model.evaluate(x, y, batch_size=3) == pytest.approx(model.evaluate(x, y, batch_size=50), rel=1e-5)


def test_cpu_inference_runs_in_pieces_that_stay_near_the_core(monkeypatch):
    """A batch of 128 runs as pieces of at most parallel.INFERENCE_ROWS samples, on every thread, in order."""
    x, _ = quadrant_data(100)
    model = small_model()
    whole = model.predict(x, batch_size=100)
    seen, forward = [], model._forward
    monkeypatch.setattr(model, "_forward", lambda x: (seen.append(x.shape[0]), forward(x))[1])
    with threadpool_limits(2, user_api="blas"):
        pieces = model.predict(x, batch_size=128)
    assert sorted(seen) == [100 % INFERENCE_ROWS] + [INFERENCE_ROWS] * (100 // INFERENCE_ROWS)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)


def test_fused_loss_equals_loss_on_logits_model():
    x, y = quadrant_data(20)
    random.set_seed(3)
    with_softmax = small_model()
    with_softmax.compile(loss="categorical_crossentropy")
    random.set_seed(3)
    logits_model = Sequential(small_model().layers[:-1] + [Dense(3)])
    logits_model.compile(loss=losses.SoftmaxCrossEntropy())
    logits_model.set_weights(with_softmax.get_weights())
    assert with_softmax.evaluate(x, y) == pytest.approx(logits_model.evaluate(x, y), rel=1e-6)


def test_separate_softmax_layer_is_fused_too():
    model = Sequential([Dense(3, input_shape=(4,), dtype="float64"), Softmax()])
    model.compile(loss="categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((5, 4))
    y = np.eye(3)[[0, 1, 2, 0, 1]]
    model.train_on_batch(x, y)
    np.testing.assert_allclose(model.predict(x).sum(axis=1), 1.0)


def test_save_and_load_weights_round_trip(tmp_path, xp_backend):
    x, _ = quadrant_data(10)
    model = small_model()
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    other = small_model()
    other.load_weights(path)
    np.testing.assert_array_equal(model.predict(x), other.predict(x))
    with np.load(path, allow_pickle=False) as data:
        assert "conv2d/kernel" in data.files and data["conv2d/kernel"].shape == (3, 3, 1, 4)


def test_load_weights_checks_names_and_shapes(tmp_path):
    model = small_model()
    model.save_weights(tmp_path / "w.npz")
    wider = Sequential([Conv2D(5, 3, activation="relu", padding="same", input_shape=(8, 8, 1)), MaxPool2D(2),
                        Flatten(), Dense(16, activation="relu"), Dropout(0.2), Dense(3, activation="softmax")])
    before = wider.get_weights()
    with pytest.raises(ValueError, match=r"conv2d/kernel: expected shape \(3, 3, 1, 5\), got \(3, 3, 1, 4\)"):
        wider.load_weights(tmp_path / "w.npz")
    for a, b in zip(before, wider.get_weights()):
        np.testing.assert_array_equal(a, b)   # nothing was half-loaded
    with pytest.raises(ValueError, match="missing"):
        Sequential([Dense(2, input_shape=(3,))]).load_weights(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        model.load_weights(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        model.load_weights(tmp_path / "junk.npz")


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = small_model()
    model.save_weights(tmp_path / "w.npz")
    before = (tmp_path / "w.npz").read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == ["w.npz"] and (tmp_path / "w.npz").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.save_weights(tmp_path / "nowhere" / "w.npz")


def test_compile_and_input_errors():
    model = Sequential([Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="needs a model ending in softmax"):
        model.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="unknown loss"):
        model.compile(loss="mse")
    softmax_model = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    with pytest.raises(RuntimeError, match="compile the model first"):
        softmax_model.fit(np.zeros((2, 4)), np.eye(3)[[0, 1]])
    softmax_model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"inputs of shape \(batch,\) \+ \(4,\)"):
        softmax_model.fit(np.zeros((2, 5)), np.eye(3)[[0, 1]], verbose=0)
    with pytest.raises(ValueError, match="one-hot"):
        softmax_model.fit(np.zeros((2, 4)), np.array([0, 1]), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        softmax_model.fit(np.zeros((2, 4)), np.eye(3)[[0, 1]], batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        softmax_model.fit(np.zeros((2, 4)), np.eye(3)[[0, 1]], validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="unknown metrics"):
        softmax_model.compile(loss="categorical_crossentropy", metrics=["auc"])


def test_the_tutorial_network_layers():
    model = alexnet_mnist()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "LocalResponseNorm", "MaxPool2D", "Conv2D", "LocalResponseNorm", "MaxPool2D",
                     "Conv2D", "Conv2D", "Conv2D", "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    lrn = model.layers[1]
    assert isinstance(lrn, LocalResponseNorm)
    assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 1.0, 2e-5, 0.75)
    assert model.layers[0].padding == "valid" and all(model.layers[i].padding == "same" for i in (3, 6, 7, 8))


def test_weights_move_between_backends(tmp_path, xp_backend):
    """Saved on the backend under test, loaded on NumPy (and back): the same predictions."""
    x, _ = quadrant_data(12)
    model = small_model()
    model.save_weights(tmp_path / "w.npz")
    on_device = model.predict(x)
    with backend.set_backend("numpy"):
        host_model = small_model()
        host_model.load_weights(tmp_path / "w.npz")
        np.testing.assert_allclose(host_model.predict(x), on_device, rtol=1e-5, atol=1e-6)
        host_model.save_weights(tmp_path / "back.npz")
    again = small_model()
    again.load_weights(tmp_path / "back.npz")
    np.testing.assert_allclose(again.predict(x), on_device, rtol=1e-6, atol=1e-7)
