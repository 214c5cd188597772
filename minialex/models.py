"""Sequential, the Keras-style model, and the tutorial's network ready-made.

    model = Sequential([Conv2D(32, 3, activation='relu', input_shape=(32, 32, 1)), ...])
    model.compile(optimizer=Adam(1e-3), loss='categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=5, batch_size=64, validation_split=0.2)
    loss, accuracy = model.evaluate(x_test, y_test)

The fit loop (``minialex.training``) and the gradient checker drive a compiled model through a
few public methods, and nothing else:

- ``prepare_inputs(x, y)``: checks the arrays and moves them to the device in the model's dtype;
- ``forward_loss(x, y, training)``: the forward pass and the loss, (mean loss, correct count);
- ``backward(input_grad, batch_size)``: fills every layer's ``grads`` (and returns d loss / d x);
- ``training_steps(x, y, guard)``: what ``fit`` runs its steps through: ``training.EagerSteps`` on the
  CPU, ``graphs.TrainingSteps`` on a GPU (each step replayed as a CUDA graph where the backend can);
- ``train_step(x, y)``: both over one batch (on the CPU, shard by shard on every core, each shard
  through one of the model's ``replicas``: ``minialex.data_parallel``); ``apply_gradients()``: one
  optimiser step;
- ``evaluate_sums(x, y, batch_size)``: summed loss and correct count, left on the device;
- ``weight_items()`` / ``assign_weights(arrays)``: the weights by name, trained or not, for checkpoints;
- ``flat_parameters`` / ``flat_gradients``: every trained weight and every gradient in one array each
  (``minialex.flat``), so the optimiser runs over two long arrays; ``flat_state``: the weights that are
  not trained (BatchNormalization's moving statistics), in a buffer of their own (None without any).
"""
from __future__ import annotations

import copy
import math
import os
import weakref

from . import backend, checks, data_parallel, flat, graphs, parallel, training
from .layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Layer, LocalResponseNorm, MaxPool2D,
                     Softmax)
from .layers.base import alone
from .losses import SoftmaxCrossEntropy
from .optimizers import get_optimizer
from .serialization import CHECKPOINT_FORMAT, WEIGHTS_FORMAT, describe, load_npz, save_npz

LOSSES = ("categorical_crossentropy",)


