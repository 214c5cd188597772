"""The fit loop: batches, progress output, History, the non-finite guard and checkpoints.

Keras semantics that the tutorial relies on:
- ``validation_split`` holds out the LAST fraction of (x, y), before any shuffling;
- the rest is shuffled at the start of every epoch (by the run's seeded generator), and the last
  partial batch is used;
- one line per epoch: loss, accuracy, val_loss, val_accuracy and the epoch's time.

Data moves to the device once; each step gathers its batch by index. Loss and accuracy are summed
on the device and read back only when the progress bar refreshes (at most twice a second) and at
the end of the epoch, so a GPU never waits on the host inside the loop.
"""
from __future__ import annotations

import math
import sys
import time

from . import backend, random
from .serialization import load_npz, save_npz

REFRESH_SECONDS = 0.5
CHECKPOINT_FORMAT = "minialex-checkpoint"


class History:
    """What ``fit`` returns: ``history`` maps 'loss', 'accuracy', 'val_loss', 'val_accuracy' to lists."""

    def __init__(self, history=None):
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}

    @property
    def epoch(self):
        return list(range(len(self.history.get("loss", []))))

    def append(self, logs: dict):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History({self.history})"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped with the last good weights kept."""


class NonFiniteGuard:
    """Stops ``fit`` at the first non-finite loss and keeps the last good weights.

    On NumPy, reading a loss costs nothing, so each step's loss is checked before its update: the
    weights left behind are exactly those before the bad step. On a GPU that read would stall every
    step, so each loss is written into a device array and checked at each progress refresh; then
    the weights and optimiser state roll back to the copy taken at the previous check.
    """

    def __init__(self, model, epoch, steps):
        self.model, self.epoch = model, epoch
        self.deferred = backend.get_backend() != "numpy"
        self.checked = 0
        if self.deferred:
            xp = backend.xp()
            self.losses = xp.zeros(steps, dtype=xp.float32)
            self._snapshot()

    def _snapshot(self):
        self.saved = (self.model.flat_parameters.copy(), self.model.optimizer.get_state())

    def _fail(self, step, detail):
        raise NonFiniteLossError(f"the loss became non-finite at epoch {self.epoch + 1}, step {step + 1}; "
                                 f"training stopped, {detail}. Try a lower learning rate.")

    def before_update(self, step, loss):
        """Called after each step's forward and backward passes, before its update."""
        if self.deferred:
            self.losses[step:step + 1] = loss       # a copy on the device, not a read-back
        elif not math.isfinite(float(loss)):
            self._fail(step, "the weights are those from before this step")

    def check(self, step):
        """Called when the host reads results anyway: checks steps up to ``step`` on a GPU."""
        if not self.deferred or step < self.checked:
            return
        xp = backend.get_array_module(self.losses)
        window = self.losses[self.checked:step + 1]
        bad = ~xp.isfinite(window)
        if bool(bad.any()):
            first = self.checked + int(bad.argmax())
            params, state = self.saved
            self.model.flat_parameters[...] = params
            self.model.optimizer.set_state(state)
            self._fail(first, f"the weights were restored to those after step {self.checked}")
        self.checked = step + 1
        self._snapshot()


class Progress:
    """One epoch's progress: a tqdm bar (on a terminal, verbose=1), then Keras's epoch line."""

    def __init__(self, epoch, epochs, steps, verbose):
        self.steps, self.verbose = steps, verbose
        self.bar = None
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        if verbose == 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, file=sys.stdout, leave=False, disable=None, ascii=".=",
                       bar_format="{n_fmt}/{total_fmt} [{bar:30}] - ETA: {remaining} - {postfix}")
            self.bar = None if bar.disable else bar    # no terminal, no bar: nothing to read back for

    def update(self, steps_done, logs):
        if self.bar is not None:
            self.bar.update(steps_done - self.bar.n)
            self.bar.set_postfix_str(_format_logs(logs), refresh=True)

    def close(self, seconds, logs):
        if self.bar is not None:
            self.bar.close()
        if self.verbose:
            per_step = 1000.0 * seconds / max(self.steps, 1)
            print(f"{self.steps}/{self.steps} [{'=' * 30}] - {seconds:.0f}s {per_step:.0f}ms/step - "
                  f"{_format_logs(logs)}", flush=True)


