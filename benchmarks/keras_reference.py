"""The Keras notebook's network in Keras itself (TensorFlow on the CPU): the peer that matters most.

The notebook's model line for line: 32x32x1 input; Conv2D(32, 3, relu) 'valid'; LRN as a ``Lambda`` of
``tf.nn.local_response_normalization(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)``;
MaxPooling2D(2); Conv2D(64, 3, same, relu); LRN; MaxPooling2D; Conv2D(128), Conv2D(128), Conv2D(64)
(3x3, same, relu); Flatten; Dense(84, relu); Dropout(0.5); Dense(84, relu); Dropout(0.5);
Dense(10, softmax); ``Adam()`` and categorical cross-entropy, as the notebook compiles it. A training
step is ``train_on_batch`` (the compiled step ``fit`` runs per batch). Import this module only where
TensorFlow and Keras are installed (``pip install 'minialex[bench]'``), and call ``set_threads`` before
anything else of TensorFlow runs: its thread pools are made once.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")       # no banner about CPU instructions

import keras  # noqa: E402
import numpy  # noqa: E402
import tensorflow as tf  # noqa: E402


def set_threads(threads):
    """TensorFlow's threads for one op (``threads``) and between ops (1: a step's ops run in order,
    as minialex's do); returns TensorFlow's version."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}"


def notebook_model(seed=0):
    """The notebook's network, compiled as the notebook compiles it."""
    keras.utils.set_random_seed(seed)

    def lrn(x):
        return tf.nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)

    layers = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.Lambda(lrn),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Lambda(lrn),
        layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(84, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(84, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


class Reference:
    """The notebook's model and one batch (NumPy arrays, NHWC and one-hot, as minialex takes them)."""

    def __init__(self, x, y, seed=0):
        self.model = notebook_model(seed)
        self.x, self.y = numpy.asarray(x, dtype=numpy.float32), numpy.asarray(y, dtype=numpy.float32)
        self.model.train_on_batch(self.x, self.y)        # traces and compiles the step once

    def train_step(self):
        self.model.train_on_batch(self.x, self.y)

    def predict(self, images, batch_size):
        return self.model.predict(images, batch_size=batch_size, verbose=0)
