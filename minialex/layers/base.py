"""Layer: the contract every layer obeys, and the little they share.

The contract (tests, the gradient checker and Sequential rely on it):

- ``forward(x, training=False) -> y`` with ``x`` batch-first, channels-last (N, H, W, C) for images;
- ``backward(dout, input_grad=True) -> dx``, after a ``forward(..., training=True)``; it also fills
  ``grads``. ``input_grad=False`` says the caller needs no dx (Sequential's first layer during
  training): layers for which dx costs a matrix product (Conv2D, Dense) then skip it and return
  None, the others return dx anyway. Only a training forward keeps what backward needs, so
  inference holds no memory and a forward with training=False may run on several threads at once;
- ``params`` and ``grads``: dicts of arrays with the same keys (empty for parameter-free layers).
  Both are updated *in place*, never rebound: ``params[k][...] = v`` changes the layer (and a
  model may keep them as views of one flat buffer: ``minialex.flat``);
- ``state``: a dict of arrays that are weights but not trained (BatchNormalization's moving mean and
  variance): saved, loaded and checkpointed with ``params``, counted by ``count_params`` (Keras's
  non-trainable weights), but they have no gradient and the optimiser never sees them (a model keeps
  them in a flat buffer of their own). A training forward may update them, in place;
- ``mixes_samples``: True for a layer whose training output for one sample depends on the other
  samples of the batch (BatchNormalization's batch statistics). Such a layer's training forward and
  backward are also programs for one shard of the batch: ``forward_meeting(x)`` and
  ``backward_meeting(dout, input_grad)`` are generators that yield their rows' sums where they need
  the whole batch's, and go on with the totals that the ``yield`` returns (``parallel.run_meeting``
  adds up every shard's part, in shard order). A batch in one piece runs the same sums through the
  same code, as its only shard (``alone``), so each formula is written once. What is done once a
  batch (BatchNormalization's moving statistics, its gamma and beta gradients) a replica
  (``is_replica``) leaves to the model's own layer, which runs shard 0;
- layers with parameters take ``dtype=`` (default 'float32'; the gradient checks use 'float64') and
  create them from ``input_shape=`` or on the first forward, on the active backend;
- a layer runs on whatever backend its input lives on: it takes ``xp`` from its arrays;
- what a training forward keeps for backward lives in the layer's own attributes (or in a layer
  it holds, such as Conv2D's ReLU), the same on the CPU and on a GPU except where the table says:

    layer                 kept from a training forward for backward
    Conv2D                _cols (the im2col matrix), _x_shape, _activated; its activation's own
    Dense                 _x, _activated; its activation's own
    MaxPool2D             _x, _y, _column_max (the first pass's maxima; None on a GPU, whose kernel reads x)
    LocalResponseNorm     _x, _y, _den, _den_beta (den^beta; None on a GPU, whose kernel recomputes it)
    Dropout               _mask (None when rate = 0)
    BatchNormalization    _xhat (the normalised input), _variance (the batch's), _M (the batch's rows)
    ReLU, Softmax         _y
    Flatten               _x_shape

  (``tests/test_layers.py`` holds this table to what the layers keep.)
"""
from __future__ import annotations

import copy
import re

from .. import backend, kernels, random