def _format_logs(logs):
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


def _split(x, y, validation_split, validation_data):
    """Keras's hold-out: the last ``validation_split`` of the samples, taken before shuffling."""
    if validation_data is not None:
        return x, y, validation_data[0], validation_data[1]
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_split == 0.0:
        return x, y, None, None
    split_at = int(math.floor(x.shape[0] * (1.0 - validation_split)))
    if split_at == 0 or split_at == x.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                         f"for {x.shape[0]} samples")
    return x[:split_at], y[:split_at], x[split_at:], y[split_at:]


def save_checkpoint(path, model, epochs_done, history):
    """Weights, optimiser state, epochs done, RNG state and history, written atomically."""
    arrays = {f"weights/{name}": p for name, p in model.weight_items()}
    state = model.optimizer.get_state()
    arrays.update({f"optimizer/{k}": v for k, v in state.items() if k != "iterations"})
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "epoch": epochs_done,
            "optimizer": type(model.optimizer).__name__, "iterations": state["iterations"],
            "rng": random.get_rng().get_state(), "history": history.history}
    save_npz(path, arrays, meta)


def load_checkpoint(path, model):
    """Restore a checkpoint into a compiled model and the run's generator; returns (epochs done, History)."""
    arrays, meta = load_npz(path)
    if not meta or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a minialex checkpoint (a weights file goes to load_weights)")
    if meta["optimizer"] != type(model.optimizer).__name__:
        raise ValueError(f"{path} was saved with {meta['optimizer']}, the model is compiled with "
                         f"{type(model.optimizer).__name__}")
    model.assign_weights({k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")})
    state = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    state["iterations"] = meta["iterations"]
    model.optimizer.set_state(state)
    random.get_rng().set_state(meta["rng"])
    return int(meta["epoch"]), History(meta["history"])


def fit(model, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None, shuffle=True,
        verbose=1, checkpoint=None, resume_from=None):
    """Train ``model`` on (x, y) for ``epochs`` epochs, as Keras's ``Model.fit``.

    ``checkpoint=path`` saves everything needed to continue after every epoch; ``resume_from=path``
    restores such a file first and trains the epochs that remain, exactly as if never stopped.
    """
    model.ensure_compiled()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    x, y = model.prepare_inputs(x, y)
    x_train, y_train, x_val, y_val = _split(x, y, validation_split, validation_data)
    if x_val is not None:
        x_val, y_val = model.prepare_inputs(x_val, y_val)
    rng = random.get_rng()
    n = x_train.shape[0]
    if n == 0:
        raise ValueError("fit needs at least one training sample")
    steps = math.ceil(n / batch_size)

    first_epoch, history = 0, History()
    if resume_from is not None:
        first_epoch, history = load_checkpoint(resume_from, model)

    for epoch in range(first_epoch, epochs):
        progress = Progress(epoch, epochs, steps, verbose)
        guard = NonFiniteGuard(model, epoch, steps)
        order = rng.permutation(n) if shuffle else None
        loss_sum = correct = 0
        seen, last_refresh, start = 0, time.perf_counter(), time.perf_counter()
        for step in range(steps):
            batch = slice(step * batch_size, (step + 1) * batch_size)
            index = batch if order is None else order[batch]
            xb, yb = x_train[index], y_train[index]
            loss, batch_correct = model.train_step(xb, yb)
            guard.before_update(step, loss)
            model.apply_gradients()
            loss_sum = loss_sum + loss * xb.shape[0]
            correct = correct + batch_correct
            seen += xb.shape[0]
            if progress.bar is not None and time.perf_counter() - last_refresh >= REFRESH_SECONDS:
                guard.check(step)
                progress.update(step + 1, {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen})
                last_refresh = time.perf_counter()
        guard.check(steps - 1)
        logs = {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}
        if x_val is not None:
            val_loss, val_correct = model.evaluate_sums(x_val, y_val, batch_size)
            logs["val_loss"] = float(val_loss) / x_val.shape[0]
            logs["val_accuracy"] = float(val_correct) / x_val.shape[0]
        backend.synchronize()
        progress.close(time.perf_counter() - start, logs)
        history.append(logs)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, epoch + 1, history)
    return history
