"""Finite-difference gradient checks: the proof that every backward pass is right.

For a layer with output y = layer(x; params) and a random upstream gradient g (the same shape as
y), the backward pass claims to compute the vector-Jacobian products
    d/dx <g, y>   and   d/dparam <g, y>   for every parameter.
The check measures the same numbers by central differences in float64, one element at a time:
    d<g, y>/da_i  ~  (<g, y(a + h e_i)> - <g, y(a - h e_i)>) / 2h          (error O(h^2))
and reports, per tensor, the largest discrepancy relative to the tensor's largest gradient:
    error = max_i |analytic_i - numeric_i| / max_i max(|analytic_i|, |numeric_i|)
(scaling by the tensor's largest entry keeps exactly-zero gradients, such as max-pool's losers,
from dividing by zero). A layer passes when every tensor's error is <= 1e-6.

A check must be able to fail. Large tensors are checked at a sample of their entries, drawn mostly
among those whose analytic gradient is not zero (a ReLU and dropout leave many at zero, and a
sample of zeros would compare 0 with 0) and partly among the zeros (a backward that drops a term
shows there). A tensor whose checked entries all have zero analytic AND numeric gradient carries
no signal: its error is infinite and it fails.

Random layers (dropout) get the same mask in every evaluation: the run's generator is put back
to the same state before each forward pass.

    python -m minialex.gradcheck [--backend numpy|cupy|auto]

prints the table for every layer, every plain twin (``minialex.naive``), the fused loss and the whole
tutorial network.
"""
from __future__ import annotations

import argparse
import sys

import numpy

from . import backend, naive, random
from .layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D, ReLU,
                     Softmax)
from .losses import SoftmaxCrossEntropy
from .models import Sequential, alexnet_mnist

TOLERANCE = 1e-6
STEP = 1e-6


def tie_free(shape, seed=0, low=-1.0, high=1.0):
    """Distinct, evenly spaced values in random order (float64, on the active backend).

    Entries are low + (high - low) * (k + 1/4) / size: no two closer than (high - low) / size and none
    equal to 0, so a step of 1e-6 never crosses a max-pool tie or ReLU's kink at an input.
    """
    size = int(numpy.prod(shape))
    values = low + (high - low) * (numpy.arange(size) + 0.25) / size
    numpy.random.default_rng(seed).shuffle(values)
    return backend.to_device(values.reshape(shape), dtype="float64")


NO_SIGNAL = float("inf")


def relative_error(analytic, numeric) -> float:
    """max |a - n| / max(|a|, |n|) over the tensor; NO_SIGNAL (inf) when both are all zero."""
    analytic, numeric = backend.to_numpy(analytic).ravel(), backend.to_numpy(numeric).ravel()
    scale = max(numpy.abs(analytic).max(initial=0.0), numpy.abs(numeric).max(initial=0.0))
    return NO_SIGNAL if scale == 0.0 else float(numpy.abs(analytic - numeric).max() / scale)


def numerical_gradient(f, array, indices, step=STEP):
    """Central differences of the scalar function ``f()`` with respect to ``array.flat[indices]``.

    ``array`` is perturbed in place (and restored), so it must be the very array ``f`` reads.
    """
    if not array.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous array, to perturb it in place")
    flat = array.reshape(-1)
    numeric = numpy.empty(len(indices))
    for k, i in enumerate(indices):
        original = flat[i].copy()
        flat[i] = original + step
        plus = f()
        flat[i] = original - step
        minus = f()
        flat[i] = original
        numeric[k] = (plus - minus) / (2.0 * step)
    return numeric


