"""Each layer of ``minialex.layers`` alone on a GPU: a small case of it and its launch budget.

``LAYER_BUDGETS`` maps a layer's class name to (a function that makes one, an input shape, the most
launches its (training forward, backward, inference forward) may take on a GPU), counted on the CPU
by ``minialex.stand_in``. tests/test_launch_count.py holds every layer to its budget, and
tests/test_layer_recipe.py asks every layer for an entry (docs/adding_a_layer.md).
"""
from __future__ import annotations

import numpy

from minialex import backend
from minialex.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D,
                             ReLU, Softmax)
from minialex.stand_in import LaunchCounter, counting

LAYER_BUDGETS = {
    "Conv2D": (lambda: Conv2D(8, 3, padding="same", activation="relu"), (4, 8, 8, 3), (4, 6, 4)),
    "MaxPool2D": (lambda: MaxPool2D(2), (4, 8, 8, 3), (1, 1, 1)),
    "LocalResponseNorm": (lambda: LocalResponseNorm(), (4, 8, 8, 3), (1, 1, 1)),
    "BatchNormalization": (lambda: BatchNormalization(), (4, 8, 8, 3), (4, 3, 1)),
    "Dense": (lambda: Dense(5, activation="relu"), (4, 8), (3, 4, 3)),
    "Dropout": (lambda: Dropout(0.5), (4, 8), (1, 1, 0)),
    "ReLU": (lambda: ReLU(), (4, 8), (1, 1, 1)),
    "Softmax": (lambda: Softmax(), (4, 8), (5, 4, 5)),
    "Flatten": (lambda: Flatten(), (4, 2, 2, 3), (0, 0, 0)),
}


def layer_launches(make_layer, shape):
    """(training forward, backward, inference forward) launches of a layer alone on inputs of ``shape``
    (built first: creating its weights is not counted), and the functions counted by assumption (not
    in ``stand_in.FUNCTION_LAUNCHES``)."""
    counter = LaunchCounter()
    with counting(counter):
        layer = make_layer()
        x = backend.to_device(numpy.random.default_rng(0).random(shape, dtype=numpy.float32))
        layer.forward(x)
        counter.counts.clear()
        with counter.label("inference"):
            layer.forward(x)
        with counter.label("forward"):
            y = layer.forward(x, training=True)
        dout = backend.xp().ones_like(y)
        with counter.label("backward"):
            layer.backward(dout)
    return (counter.counts["forward"], counter.counts["backward"], counter.counts["inference"]), counter.assumed