class Layer:
    #: number of axes the input must have, batch axis included (None: any number)
    input_ndim: int | None = None
    #: True when a sample's training output depends on the other samples of its batch (see above)
    mixes_samples: bool = False
    #: True on a copy made by ``replica()`` for one shard of a data-parallel step
    is_replica: bool = False

    def __init__(self, input_shape=None, dtype="float32", name=None):
        self.dtype = float_dtype(dtype)
        self.name = name or re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(self).__name__).lower()
        self.params: dict = {}
        self.grads: dict = {}
        self.state: dict = {}
        self.input_shape = None
        self.output_shape = None
        self.built = False
        if input_shape is not None:
            self.build(tuple(input_shape))

    # ---- shapes and parameters -------------------------------------------------------------
    def build(self, input_shape):
        """Create parameters for inputs of per-sample shape ``input_shape`` (batch axis excluded)."""
        if not all(hasattr(d, "__index__") for d in input_shape) or any(int(d) < 1 for d in input_shape):
            raise ValueError(f"{self.name}: input_shape must be sizes of at least 1 (per sample, no batch axis), "
                             f"got {tuple(input_shape)}")
        input_shape = tuple(int(d) for d in input_shape)
        if self.input_ndim is not None and len(input_shape) != self.input_ndim - 1:
            raise ValueError(f"{self.name}: expects inputs with {self.input_ndim} axes (batch first), "
                             f"got per-sample shape {input_shape}")
        self.input_shape = input_shape
        self.output_shape = self.compute_output_shape(input_shape)
        self.create_params(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        """Per-sample output shape for a per-sample input shape."""
        return tuple(input_shape)

    def create_params(self, input_shape):
        """Layers with parameters override this and call ``add_param``."""

    def add_param(self, name, value):
        self.params[name] = value
        self.grads[name] = backend.xp().zeros_like(value)

    def add_state(self, name, value):
        """A weight that is not trained (no gradient, never in the optimiser's buffer)."""
        self.state[name] = value

    @property
    def trainable_weights(self) -> list:
        """The trained weights (``params``), as Keras's ``layer.trainable_weights``."""
        return list(self.params.values())

    @property
    def non_trainable_weights(self) -> list:
        """The weights that are not trained (``state``), as Keras's ``layer.non_trainable_weights``."""
        return list(self.state.values())

    def count_params(self) -> int:
        """Every weight's size, trained or not, as Keras counts them."""
        return sum(int(w.size) for w in self.trainable_weights + self.non_trainable_weights)

    # ---- input checks ----------------------------------------------------------------------
    def _prepare(self, x):
        """Check ``x`` (axes, dtype, device, shape), build on first use, and return it."""
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise TypeError(f"{self.name}: expects an array, got {type(x).__name__}")
        if self.input_ndim is not None and x.ndim != self.input_ndim:
            raise ValueError(f"{self.name}: expects inputs with {self.input_ndim} axes (batch first), "
                             f"got shape {tuple(x.shape)}")
        if x.dtype.kind != "f":
            raise TypeError(f"{self.name}: expects floating-point inputs, got dtype {x.dtype}")
        if not self.built:
            self.build(x.shape[1:])
        if self.params or self.state:
            self._check_compatible(x)
        return x

    def _check_compatible(self, x):
        reference = next(iter({**self.params, **self.state}.values()))
        if backend.get_array_module(x) is not backend.get_array_module(reference):
            raise ValueError(f"{self.name}: the input is a {type(x).__module__.split('.')[0]} array but the "
                             f"parameters live in {type(reference).__module__.split('.')[0]}; "
                             "move it with minialex.backend.to_device")
        if x.dtype != reference.dtype:
            raise TypeError(f"{self.name}: input dtype {x.dtype} does not match the layer's dtype "
                            f"{reference.dtype}; cast the input or build the layer with dtype='{x.dtype}'")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expects inputs of shape (batch,) + {self.input_shape}, "
                             f"got {tuple(x.shape)}")

    # ---- the contract ----------------------------------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dout, input_grad=True):
        raise NotImplementedError

    def replica(self):
        """A shallow copy for one shard of a data-parallel step: the same ``params`` and ``state`` arrays,
        its own ``grads`` and per-call attributes (a layer it holds, such as Conv2D's ReLU, is copied the
        same way), marked ``is_replica``."""
        replica = copy.copy(self)
        replica.grads, replica.is_replica = {}, True
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                setattr(replica, name, value.replica())
        return replica

    def __call__(self, x, training=False):
        return self.forward(x, training=training)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, output_shape={self.output_shape})"


def alone(program):
    """What a shard's ``program`` (see ``mixes_samples``) returns when its shard is the whole batch:
    every part of a sum that it yields is the total, handed straight back."""
    total = None
    try:
        while True:
            total = program.send(total)
    except StopIteration as finished:
        return finished.value


@kernels.gpu(kernels.matmul_cuda)
def matmul(a, b, out=None):
    """a @ b (Conv2D's and Dense's products), into ``out`` if given. On a GPU: cuBLAS called directly,
    the same call eagerly and inside a CUDA graph (``minialex.cublas``)."""
    return backend.get_array_module(a).matmul(a, b, out=out)


FLOAT_DTYPES = ("float32", "float64")    # training; the gradient checks


def float_dtype(dtype) -> str:
    """The name of ``dtype`` (a name, a NumPy type or dtype) if minialex's layers compute in it, else a
    ValueError. float16 is refused: no layer is written for its range (its weights came out NaN)."""
    name = getattr(dtype, "name", None) if not isinstance(dtype, (str, type)) else None
    name = name or getattr(dtype, "__name__", None) or str(dtype)
    if name not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' (training) or 'float64' (gradient checks), got {name!r}; "
                         f"minialex's layers do not compute in other dtypes")
    return name


def glorot_uniform(shape, fan_in, fan_out, dtype):
    """Keras's default kernel initialiser: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return random.get_rng().uniform(-limit, limit, shape, dtype)


def normalize_pair(value, what):
    """An int or a pair of ints -> a pair of positive ints (kernel sizes, strides)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return pair


def output_length(length, window, stride, padding):
    """Keras's output size along one axis: 'valid' floor((L - k) / s) + 1, 'same' ceil(L / s)."""
    if padding == "same":
        return -(-length // stride)
    return (length - window) // stride + 1 if length >= window else 0


def window_output_size(layer_name, input_hw, window, strides, padding, what):
    """Keras's (OH, OW) for a ``window`` sliding over an (H, W) input; an error names a too-small input."""
    out = tuple(output_length(length, k, s, padding) for length, k, s in zip(input_hw, window, strides))
    if min(out) < 1:
        raise ValueError(f"{layer_name}: input {input_hw[0]}x{input_hw[1]} is smaller than the {what} "
                         f"{window[0]}x{window[1]} with padding='{padding}'")
    return out


def same_padding(length, window, stride):
    """(before, after) zeros for 'same', as TensorFlow places them: the odd one goes after."""
    out = -(-length // stride)
    total = max((out - 1) * stride + window - length, 0)
    return total // 2, total - total // 2


def check_padding(padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding
