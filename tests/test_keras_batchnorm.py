"""Keras weights for any Sequential: a small BatchNormalization network made with real Keras
(tests/fixtures/keras_batchnorm/, see its README.md) in minialex, and back. h5py, no TensorFlow.

Its three BatchNormalization layers have 4, 3 and 3 variables in Keras's order (gamma, beta,
moving_mean, moving_variance; scale=False drops gamma, center=False beta), on images and on a Dense
layer's output. With Keras's weights, minialex predicts what Keras predicted (moving statistics), and
one SGD step on 50 images (batch statistics) gives Keras's loss and Keras's weights afterwards,
moving statistics included: Keras's update is moving * momentum + batch * (1 - momentum) with the
batch's biased variance.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from minialex import backend
from minialex.data import preprocess_images, to_categorical
from minialex.layers import BatchNormalization, Conv2D, Dense, Flatten, MaxPool2D
from minialex.models import Sequential
from minialex.optimizers import SGD

pytest.importorskip("h5py")

from minialex.keras_weights import keras_keys, load_keras_weights, read_keras_weights, save_keras_weights  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HERE = FIXTURES / "keras_batchnorm"
STEP = json.loads((HERE / "step.json").read_text())


def keras_twin():
    """make_fixture.py's network, layer for layer."""
    return Sequential([
        Conv2D(8, 3, activation="relu", input_shape=(32, 32, 1)),
        BatchNormalization(),
        MaxPool2D(2),
        Conv2D(16, 3, padding="same", activation="relu"),
        BatchNormalization(scale=False),
        MaxPool2D(2),
        Flatten(),
        Dense(32, activation="relu"),
        BatchNormalization(center=False, momentum=0.9, epsilon=0.01),
        Dense(10, activation="softmax"),
    ])


def step_batch():
    """The notebook fixture's 50 test images and their labels, preprocessed."""
    images, labels = np.load(FIXTURES / "keras" / "images.npy"), np.load(FIXTURES / "keras" / "labels.npy")
    return preprocess_images(images), to_categorical(labels, 10)


def by_name(model, arrays_by_key):
    """{'layer/name': array} of a file's arrays read by ``read_keras_weights``, named as the model names them."""
    weights = {}
    for layer, key in keras_keys(model):
        names = [name for name, _ in model.weight_items() if name.startswith(layer.name + "/")]
        weights.update(dict(zip(names, arrays_by_key.get(key, []))))
    return weights


def test_the_file_holds_keras_s_variables_in_keras_s_order():
    found = read_keras_weights(HERE / "batchnorm.weights.h5")
    model = keras_twin()
    assert [len(found[key]) for _, key in keras_keys(model) if key.startswith("batch_norm")] == [4, 3, 3]
    names = [name for name, _ in model.weight_items() if name.startswith("batch_normalization/")]
    assert names == [f"batch_normalization/{n}" for n in ("gamma", "beta", "moving_mean", "moving_variance")]
    variances = found["batch_normalization"][3]
    assert (variances > 0).all() and not np.allclose(variances, 1.0)       # moved from Keras's initial 1


def test_predictions_equal_keras_s_with_the_moving_statistics(xp_backend):
    model = load_keras_weights(keras_twin(), HERE / "batchnorm.weights.h5")
    predictions = model.predict(step_batch()[0])
    expected = np.load(HERE / "predictions.npy")
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=1e-5)     # 4.2e-7 measured
    assert np.array_equal(predictions.argmax(axis=1), expected.argmax(axis=1))


def test_a_training_step_gives_keras_s_loss_and_weights(xp_backend):
    model = load_keras_weights(keras_twin(), HERE / "batchnorm.weights.h5")
    model.compile(optimizer=SGD(STEP["step_learning_rate"]), loss="categorical_crossentropy")
    loss, _ = model.train_on_batch(*step_batch())
    # minialex 0.2009290 (float64 gives 0.2009291), Keras's float32 0.2009256: 1.7e-5 relative
    assert loss == pytest.approx(STEP["step_loss"], rel=1e-4)
    expected = by_name(model, read_keras_weights(HERE / "step.weights.h5"))
    got = {name: backend.to_numpy(weight) for name, weight in model.weight_items()}
    assert set(got) == set(expected)
    for name, weight in got.items():
        # conv2d's bias gradient sums 45,000 values that nearly cancel (BatchNormalization's dx sums to 0
        # over a channel): float32 gets it to ~1e-4 on both sides, 2.8e-5 after the step; the rest to 1e-5
        atol = 1e-4 if name == "conv2d/bias" else 1e-5
        np.testing.assert_allclose(weight, expected[name], rtol=1e-5, atol=atol, err_msg=name)


def test_saving_writes_what_keras_wrote(tmp_path):
    model = load_keras_weights(keras_twin(), HERE / "batchnorm.weights.h5")
    path = tmp_path / "minialex.weights.h5"
    save_keras_weights(model, path)
    ours, theirs = read_keras_weights(path), read_keras_weights(HERE / "batchnorm.weights.h5")
    assert set(ours) == set(theirs)
    for key in theirs:
        assert len(ours[key]) == len(theirs[key]), key
        for mine, keras in zip(ours[key], theirs[key]):
            np.testing.assert_array_equal(mine, keras)


def test_a_layer_without_a_keras_counterpart_is_named(monkeypatch):
    from minialex import keras_weights

    monkeypatch.setitem(keras_weights.KERAS_CLASSES, "BatchNormalization", None)
    with pytest.raises(ValueError, match="'batch_normalization': BatchNormalization has no Keras counterpart"):
        keras_keys(keras_twin())
