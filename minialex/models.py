"""Sequential, the Keras-style model, and the tutorial's network ready-made.

    model = Sequential([Conv2D(32, 3, activation='relu', input_shape=(32, 32, 1)), ...])
    model.compile(optimizer=Adam(1e-3), loss='categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=5, batch_size=64, validation_split=0.2)
    loss, accuracy = model.evaluate(x_test, y_test)

When the model is built, every parameter is copied into one flat buffer and every layer's
``params[k]`` becomes a view of it (``grads`` likewise), so the optimiser updates all weights with
a handful of array operations instead of a few per tensor.

On the CPU, a training step runs data-parallel: each BLAS thread takes a shard of the batch
through its own twin of the model (see ``_train_step``).
"""
from __future__ import annotations

import copy
from concurrent.futures import wait

from . import backend
from .layers import Conv2D, Dense, Dropout, Flatten, Layer, LocalResponseNorm, MaxPool2D, Softmax
from .losses import SoftmaxCrossEntropy
from .optimizers import get_optimizer
from .serialization import load_npz, save_npz

LOSSES = ("categorical_crossentropy",)
MIN_SHARD_ROWS = 12     # fewer per thread and the hand-offs cost more than they save (tutorial net)


class Sequential:
    def __init__(self, layers=None, name="sequential"):
        self.name = name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self._fused_softmax = False
        self._flat_params = self._flat_grads = None
        self._twins = []
        for layer in layers or []:
            self.add(layer)

    # ---- building ----------------------------------------------------------------------------
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a minialex Layer, got {type(layer).__name__}")
        taken = {existing.name for existing in self.layers}
        base, suffix = layer.name, 0
        while layer.name in taken:
            suffix += 1
            layer.name = f"{base}_{suffix}"
        self.layers.append(layer)
        self._flat_params = self._flat_grads = None
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
        self._pack_parameters()

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
        dtypes = {str(p.dtype) for layer in self.layers for p in layer.params.values()}
        return dtypes.pop() if dtypes else "float32"

    def _pack_parameters(self):
        """Copy all parameters into one flat buffer and make each layer's params/grads views of it."""
        entries = [(layer, key) for layer in self.layers for key in layer.params]
        if not entries:
            self._flat_params = self._flat_grads = None
            self._twins = []
            return
        dtypes = {str(layer.params[key].dtype) for layer, key in entries}
        if len(dtypes) > 1:
            raise TypeError(f"all layers of a model must share one dtype, got {sorted(dtypes)}")
        first = entries[0][0].params[entries[0][1]]
        xp = backend.get_array_module(first)
        total = sum(int(layer.params[key].size) for layer, key in entries)
        flat_params = xp.empty(total, dtype=first.dtype)
        flat_grads = xp.zeros(total, dtype=first.dtype)
        offset = 0
        for layer, key in entries:
            param = layer.params[key]
            view = flat_params[offset:offset + param.size].reshape(param.shape)
            view[...] = param
            layer.params[key] = view
            offset += param.size
        _point_grads_at(self.layers, flat_grads)
        self._flat_params, self._flat_grads = flat_params, flat_grads
        self._twins = []        # made for the old buffers: the next data-parallel step makes new ones

    def count_params(self) -> int:
        return sum(layer.count_params for layer in self.layers)

    def summary(self, print_fn=print):
        """Print each layer's output shape and parameter count, as Keras's ``model.summary()``."""
        if not self.built:
            raise ValueError("the model is not built yet: give the first layer input_shape=(...) or call build()")
        width = 74
        rule = "_" * width
        lines = [f'Model: "{self.name}"', rule, f" {'Layer (type)':<37}{'Output Shape':<26}Param #", "=" * width]
        for i, layer in enumerate(self.layers):
            shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
            lines.append(f" {layer.name + ' (' + type(layer).__name__ + ')':<37}{shape:<26}{layer.count_params:,}")
            lines.append(rule if i < len(self.layers) - 1 else "=" * width)
        total = self.count_params()
        lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0", rule]
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
        self.optimizer = get_optimizer(optimizer)
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
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == last and logits:
                if isinstance(layer, Softmax):
                    break
                x = layer.forward(x, training=training, logits=True)
            else:
                x = layer.forward(x, training=training)
        return x

    def __call__(self, x, training=False):
        return self._forward(x, training=training)

    def _require_compiled(self):
        if self.loss is None:
            raise RuntimeError("compile the model first: model.compile(optimizer='adam', "
                               "loss='categorical_crossentropy', metrics=['accuracy'])")
        if self._flat_params is None:
            self.build()

    def _forward_loss(self, x, y, training=True):
        """Forward pass and loss of one batch: (mean loss, number of correct predictions), on the device."""
        xp = backend.get_array_module(x)
        out = self._forward(x, training=training, logits=self._fused_softmax)
        loss = self.loss.forward(out, y)
        correct = (out.argmax(axis=1) == y.argmax(axis=1)).sum(dtype=xp.int64)
        return loss, correct

    def _backward(self, input_grad=False, batch_size=None):
        """Backward through the loss and every layer: fills each layer's grads.

        Returns d loss / d input when ``input_grad`` is True; training skips it (None).
        ``batch_size``: the whole batch's size when this batch is one shard of it.
        """
        self.layers[0].needs_input_grad = input_grad
        dout = self.loss.backward(batch_size)
        skip_softmax = self._fused_softmax and isinstance(self.layers[-1], Softmax)
        for layer in reversed(self.layers[:-1] if skip_softmax else self.layers):
            dout = layer.backward(dout)
        return dout

    def _train_step(self, x, y):
        """Forward and backward over one batch: fills the gradients; returns (mean loss, correct count).

        On the CPU with several BLAS threads the batch is cut into one shard per thread. Each thread
        runs its shard's forward and backward through its own twin of the model (the same weights,
        its own caches and gradient buffer) with a single-threaded BLAS, and the twins' gradients
        are summed. NumPy runs elementwise work (ReLU, LRN, pooling, im2col) on one core, so this
        keeps every core busy through the whole step, not only in the matrix products. Each shard
        divides its loss gradient by the whole batch's size and draws the dropout masks that the
        whole batch gives its rows, so the result is the one-thread step's, to float32 rounding.
        """
        n = x.shape[0]
        shards = self._shards(n)
        if len(shards) == 1:
            loss, correct = self._forward_loss(x, y)
            self._backward()
            return loss, correct
        rng = backend.get_rng()
        generators = [backend.BatchShard(rng, rows.start, rows.stop - rows.start, n) for rows in shards]
        twins = self._twins_for(len(shards) - 1)
        pool = backend.cpu_thread_pool(len(shards))
        with backend.single_threaded_blas():
            futures = [pool.submit(twin._shard_step, x[rows], y[rows], generator, n)
                       for twin, rows, generator in zip(twins, shards[1:], generators[1:])]
            try:
                results = [self._shard_step(x[shards[0]], y[shards[0]], generators[0], n)]
            finally:
                wait(futures)       # no thread may still be running when BLAS gets its threads back
        results += [future.result() for future in futures]
        for twin in twins:
            self._flat_grads += twin._flat_grads
        rng.position = generators[0].position      # past the whole batch's draws, as one thread leaves it
        return sum(loss for loss, _ in results) / n, sum(correct for _, correct in results)

    def _shards(self, n):
        """Row slices of an n-sample batch: one per CPU thread, of at least MIN_SHARD_ROWS each."""
        count = max(1, min(backend.cpu_workers(), n // MIN_SHARD_ROWS))
        bounds = [n * i // count for i in range(count + 1)]
        return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]

    def _shard_step(self, x, y, generator, batch_size):
        """One shard's forward and backward, drawing from ``generator``: (summed loss, correct count)."""
        with backend.using_rng(generator):
            loss, correct = self._forward_loss(x, y)
        self._backward(batch_size=batch_size)
        return loss * x.shape[0], correct

    def _twins_for(self, count):
        """``count`` twins for the other threads of a data-parallel step, made once per build."""
        while len(self._twins) < count:
            twin = copy.copy(self)
            twin.layers = [layer.replica() for layer in self.layers]
            twin.loss = copy.copy(self.loss)
            twin._flat_grads = backend.get_array_module(self._flat_grads).zeros_like(self._flat_grads)
            twin._twins = []
            _point_grads_at(twin.layers, twin._flat_grads)
            self._twins.append(twin)
        return self._twins[:count]

    def _update(self):
        """One optimiser step over the flat parameter and gradient buffers."""
        self.optimizer.apply([self._flat_params], [self._flat_grads])

    def _inputs(self, x, y=None):
        """Check and move (x, y) to the active backend in the model's dtype."""
        if not self.built:
            self.build(tuple(x.shape[1:]))
        x = backend.to_device(x, dtype=self.dtype)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the model expects inputs of shape (batch,) + {self.input_shape}, got {tuple(x.shape)}")
        if y is None:
            return x
        y = backend.to_device(y, dtype=self.dtype)
        if y.ndim != 2 or y.shape != (x.shape[0],) + tuple(self.output_shape):
            raise ValueError(f"targets must be one-hot of shape ({x.shape[0]}, {self.output_shape[0]}), got "
                             f"{tuple(y.shape)}; convert labels with minialex.data.to_categorical")
        return x, y

    def train_on_batch(self, x, y):
        """One training step on one batch: returns [loss, accuracy] as Python floats."""
        self._require_compiled()
        x, y = self._inputs(x, y)
        loss, correct = self._train_step(x, y)
        self._update()
        return [float(loss), float(correct) / x.shape[0]]

    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None, shuffle=True,
            verbose=1, checkpoint=None, resume_from=None):
        """Train as Keras does; see ``minialex.training.fit``. Returns a History."""
        from .training import fit

        return fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                   validation_data=validation_data, shuffle=shuffle, verbose=verbose,
                   checkpoint=checkpoint, resume_from=resume_from)

    def _map_batches(self, function, count, batch_size):
        """[function(batch slice) for each batch of ``count`` samples], in order.

        On the CPU the batches run on one thread per BLAS thread (one per core by default), each
        with a single-threaded BLAS: NumPy's elementwise work uses one core, so this is what keeps
        every core busy at inference. Inference forwards keep no state, so they can share the layers.
        On a GPU they run one after another, in the device's queue.
        """
        batches = [slice(start, start + batch_size) for start in range(0, count, batch_size)]
        workers = backend.cpu_workers()
        if workers < 2 or len(batches) < 2:
            return [function(batch) for batch in batches]
        with backend.single_threaded_blas():
            return list(backend.cpu_thread_pool(workers).map(function, batches))

    def _evaluate_on_device(self, x, y, batch_size):
        """Summed loss and correct count over (x, y) already on the device; both stay there."""
        def evaluate_batch(batch):
            loss, correct = self._forward_loss(x[batch], y[batch], training=False)
            return loss * x[batch].shape[0], correct

        results = self._map_batches(evaluate_batch, x.shape[0], batch_size)
        return sum(loss for loss, _ in results), sum(correct for _, correct in results)

    def evaluate(self, x, y, batch_size=32, verbose=0):
        """[loss, accuracy] over (x, y), computed in batches of ``batch_size``."""
        self._require_compiled()
        x, y = self._inputs(x, y)
        if x.shape[0] == 0:
            raise ValueError("evaluate needs at least one sample")
        loss_sum, correct = self._evaluate_on_device(x, y, _check_batch_size(batch_size))
        results = [float(loss_sum) / x.shape[0], float(correct) / x.shape[0]]
        if verbose:
            print(f"loss: {results[0]:.4f} - accuracy: {results[1]:.4f}")
        return results

    def predict(self, x, batch_size=32):
        """The model's outputs (softmax probabilities for the tutorial net) as a NumPy array."""
        x = self._inputs(x)
        batch_size = _check_batch_size(batch_size)
        xp = backend.get_array_module(x)
        outputs = self._map_batches(lambda batch: self._forward(x[batch]), x.shape[0], batch_size)
        return backend.to_numpy(xp.concatenate(outputs) if outputs else xp.zeros((0,) + self.output_shape))

    # ---- weights -----------------------------------------------------------------------------
    def _weight_items(self):
        return [(f"{layer.name}/{key}", layer.params[key]) for layer in self.layers for key in layer.params]

    def get_weights(self):
        """Every parameter, layer by layer, as NumPy arrays (copies)."""
        return [backend.to_numpy(p).copy() for _, p in self._weight_items()]

    def set_weights(self, weights):
        """Load a list like ``get_weights()`` returns; shapes are checked before anything is written."""
        items = self._weight_items()
        if len(weights) != len(items):
            raise ValueError(f"expected {len(items)} weight arrays, got {len(weights)}")
        self._assign({name: w for (name, _), w in zip(items, weights)})

    def _assign(self, arrays):
        items = dict(self._weight_items())
        missing = sorted(set(items) - set(arrays))
        extra = sorted(set(arrays) - set(items))
        if missing or extra:
            raise ValueError(f"weights do not match the model: missing {missing}, unexpected {extra}")
        for name, param in items.items():
            if tuple(arrays[name].shape) != tuple(param.shape):
                raise ValueError(f"weight {name}: expected shape {tuple(param.shape)}, got {tuple(arrays[name].shape)}")
        for name, param in items.items():
            param[...] = backend.get_array_module(param).asarray(arrays[name], dtype=param.dtype)

    def save_weights(self, path):
        """Write every parameter to a ``.npz`` file (atomically; keys 'layer_name/param')."""
        if not self.built:
            raise ValueError("the model is not built yet: there are no weights to save")
        save_npz(path, dict(self._weight_items()), meta={"format": "minialex-weights", "version": 1})

    def load_weights(self, path):
        """Read weights written by ``save_weights``, on any backend; names and shapes are checked."""
        if not self.built:
            self.build()
        arrays, _ = load_npz(path)
        self._assign(arrays)


def _point_grads_at(layers, flat_grads):
    """Make every layer's ``grads[k]`` a view of ``flat_grads``, in the order the parameters are packed."""
    offset = 0
    for layer in layers:
        for key, param in layer.params.items():
            layer.grads[key] = flat_grads[offset:offset + param.size].reshape(param.shape)
            offset += param.size


def _check_batch_size(batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def alexnet_mnist(input_shape=(32, 32, 1), num_classes=10, dtype="float32"):
    """The tutorial's small AlexNet for 32x32 MNIST (585,546 parameters for 10 classes)."""
    def lrn():
        return LocalResponseNorm(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)

    return Sequential([
        Conv2D(32, 3, activation="relu", input_shape=input_shape, dtype=dtype),
        lrn(),
        MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu", dtype=dtype),
        lrn(),
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