def sample_indices(analytic, samples, seed):
    """Which entries to check: all of them, or ``samples`` drawn without replacement, three in
    four among the entries whose analytic gradient is nonzero and the rest among the zeros."""
    analytic = backend.to_numpy(analytic).ravel()
    if samples is None or samples >= analytic.size:
        return numpy.arange(analytic.size)
    rng = numpy.random.default_rng(seed)
    nonzero, zero = numpy.flatnonzero(analytic), numpy.flatnonzero(analytic == 0)
    from_zero = min(len(zero), max(samples // 4, samples - len(nonzero)))
    picked = [rng.choice(nonzero, samples - from_zero, replace=False), rng.choice(zero, from_zero, replace=False)]
    return numpy.sort(numpy.concatenate(picked))


def _compare(f, tensors, analytic, samples, seed):
    """{name: relative error} for each (name, array) in ``tensors`` against ``analytic[name]``."""
    errors = {}
    for k, (name, array) in enumerate(tensors):
        indices = sample_indices(analytic[name], samples, seed + k)
        numeric = numerical_gradient(f, array, indices)
        errors[name] = relative_error(backend.to_numpy(analytic[name]).ravel()[indices], numeric)
    return errors


def check_layer(layer, x, seed=0, samples=None):
    """Check ``layer``'s backward pass at input ``x``: {'x': error, param name: error, ...}.

    ``samples`` checks that many random elements per tensor instead of all of them.
    """
    rng_state = random.get_rng().get_state()

    def forward():
        random.get_rng().set_state(rng_state)
        return layer.forward(x, training=True)

    y = forward()
    upstream = backend.to_device(numpy.random.default_rng(seed).standard_normal(y.shape), dtype=y.dtype)
    analytic = {"x": layer.backward(upstream).copy()}
    analytic.update({name: grad.copy() for name, grad in layer.grads.items()})

    def objective():
        return float((forward() * upstream).sum())

    return _compare(objective, [("x", x)] + list(layer.params.items()), analytic, samples, seed)


def check_twin(forward, backward, inputs, seed=0):
    """Check a plain twin (``minialex.naive``): {input name: error} for every input its backward returns.

    ``forward(**inputs) -> y`` and ``backward(upstream, **inputs) -> {name: gradient}``; the
    objective is ``<upstream, y>`` as for a layer, every entry checked.
    """
    y = forward(**inputs)
    upstream = backend.to_device(numpy.random.default_rng(seed).standard_normal(y.shape), dtype=y.dtype)
    analytic = backward(upstream, **inputs)
    return _compare(lambda: float((forward(**inputs) * upstream).sum()),
                    [(name, inputs[name]) for name in analytic], analytic, None, seed)


def check_loss(loss, logits, targets, seed=0):
    """Check a loss's backward (d mean loss / d logits): {'logits': error}."""
    loss.forward(logits, targets)
    analytic = {"logits": loss.backward().copy()}
    return _compare(lambda: float(loss.forward(logits, targets)), [("logits", logits)], analytic, None, seed)


def check_model(model, x, y, seed=0, samples=20):
    """Check a compiled model end to end (layers + loss) on one batch: {'input' | 'layer/param': error}.

    Every tensor is checked at ``samples`` random elements (all of them would mean two forward
    passes per weight).
    """
    rng_state = random.get_rng().get_state()

    def loss_value():
        random.get_rng().set_state(rng_state)
        return float(model.forward_loss(x, y)[0])

    loss_value()
    analytic = {"input": model.backward(input_grad=True).copy()}
    tensors = [("input", x)]
    for layer in model.layers:
        for key, param in layer.params.items():
            analytic[f"{layer.name}/{key}"] = layer.grads[key].copy()
            tensors.append((f"{layer.name}/{key}", param))
    return _compare(loss_value, tensors, analytic, samples, seed)


# ---------------------------------------------------------------------------------------------
# The table


def batchnorm_with_weights(shape, **kwargs):
    """A float64 BatchNormalization for inputs of ``shape``, its gamma and beta drawn in [0.5, 2] (at
    gamma = 1 a backward that forgot gamma would pass)."""
    layer = BatchNormalization(input_shape=shape[1:], dtype="float64", **kwargs)
    for k, param in enumerate(layer.params.values()):
        param[...] = tie_free(param.shape, seed=k, low=0.5, high=2.0)
    return layer


def layer_cases():
    """(description, a function making the layer, input shape): every layer at odd sizes, both
    paddings, strides 1 and 2. Each call makes a fresh layer, built on the backend active then."""
    f64 = {"dtype": "float64"}
    return [
        ("Conv2D 3x3 valid relu, 2x7x9x3 -> 5", lambda: Conv2D(5, 3, activation="relu", **f64), (2, 7, 9, 3)),
        ("Conv2D 3x3 same stride 2, 1x8x7x2 -> 3", lambda: Conv2D(3, 3, strides=2, padding="same", **f64),
         (1, 8, 7, 2)),
        ("Conv2D 2x3 valid stride 2, 2x7x8x3 -> 4", lambda: Conv2D(4, (2, 3), strides=2, **f64), (2, 7, 8, 3)),
        ("Conv2D 3x3 same relu, 2x6x5x6 -> 4", lambda: Conv2D(4, 3, padding="same", activation="relu", **f64),
         (2, 6, 5, 6)),
        ("MaxPool2D 2x2, 2x7x7x3 (odd)", lambda: MaxPool2D(2), (2, 7, 7, 3)),
        ("MaxPool2D 3x3 stride 2 same, 1x7x6x2", lambda: MaxPool2D(3, strides=2, padding="same"), (1, 7, 6, 2)),
        ("LRN r=2 alpha=2e-5 (tutorial), 2x3x4x7", lambda: LocalResponseNorm(2, 1.0, 2e-5, 0.75),
         (2, 3, 4, 7)),
        ("LRN r=2 alpha=0.1 beta=0.75, 2x3x4x7", lambda: LocalResponseNorm(2, 1.0, 0.1, 0.75), (2, 3, 4, 7)),
        ("LRN r=1 bias=2 alpha=0.5 beta=0.6, 1x2x3x5", lambda: LocalResponseNorm(1, 2.0, 0.5, 0.6),
         (1, 2, 3, 5)),
        ("BatchNormalization, 2x3x4x5", lambda: batchnorm_with_weights((2, 3, 4, 5)), (2, 3, 4, 5)),
        ("BatchNormalization center=False epsilon=0.1, 6x4", lambda: batchnorm_with_weights(
            (6, 4), center=False, epsilon=0.1), (6, 4)),
        ("BatchNormalization scale=False momentum=0.9, 3x2x2x3", lambda: batchnorm_with_weights(
            (3, 2, 2, 3), scale=False, momentum=0.9), (3, 2, 2, 3)),
        ("Dropout 0.5 (mask held), 3x11", lambda: Dropout(0.5), (3, 11)),
        ("Dense 13 -> 7 relu", lambda: Dense(7, activation="relu", **f64), (3, 13)),
        ("Dense 6 -> 5 softmax", lambda: Dense(5, activation="softmax", **f64), (4, 6)),
        ("ReLU, 3x5x2", lambda: ReLU(), (3, 5, 2)),
        ("Softmax, 4x6", lambda: Softmax(), (4, 6)),
        ("Flatten, 2x3x4x5", lambda: Flatten(), (2, 3, 4, 5)),
    ]


def twin_cases(seed=0):
    """(description, twin, forward, backward, inputs) for every plain twin of ``minialex.naive`` (``twin``
    its name there, as ``naive.TWINS`` gives it), at tiny sizes (the twins loop over every pixel)."""
    def arrays(**shapes):
        return {name: tie_free(shape, seed + k) for k, (name, shape) in enumerate(shapes.items())}

    mask = backend.to_device((numpy.random.default_rng(seed).random((3, 7)) >= 0.5) * 2.0, dtype="float64")
    conv = {"strides": (2, 2), "padding": "same"}
    pool = {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"}
    lrn = {"depth_radius": 2, "bias": 1.0, "alpha": 0.1, "beta": 0.75}
    return [
        ("naive conv2d 3x3 same stride 2, 1x5x4x2 -> 3", "conv2d",
         lambda x, kernel, bias: naive.conv2d_forward(x, kernel, bias, **conv),
         lambda d, x, kernel, bias: dict(zip(("x", "kernel", "bias"), naive.conv2d_backward(d, x, kernel, **conv))),
         arrays(x=(1, 5, 4, 2), kernel=(3, 3, 2, 3), bias=(3,))),
        ("naive conv2d 2x2 valid, 2x4x3x2 -> 2", "conv2d",
         lambda x, kernel, bias: naive.conv2d_forward(x, kernel, bias),
         lambda d, x, kernel, bias: dict(zip(("x", "kernel", "bias"), naive.conv2d_backward(d, x, kernel))),
         arrays(x=(2, 4, 3, 2), kernel=(2, 2, 2, 2), bias=(2,))),
        ("naive maxpool2d 3x3 stride 2 same, 1x5x6x2", "maxpool2d",
         lambda x: naive.maxpool2d_forward(x, **pool),
         lambda d, x: {"x": naive.maxpool2d_backward(d, x, **pool)}, arrays(x=(1, 5, 6, 2))),
        ("naive LRN r=2 alpha=0.1, 2x2x2x6", "lrn",
         lambda x: naive.lrn_forward(x, **lrn),
         lambda d, x: {"x": naive.lrn_backward(d, x, **lrn)}, arrays(x=(2, 2, 2, 6))),
        ("naive batchnorm epsilon=0.1, 2x2x3x3", "batchnorm",
         lambda x, gamma, beta: naive.batchnorm_forward(x, gamma, beta, 0.1),
         lambda d, x, gamma, beta: dict(zip(("x", "gamma", "beta"), naive.batchnorm_backward(d, x, gamma, 0.1))),
         arrays(x=(2, 2, 3, 3), gamma=(3,), beta=(3,))),
        ("naive dense 5 -> 3", "dense",
         naive.dense_forward,
         lambda d, x, kernel, bias: dict(zip(("x", "kernel", "bias"), naive.dense_backward(d, x, kernel))),
         arrays(x=(4, 5), kernel=(5, 3), bias=(3,))),
        ("naive dropout (mask given), 3x7", "dropout",
         lambda x: naive.dropout_forward(x, mask),
         lambda d, x: {"x": naive.dropout_backward(d, mask)}, arrays(x=(3, 7))),
        ("naive relu, 3x5", "relu", naive.relu_forward, lambda d, x: {"x": naive.relu_backward(d, x)},
         arrays(x=(3, 5))),
        ("naive softmax, 3x5", "softmax", naive.softmax_forward, lambda d, x: {"x": naive.softmax_backward(d, x)},
         arrays(x=(3, 5))),
        ("naive flatten, 2x3x2x2", "flatten", naive.flatten_forward, lambda d, x: {"x": naive.flatten_backward(d, x)},
         arrays(x=(2, 3, 2, 2))),
    ]


def softmax_inside_model():
    """A compiled float64 model whose Softmax layer is not the last: its backward runs in training
    (a last Softmax would be fused into the loss, and its backward skipped)."""
    model = Sequential([Dense(6, input_shape=(5,), dtype="float64"), Softmax(),
                        Dense(4, activation="softmax", dtype="float64")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def run_checks(seed=0):
    """Yield (case, tensor, error) for every layer case, every plain twin, the fused loss, a model
    with a Softmax layer inside and the whole tutorial network."""
    for k, (description, make_layer, shape) in enumerate(layer_cases()):
        for tensor, error in check_layer(make_layer(), tie_free(shape, seed + k), seed=seed + k).items():
            yield description, tensor, error

    for description, _, forward, backward, inputs in twin_cases(seed):
        for tensor, error in check_twin(forward, backward, inputs, seed=seed).items():
            yield description, tensor, error

    rng = numpy.random.default_rng(seed)
    logits = backend.to_device(rng.standard_normal((5, 7)) * 3.0, dtype="float64")
    targets = backend.to_device(numpy.eye(7)[rng.integers(0, 7, 5)], dtype="float64")
    for tensor, error in check_loss(SoftmaxCrossEntropy(), logits, targets, seed=seed).items():
        yield "SoftmaxCrossEntropy (fused), 5x7", tensor, error
    analytic = {"logits": naive.softmax_cross_entropy_backward(logits, targets)}
    for tensor, error in _compare(lambda: float(naive.softmax_cross_entropy_forward(logits, targets)),
                                  [("logits", logits)], analytic, None, seed).items():
        yield "naive softmax cross-entropy, 5x7", tensor, error

    random.set_seed(seed)
    for tensor, error in check_model(softmax_inside_model(), tie_free((3, 5), seed),
                                     backend.to_device(numpy.eye(4)[[0, 3, 1]], dtype="float64"),
                                     seed=seed, samples=None).items():
        yield "Dense -> Softmax layer -> Dense softmax, model", tensor, error

    model = alexnet_mnist(dtype="float64")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = tie_free((2, 32, 32, 1), seed, low=0.0, high=1.0)
    y = backend.to_device(numpy.eye(10)[[3, 8]], dtype="float64")
    for tensor, error in check_model(model, x, y, seed=seed, samples=20).items():
        yield "alexnet_mnist end to end, batch 2 (20 elements/tensor)", tensor, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minialex.gradcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        backend.set_backend(args.backend)
    except backend.BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Gradient check in float64 on {backend.describe_device()}; pass: max relative error <= {TOLERANCE:g}")
    header = f"{'layer':<56} {'tensor':<22} {'max rel error':>13}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for description, tensor, error in run_checks(args.seed):
        passed = error <= TOLERANCE
        failures += not passed
        shown = "no signal" if error == NO_SIGNAL else f"{error:.2e}"
        print(f"{description:<56} {tensor:<22} {shown:>13}  {'PASS' if passed else 'FAIL'}", flush=True)
    print(f"{'all passed' if not failures else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