class Sequential:
    def __init__(self, layers=None, name="sequential"):
        self.name = name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self._fused_softmax = False
        self.flat_parameters = self.flat_gradients = self.flat_state = None
        self._replicas = []
        for layer in layers or []:
            self.add(layer)

    # ---- building ----------------------------------------------------------------------------
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a minialex Layer, got {type(layer).__name__}")
        owner = _owners.get(layer)
        if owner is not None and owner() not in (None, self):
            raise ValueError(f"layer {layer.name!r} belongs to another model already: its weights live in that "
                             f"model's buffers, so two models cannot share it (training one would leave the other's "
                             f"weights behind); make a new layer, and copy weights with set_weights")
        _owners[layer] = weakref.ref(self)
        taken = {existing.name for existing in self.layers}
        base, suffix = layer.name, 0
        while layer.name in taken:
            suffix += 1
            layer.name = f"{base}_{suffix}"
        self.layers.append(layer)
        self.flat_parameters = self.flat_gradients = self.flat_state = None
        self._replicas = []
        if self.layers[0].built:
            self.build()

    def build(self, input_shape=None):
        """Build every layer from the per-sample ``input_shape`` (or the first layer's) and pack the weights."""
        if not self.layers:
            raise ValueError("the model has no layers")
        shape = tuple(input_shape) if input_shape is not None else self.layers[0].input_shape
        if shape is None:
            raise ValueError("the model's input shape is unknown: give the first layer input_shape=(...)")
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape != shape:
                raise ValueError(f"{layer.name} was built for inputs {layer.input_shape} but receives {shape}")
            shape = layer.output_shape
        self.flat_parameters, self.flat_gradients = flat.pack(self.layers)
        self.flat_state = flat.pack_state(self.layers)
        self._replicas = []

    @property
    def built(self):
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def input_shape(self):
        return self.layers[0].input_shape if self.layers else None

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    @property
    def dtype(self):
        dtypes = {str(w.dtype) for _, w in self.weight_items()}
        return dtypes.pop() if dtypes else "float32"

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def count_params(self) -> int:
        """Every weight's size, trained or not, as Keras counts them."""
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=print):
        """Print each layer's output shape and parameter count, as Keras's ``model.summary()``."""
        if not self.built:
            raise ValueError("the model is not built yet: give the first layer input_shape=(...) or call build()")
        labels = [f"{layer.name} ({type(layer).__name__})" for layer in self.layers]
        column = max([37] + [len(label) + 2 for label in labels])     # the longest name and a space or two
        width = column + 37
        rule = "_" * width
        lines = [f'Model: "{self.name}"', rule, f" {'Layer (type)':<{column}}{'Output Shape':<26}Param #", "=" * width]
        for i, (layer, label) in enumerate(zip(self.layers, labels)):
            shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
            lines.append(f" {label:<{column}}{shape:<26}{layer.count_params():,}")
            lines.append(rule if i < len(self.layers) - 1 else "=" * width)
        trainable = sum(int(w.size) for w in self.trainable_weights)
        frozen = sum(int(w.size) for w in self.non_trainable_weights)
        lines += [f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {frozen:,}", rule]
        text = "\n".join(lines)
        print_fn(text)
        return text

    # ---- compiling and running ---------------------------------------------------------------
    def compile(self, optimizer="adam", loss="categorical_crossentropy", metrics=("accuracy",)):
        """Choose the optimiser and the loss.

        ``loss='categorical_crossentropy'`` needs a model that ends in softmax (Dense(..., activation=
        'softmax') or a Softmax layer): the softmax and the loss then run fused, from the logits.
        A ``losses.SoftmaxCrossEntropy()`` instance means the model's output already is the logits.
        """
        if not self.layers:
            raise ValueError("the model has no layers: add them before compile (Sequential([...]) or model.add)")
        self.optimizer = get_optimizer(optimizer)
        metrics = [metrics] if isinstance(metrics, str) else metrics      # metrics='accuracy': one metric
        unknown = [m for m in metrics or () if m not in ("accuracy", "acc")]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; only 'accuracy' is supported")
        if isinstance(loss, SoftmaxCrossEntropy):
            self.loss, self._fused_softmax = loss, False
        elif loss in LOSSES:
            last = self.layers[-1] if self.layers else None
            if not (isinstance(last, Softmax) or getattr(last, "activation_name", None) == "softmax"):
                raise ValueError("loss='categorical_crossentropy' needs a model ending in softmax "
                                 "(e.g. Dense(10, activation='softmax')); for a model that outputs logits pass "
                                 "loss=minialex.losses.SoftmaxCrossEntropy()")
            self.loss, self._fused_softmax = SoftmaxCrossEntropy(), True
        else:
            raise ValueError(f"unknown loss {loss!r}; use 'categorical_crossentropy' or a losses.SoftmaxCrossEntropy")
        if self.layers[0].built:
            self.build()

    def _forward(self, x, training=False, logits=False):
        """Run the layers in order; ``logits=True`` stops before the final softmax."""
        return alone(self._layers_forward(x, training, logits, meet=False))

    def _layers_forward(self, x, training, logits, meet):
        """``_forward`` as a program (a generator). ``meet``: x is one shard of a batch, which meets the
        other shards at each layer that mixes samples (``Layer.forward_meeting``); else every layer runs
        on x as the whole batch, and the program never yields."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == last and logits:
                if isinstance(layer, Softmax):
                    break
                x = layer.forward(x, training=training, logits=True)
            elif meet and layer.mixes_samples:
                x = yield from layer.forward_meeting(x)
            else:
                x = layer.forward(x, training=training)
        return x

    def __call__(self, x, training=False):
        return self._forward(x, training=training)

    # ---- what the fit loop and the gradient checker call ------------------------------------
    def ensure_compiled(self):
        """Raise a clear error if ``compile`` was not called; build the model if it is not built."""
        if self.loss is None:
            raise RuntimeError("compile the model first: model.compile(optimizer='adam', "
                               "loss='categorical_crossentropy', metrics=['accuracy'])")
        if self.flat_parameters is None:
            self.build()

    def forward_loss(self, x, y, training=True):
        """Forward pass and loss of one batch: (mean loss, number of correct predictions), on the device."""
        return alone(self._forward_loss(x, y, training, meet=False))

    def forward_loss_meeting(self, x, y):
        """The training ``forward_loss`` over one shard of a batch, as the shard's program (a generator,
        run by ``parallel.run_meeting``): at each layer that mixes samples it yields the shard's sums
        and goes on with the whole batch's (``Layer.forward_meeting``)."""
        return self._forward_loss(x, y, True, meet=True)

    def _forward_loss(self, x, y, training, meet):
        xp = backend.get_array_module(x)
        out = yield from self._layers_forward(x, training, self._fused_softmax, meet)
        loss = self.loss.forward(out, y)
        correct = (out.argmax(axis=1) == y.argmax(axis=1)).sum(dtype=xp.int64)
        return loss, correct

    def backward(self, input_grad=False, batch_size=None):
        """Backward through the loss and every layer, after ``forward_loss``: fills each layer's grads.

        Returns d loss / d input when ``input_grad`` is True; training skips it (None), and the first
        layer then skips the product that would compute it. ``batch_size``: the whole batch's size
        when this batch is one shard of it.
        """
        return alone(self._backward(input_grad, batch_size, meet=False))

    def backward_meeting(self, batch_size):
        """``backward`` after ``forward_loss_meeting``, as the shard's program: it meets the other shards
        at each layer that mixes samples (``Layer.backward_meeting``)."""
        return self._backward(False, batch_size, meet=True)

    def _backward(self, input_grad, batch_size, meet):
        dout = self.loss.backward(batch_size)
        skip_softmax = self._fused_softmax and isinstance(self.layers[-1], Softmax)
        layers = self.layers[:-1] if skip_softmax else self.layers
        for i in reversed(range(len(layers))):
            asked = {} if i else {"input_grad": input_grad}       # the first layer's dx only when asked for
            if meet and layers[i].mixes_samples:
                dout = yield from layers[i].backward_meeting(dout, **asked)
            else:
                dout = layers[i].backward(dout, **asked)
        return dout

    def training_steps(self, x, y, guard):
        """What the fit loop runs its steps on (x, y) through: ``training.EagerSteps`` on the CPU; on a GPU
        ``graphs.TrainingSteps``, which replays each step as a CUDA graph where the backend captures one."""
        if backend.on_cpu(x):
            return training.EagerSteps(self, x, y, guard)
        return graphs.TrainingSteps(self, x, y, guard)

    def train_step(self, x, y):
        """Forward and backward over one batch: fills the gradients; returns (mean loss, correct count),
        both still on the device. On the CPU the batch runs in shards side by side, each through a
        ``replica`` of the model (``minialex.data_parallel``)."""
        return data_parallel.train_step(self, x, y)

    def replicas(self, count):
        """``count`` replicas of the model for a data-parallel step: made once, again after a rebuild.

        A replica shares the weights (the very arrays) but has its own layers' per-call attributes, its
        own loss and its own gradient buffer, so shards can run side by side.
        """
        while len(self._replicas) < count:
            replica = copy.copy(self)
            replica.layers = [layer.replica() for layer in self.layers]
            replica.loss = copy.copy(self.loss)
            replica.flat_gradients = backend.get_array_module(self.flat_gradients).zeros_like(self.flat_gradients)
            flat.point_grads_at(replica.layers, replica.flat_gradients)
            replica._replicas = []
            self._replicas.append(replica)
        return self._replicas[:count]

    def apply_gradients(self):
        """One optimiser step over the flat parameter and gradient buffers."""
        self.optimizer.apply([self.flat_parameters], [self.flat_gradients])

    def prepare_inputs(self, x, y=None, names=("x", "y"), check_values=True):
        """Check and move (x, y) to the active backend in the model's dtype.

        Refuses what cannot be right, naming the array (``names``) and the problem: strings, booleans,
        complex numbers, a wrong shape and, with ``check_values``, NaN or infinity and targets that
        are not one-hot rows (a pass over the data: one read-back each). Integer images above 1
        (pixels not divided by 255) pass with a one-time warning.
        """
        x = checks.array_kind(names[0], x)
        if x.ndim < 1:
            raise ValueError(f"{names[0]} must be an array of samples, got a scalar")
        if not self.built:
            self.build(tuple(x.shape[1:]))
        given, x = x, backend.to_device(x, dtype=self.dtype)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{names[0]}: the model expects inputs of shape (batch,) + {self.input_shape}, "
                             f"got {tuple(x.shape)}")
        if check_values:
            checks.finite(names[0], x, original=given)
        if y is None:
            return x
        y = backend.to_device(checks.array_kind(names[1], y, images=False), dtype=self.dtype)
        expected = (x.shape[0],) + tuple(self.output_shape)
        if y.ndim == 2 and y.shape[1:] == expected[1:] and y.shape[0] != x.shape[0]:
            raise ValueError(f"{names[0]} holds {x.shape[0]} samples but {names[1]} {y.shape[0]} targets: give one "
                             f"target row per sample")
        if y.ndim == 2 and y.shape[1] != expected[1] and y.shape[1] > 1:
            raise ValueError(f"{names[1]} has {y.shape[1]} columns (classes), the model outputs {expected[1]}: "
                             f"make it with to_categorical(labels, {expected[1]}), or end the model in "
                             f"Dense({y.shape[1]}, ...)")
        if y.shape != expected:
            raise ValueError(f"{names[1]} must be one-hot targets of shape {expected}, got {tuple(y.shape)}; "
                             f"convert labels with minialex.data.to_categorical")
        if check_values:
            checks.finite(names[1], y)
            checks.targets(names[1], y)
        return x, y

    def train_on_batch(self, x, y):
        """One training step on one batch: returns [loss, accuracy] as Python floats.

        A non-finite loss changes nothing: it raises a ValueError naming the bad input when x or y
        holds NaN or infinity (the values are checked only then: this is the per-step call, kept
        lean), else ``NonFiniteLossError``; either way the weights stay as they were (the moving
        statistics that the training forward moved included).
        """
        self.ensure_compiled()
        self.optimizer.check_fits([] if self.flat_parameters is None else [self.flat_parameters])
        x, y = self.prepare_inputs(x, y, check_values=False)
        if x.shape[0] == 0:
            raise ValueError("train_on_batch needs at least one sample")
        state_before = None if self.flat_state is None else self.flat_state.copy()
        loss, correct = self.train_step(x, y)
        loss = float(loss)
        if not math.isfinite(loss):
            if state_before is not None:
                self.flat_state[...] = state_before
            checks.finite("x", x)
            checks.finite("y", y)
            largest = float(backend.get_array_module(x).abs(x).max())
            raise training.NonFiniteLossError(
                f"the loss on this batch is {loss}; the weights were not updated (they are those from before this "
                f"call). {training.non_finite_advice(self.optimizer.iterations > 0, largest)}")
        self.apply_gradients()
        return [loss, float(correct) / x.shape[0]]

    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None, shuffle=True,
            verbose=1, checkpoint=None, resume_from=None, overwrite=False, settings=None):
        """Train as Keras does; see ``minialex.training.fit``. Returns a History."""
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                   validation_data=validation_data, shuffle=shuffle, verbose=verbose,
                   checkpoint=checkpoint, resume_from=resume_from, overwrite=overwrite, settings=settings)

    def evaluate_sums(self, x, y, batch_size):
        """Summed loss and correct count over (x, y) already on the device; both stay there. On a GPU
        batch by batch through ``graphs.inference`` (replayed as CUDA graphs where the backend can)."""
        if not backend.on_cpu(x):
            return graphs.inference(self).evaluate_sums(x, y, batch_size)

        def evaluate_batch(batch):
            loss, correct = self.forward_loss(x[batch], y[batch], training=False)
            return loss * x[batch].shape[0], correct

        results = parallel.map_batches(evaluate_batch, x.shape[0], batch_size)
        return sum(loss for loss, _ in results), sum(correct for _, correct in results)

    def evaluate(self, x, y, batch_size=32, verbose=0):
        """[loss, accuracy] over (x, y), computed in batches of ``batch_size``."""
        self.ensure_compiled()
        if y is None:
            raise ValueError("evaluate needs the targets y (one-hot rows) to score against; for the outputs alone, "
                             "use predict(x)")
        x, y = self.prepare_inputs(x, y)
        if x.shape[0] == 0:
            raise ValueError("evaluate needs at least one sample")
        loss_sum, correct = self.evaluate_sums(x, y, _check_batch_size(batch_size))
        results = [float(loss_sum) / x.shape[0], float(correct) / x.shape[0]]
        if verbose:
            print(f"loss: {results[0]:.4f} - accuracy: {results[1]:.4f}")
        return results

    def predict(self, x, batch_size=32):
        """The model's outputs (softmax probabilities for the tutorial net) as a NumPy array."""
        x = self.prepare_inputs(x, check_values=False)     # NaN in, NaN out: predict reports, it does not judge
        batch_size = _check_batch_size(batch_size)
        xp = backend.get_array_module(x)
        if backend.on_cpu(x):
            outputs = parallel.map_batches(lambda batch: self._forward(x[batch]), x.shape[0], batch_size)
        else:
            outputs = graphs.inference(self).predict(x, batch_size)
        return backend.to_numpy(xp.concatenate(outputs) if outputs else xp.zeros((0,) + self.output_shape))

    # ---- weights -----------------------------------------------------------------------------
    def weight_items(self):
        """[('layer_name/name', array)] for every weight, in order (the arrays themselves): each layer's
        ``params``, then its ``state`` (BatchNormalization: gamma, beta, moving_mean, moving_variance,
        Keras's order)."""
        return [(f"{layer.name}/{key}", weight) for layer in self.layers
                for key, weight in (*layer.params.items(), *layer.state.items())]

    def get_weights(self):
        """Every weight, trained or not, layer by layer, as NumPy arrays (copies), as Keras's ``get_weights``."""
        return [backend.to_numpy(p).copy() for _, p in self.weight_items()]

    def set_weights(self, weights):
        """Load a list like ``get_weights()`` returns; everything is checked before anything is written."""
        items = self.weight_items()
        if len(weights) != len(items):
            raise ValueError(f"expected {len(items)} weight arrays, got {len(weights)}")
        self.assign_weights({name: w for (name, _), w in zip(items, weights)})

    def check_weights(self, arrays):
        """Raise a ValueError unless {'layer_name/param': array} fits the model: names, shapes, real
        numbers finite in the model's dtype (1e300 is none in float32); returns them in that dtype."""
        items = dict(self.weight_items())
        missing = sorted(set(items) - set(arrays))
        extra = sorted(set(arrays) - set(items))
        if missing or extra:
            raise ValueError(f"weights do not match the model: missing {_first(missing)}, unexpected {_first(extra)}")
        for name, param in items.items():
            array = arrays[name]
            if not hasattr(array, "dtype") or not hasattr(array, "shape"):
                raise ValueError(f"weight {name}: expected an array, got {type(array).__name__}")
            if tuple(array.shape) != tuple(param.shape):
                raise ValueError(f"weight {name}: expected shape {tuple(param.shape)}, got {tuple(array.shape)}")
            if array.dtype.kind not in "iuf":
                raise ValueError(f"weight {name}: expected numbers, got dtype {array.dtype}")
        return {name: checks.representable(f"weight {name}", arrays[name], param.dtype)
                for name, param in items.items()}

    def assign_weights(self, arrays):
        """Copy {'layer_name/param': array} into the weights; everything is checked before anything is written."""
        checked = self.check_weights(arrays)
        for name, param in self.weight_items():
            param[...] = backend.get_array_module(param).asarray(checked[name])

    def save_weights(self, path, overwrite=False):
        """Write every weight to a ``.npz`` file (atomically; keys 'layer_name/name').

        An existing weights file at ``path`` is replaced; any other file (a checkpoint, whose
        optimiser state and history would be lost) only with ``overwrite=True``.
        """
        if not self.built:
            raise ValueError("the model is not built yet: there are no weights to save")
        checks.flag("overwrite", overwrite)
        path = os.fsdecode(path)
        if not overwrite and os.path.isfile(path):
            kind, held = describe(path)
            if kind != WEIGHTS_FORMAT:
                raise FileExistsError(f"{path} holds {held}; save_weights would replace it with the weights alone: "
                                      f"choose another path, or pass overwrite=True to replace it")
        save_npz(path, dict(self.weight_items()), meta={"format": WEIGHTS_FORMAT, "version": 1})

    def load_weights(self, path):
        """Read weights written by ``save_weights``, on any backend; names and shapes are checked."""
        if not self.built:
            self.build()
        path = os.fsdecode(path)
        arrays, meta = load_npz(path)
        if (meta or {}).get("format") == CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is a checkpoint, not a weights file: continue its run with fit(resume_from="
                             f"{str(path)!r}) (the example: --resume), with the same data and settings")
        try:
            self.assign_weights(arrays)
        except ValueError as exc:
            raise ValueError(f"{path} does not fit this model: {exc}") from None


