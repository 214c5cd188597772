"""The Keras notebook's network in Keras itself: the peer that matters most (TensorFlow on the CPU; on a
GPU, Keras 3 on JAX: ``compare.py`` sets ``KERAS_BACKEND=jax`` before this module is imported).

The notebook's model line for line: 32x32x1 input; Conv2D(32, 3, relu) 'valid'; LRN as a ``Lambda`` of
``tf.nn.local_response_normalization(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)`` (on JAX the same
formula in ``keras.ops``: each channel's window of 5 summed from shifted slices);
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

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf


def set_threads(threads):
    """TensorFlow's threads for one op (``threads``) and between ops (1: a step's ops run in order,
    as minialex's do); returns the backend's version."""
    if BACKEND != "tensorflow":
        import jax
        return f"JAX {jax.__version__} on {jax.default_backend()}, Keras {keras.__version__}"
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}"


def lrn(x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """TensorFlow's LRN, channels last: x / (bias + alpha * sum of x^2 over each channel's window)^beta."""
    if BACKEND == "tensorflow":
        return tf.nn.local_response_normalization(x, depth_radius=depth_radius, bias=bias, alpha=alpha, beta=beta)
    ops, C = keras.ops, x.shape[-1]
    padded = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [depth_radius, depth_radius]])
    window = sum(padded[..., k:k + C] for k in range(2 * depth_radius + 1))
    return x / ops.power(bias + alpha * window, beta)


def notebook_model(seed=0):
    """The notebook's network, compiled as the notebook compiles it."""
    keras.utils.set_random_seed(seed)

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
        if BACKEND == "jax":                             # the batch on the card once, as minialex's is
            self.x, self.y = keras.ops.convert_to_tensor(self.x), keras.ops.convert_to_tensor(self.y)
        self.model.train_on_batch(self.x, self.y)        # traces and compiles the step once

    def train_step(self):
        self.model.train_on_batch(self.x, self.y)

    def predict(self, images, batch_size):
        return self.model.predict(images, batch_size=batch_size, verbose=0)