_owners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()    # layer -> (a weak reference to) its model


def _first(names, count=5):
    """A list of names in a message: the first ``count``, and how many in all when there are more."""
    return f"{names}" if len(names) <= count else f"{names[:count]} and {len(names) - count} more"


def _check_batch_size(batch_size):
    return checks.positive_int("batch_size", batch_size)


def alexnet_mnist(input_shape=(32, 32, 1), num_classes=10, dtype="float32", norm="lrn"):
    """The tutorial's small AlexNet for 32x32 MNIST (585,546 parameters for 10 classes).

    ``norm='batchnorm'`` puts BatchNormalization where the two LocalResponseNorm layers are (the
    tutorial's chapter "After AlexNet"): 585,930 weights, of which 192 (the moving statistics) are not
    trained.
    """
    norms = {"lrn": lambda: LocalResponseNorm(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75),
             "batchnorm": lambda: BatchNormalization(dtype=dtype)}
    if norm not in norms:
        raise ValueError(f"norm must be 'lrn' (the tutorial's) or 'batchnorm', got {norm!r}")
    return Sequential([
        Conv2D(32, 3, activation="relu", input_shape=input_shape, dtype=dtype),
        norms[norm](),
        MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu", dtype=dtype),
        norms[norm](),
        MaxPool2D(2),
        Conv2D(128, 3, padding="same", activation="relu", dtype=dtype),
        Conv2D(128, 3, padding="same", activation="relu", dtype=dtype),
        Conv2D(64, 3, padding="same", activation="relu", dtype=dtype),
        Flatten(),
        Dense(84, activation="relu", dtype=dtype),
        Dropout(0.5),
        Dense(84, activation="relu", dtype=dtype),
        Dropout(0.5),
        Dense(num_classes, activation="softmax", dtype=dtype),
    ])


__all__ = ["Sequential", "alexnet_mnist"]
