"""The fit loop: batches, progress output, History, the non-finite guard and checkpoints.

Keras semantics that the tutorial relies on:
- ``validation_split`` holds out the LAST fraction of (x, y), before any shuffling;
- the rest is shuffled at the start of every epoch (by the run's seeded generator), and the last
  partial batch is used;
- one line per epoch: loss, accuracy, val_loss, val_accuracy and the epoch's time.

Data moves to the device once; each step gathers its batch by index. Loss and accuracy are summed
on the device and read back only when the progress bar refreshes (at most twice a second) and at
the end of the epoch, so a GPU never waits on the host inside the loop.

This module imports no model: the loop, the guard and the checkpoints drive any object with the
members ``Trainable`` lists (``Sequential`` is one), and nothing else of it.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol

from . import backend, checks, random
from .ownership import CheckpointOwner, lock_path
from .serialization import CHECKPOINT_FORMAT, check_destination, describe, load_npz, save_npz

REFRESH_SECONDS = 0.5
SNAPSHOT_SECONDS = 0.5   # the non-finite guard's copy of good weights is at most this old (plus one step)
CHECKPOINT_VERSION = 2
DIGEST_ROWS = 4096       # rows read back at a time for the data's digest
HUGE_INPUT = 1e6         # inputs beyond this magnitude: a non-finite loss is blamed on them, not the learning rate


class Trainable(Protocol):
    """What ``fit``, ``NonFiniteGuard`` and the checkpoints ask of a model, and all they ask.

    ``Sequential`` (``minialex.models``) documents each member; ``tests/test_training.py`` holds
    this module to using no other member of the model.
    """

    optimizer: Any              # an ``optimizers.Optimizer``: its state is saved, checked and restored
    flat_parameters: Any        # every trained weight in one array: the guard copies it and puts it back
    flat_state: Any             # every weight not trained (BatchNormalization's moving statistics), likewise
    input_shape: tuple          # the per-sample shape, recorded in a checkpoint's settings
    dtype: str                  # the weights' dtype: what checkpoints are checked against

    def ensure_compiled(self) -> None: ...
    def prepare_inputs(self, x, y=None, names=("x", "y"), check_values=True): ...
    def training_steps(self, x, y, guard): ...
    def train_step(self, x, y): ...
    def apply_gradients(self) -> None: ...
    def evaluate_sums(self, x, y, batch_size): ...
    def weight_items(self) -> list: ...
    def check_weights(self, arrays) -> None: ...
    def assign_weights(self, arrays) -> None: ...


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
    """The loss became NaN or infinite; training stopped with the last good weights kept.

    ``history``: the History of the epochs completed before it happened (set by ``fit``).
    """

    history = None


def non_finite_advice(updated, largest_input):
    """What a non-finite loss suggests, from what is known: how large the inputs are, and whether any
    update was made (a lower learning rate is advised only where it can be the cause)."""
    if largest_input > HUGE_INPUT:
        return (f"The inputs reach {largest_input:.3g}: scale them to about [0, 1] first (images divided by 255); "
                f"values so large overflow the network.")
    if not updated:
        return "No update had been made, so the learning rate played no part: the starting weights overflow."
    return "Try a lower learning rate."


class NonFiniteGuard:
    """Stops ``fit`` at the first non-finite loss and puts back the last weights known to be good.

    Weights are *good* once a forward pass through them gave a finite loss. The guard keeps a copy
    of good weights, with the optimiser's state, renewed at most every ``SNAPSHOT_SECONDS`` and at
    each epoch's end. So a loss that turns NaN or infinite -- on this step, or because an earlier
    update made the weights so large that the forward pass overflows -- leaves the model with that
    copy, never with weights whose predictions are NaN.

    On NumPy each step's loss is read before its update (reading costs nothing). On a GPU that read
    would stall every step, so each loss is written into a device array and checked at each
    progress refresh; a copy taken there is of weights not tried yet, so it becomes the good copy
    only once the next step's loss is known to be finite.
    """

    def __init__(self, model: Trainable, steps, inputs):
        self.model, self.inputs, self.epoch, self.checked = model, inputs, 0, 0
        self.first_epoch = None
        self.deferred = backend.get_backend() != "numpy"
        self.good = self._snapshot("those fit started from")
        self.pending = None
        if self.deferred:
            xp = backend.xp()
            self.losses = xp.zeros(steps, dtype=xp.float32)

    def start_epoch(self, epoch):
        self.epoch, self.checked = epoch, 0
        self.first_epoch = epoch if self.first_epoch is None else self.first_epoch

    def _snapshot(self, label):
        """The weights (the moving statistics too: a training forward moves them) and the optimiser's state."""
        self.taken = time.perf_counter()
        moving = None if self.model.flat_state is None else self.model.flat_state.copy()
        return self.model.flat_parameters.copy(), moving, self.model.optimizer.get_state(), label

    def _fail(self, what, snapshot, step=None):
        """Restore ``snapshot`` and stop; ``step``: the failing step, whose loss came before its update."""
        params, moving, state, label = snapshot
        self.model.flat_parameters[...] = params
        if moving is not None:
            self.model.flat_state[...] = moving
        self.model.optimizer.set_state(state)
        updated = not (step == 0 and self.epoch == self.first_epoch)
        largest = float(backend.get_array_module(self.inputs).abs(self.inputs).max())
        raise NonFiniteLossError(f"the {what} became non-finite; training stopped and the weights were restored "
                                 f"to {label} (the last known to give a finite loss). "
                                 f"{non_finite_advice(updated, largest)}")

    def _where(self, step):
        return f"epoch {self.epoch + 1}, step {step + 1}"

    def before_update(self, step, loss):
        """Called after each step's forward and backward passes, before its update."""
        if self.deferred:
            self.losses[step:step + 1] = loss       # a copy on the device, not a read-back
            return
        if not math.isfinite(float(loss)):
            self._fail(f"loss at {self._where(step)}", self.good, step)
        if time.perf_counter() - self.taken >= SNAPSHOT_SECONDS:
            self.good = self._snapshot(f"those before {self._where(step)}")

    def check(self, step):
        """Called when the host reads results anyway: checks steps up to ``step`` on a GPU."""
        if not self.deferred or step < self.checked:
            return
        xp = backend.get_array_module(self.losses)
        bad = ~xp.isfinite(self.losses[self.checked:step + 1])
        if bool(bad.any()):
            first = self.checked + int(bad.argmax())
            proven = self.pending if self.pending is not None and first > self.checked else self.good
            self._fail(f"loss at {self._where(first)}", proven, first)
        if self.pending is not None:
            self.good = self.pending                # the step after it gave a finite loss
        self.checked = step + 1
        self.pending = self._snapshot(f"those before {self._where(step + 1)}")

    def end_epoch(self, loss, what):
        """After the epoch's updates: ``loss`` is a forward pass through the final weights (``what`` says which)."""
        if not math.isfinite(loss):
            self._fail(f"{what} after epoch {self.epoch + 1}", self.good)
        self.good, self.pending = self._snapshot(f"those at the end of epoch {self.epoch + 1}"), None


class EagerSteps:
    """The fit loop's steps, one after another (what ``Sequential.training_steps`` gives on the CPU; on a
    GPU ``minialex.graphs.TrainingSteps`` does the same, each step replayed as a CUDA graph).

    ``run(step, index)`` trains on the rows ``index`` of (x, y): the forward and backward passes, the
    guard's look at the loss before the update, the update; ``sums()`` is the epoch's (loss sum, correct
    count) so far, still on the device.
    """

    def __init__(self, model: Trainable, x, y, guard):
        self.model, self.x, self.y, self.guard = model, x, y, guard
        self.loss_sum = self.correct = 0

    def start_epoch(self):
        self.loss_sum = self.correct = 0

    def run(self, step, index):
        xb, yb = self.x[index], self.y[index]
        loss, correct = self.model.train_step(xb, yb)
        self.guard.before_update(step, loss)
        self.model.apply_gradients()
        self.loss_sum = self.loss_sum + loss * xb.shape[0]
        self.correct = self.correct + correct

    def sums(self):
        return self.loss_sum, self.correct


class Progress:
    """One epoch's progress: a tqdm bar (on a terminal, verbose=1), then Keras's epoch line."""

    def __init__(self, epoch, epochs, steps, verbose):
        self.steps, self.verbose = steps, verbose
        self.bar = None
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        if verbose == 1:
            tqdm, disable = progress_bar()
            bar = tqdm(total=steps, file=sys.stdout, leave=False, disable=disable, ascii=".=",
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


def progress_bar():
    """(tqdm's bar class, its ``disable``) for where this runs: in Jupyter the widget bar, or the text
    bar where ipywidgets is missing (Jupyter's output is no terminal, but shows it); elsewhere the
    text bar on a terminal only (``disable=None``: a log file gets the epoch lines alone)."""
    if not _in_jupyter():
        from tqdm.std import tqdm
        return tqdm, None
    try:
        import ipywidgets  # noqa: F401  (the widget bar needs it)
        from tqdm.notebook import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm, False


def _in_jupyter():
    """True inside a Jupyter kernel (an IPython kernel app), as tqdm.autonotebook tells it."""
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and "IPKernelApp" in ipython.get_ipython().config
    except AttributeError:     # IPython imported, but no shell running
        return False


def _format_logs(logs):
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


def _split(x, y, validation_split, validation_data):
    """Keras's hold-out: the last ``validation_split`` of the samples, taken before shuffling."""
    if validation_data is not None:
        return x, y, validation_data[0], validation_data[1]
    if validation_split == 0.0:
        return x, y, None, None
    split_at = int(math.floor(x.shape[0] * (1.0 - validation_split)))
    if split_at == 0 or split_at == x.shape[0]:
        raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                         f"for {x.shape[0]} samples: give more samples, or a validation_split that leaves one on "
                         f"each side (0 for no validation)")
    return x[:split_at], y[:split_at], x[split_at:], y[split_at:]


# ---- checkpoints -------------------------------------------------------------------------------

class CheckpointExistsError(FileExistsError):
    """``checkpoint=`` names a file that exists, and this run neither resumes it nor may overwrite it.

    ``held``: what the file holds, in words.
    """

    held = "a file"


class CheckpointMismatchError(ValueError):
    """``resume_from`` names a checkpoint whose run had other settings; ``differences``: [(setting, saved, now)]."""

    def __init__(self, path, differences):
        self.path, self.differences = path, differences
        listed = "; ".join(f"{name}: the checkpoint's run had {saved!r}, this one has {now!r}"
                           for name, saved, now in differences)
        super().__init__(f"{path} was saved by a run with other settings ({listed}); resume it with its own "
                         f"settings, or start a new run with another checkpoint path")


def run_settings(model: Trainable, x, y, x_val, y_val, batch_size, shuffle, validation_split, extra=None):
    """What defines a run, as a checkpoint records it: a resumed run must match it.

    The data are known by a digest of every sample and target. (Checkpoints written before kept a
    digest of 16 samples, under the names 'data' and 'validation_data': those are not compared.)
    """
    settings = {"batch_size": batch_size, "shuffle": shuffle, "training_samples": int(x.shape[0]),
                "training_digest": _digest(x, y), "input_shape": list(model.input_shape),
                "validation_split": validation_split,
                "validation_samples": 0 if x_val is None else int(x_val.shape[0]),
                "validation_digest": None if x_val is None else _digest(x_val, y_val),
                "optimizer": type(model.optimizer).__name__}
    settings.update({key: value for key, value in vars(model.optimizer).items()
                     if not key.startswith("_") and key != "iterations" and isinstance(value, (int, float))})
    clashes = sorted(set(extra or {}) & set(settings))
    if clashes:
        raise ValueError(f"settings {clashes}: fit records these itself, from its arguments and the optimiser; "
                         f"give yours other names")
    settings.update(extra or {})
    return settings


def _digest(x, y):
    """A short SHA-256 digest of every sample and target (one read-back per ``DIGEST_ROWS`` rows):
    other data, or the same data changed anywhere, show."""
    xp = backend.get_array_module(x)
    digest = hashlib.sha256()
    for start in range(0, x.shape[0], DIGEST_ROWS):
        rows = slice(start, start + DIGEST_ROWS)
        digest.update(backend.to_numpy(xp.concatenate([x[rows].reshape(-1), y[rows].reshape(-1)])))
    return digest.hexdigest()[:16]


def _settings_differences(saved, now):
    return [(key, saved[key], now[key]) for key in now if key in saved and saved[key] != now[key]]


def save_checkpoint(path, model: Trainable, epochs_done, history, settings=None):
    """Weights, optimiser state, epochs done, RNG state, history and the run's settings, written atomically."""
    arrays = {f"weights/{name}": p for name, p in model.weight_items()}
    state = model.optimizer.get_state()
    arrays.update({f"optimizer/{k}": v for k, v in state.items() if k != "iterations"})
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epochs_done,
            "optimizer": type(model.optimizer).__name__, "iterations": state["iterations"],
            "rng": random.get_rng().get_state(), "history": history.history, "settings": settings or {}}
    save_npz(path, arrays, meta)


def read_checkpoint(path):
    """(arrays, meta) of a checkpoint file, its metadata checked; ValueError naming what is wrong."""
    arrays, meta = load_npz(path)
    if not meta or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a minialex checkpoint (a weights file goes to load_weights)")
    if meta.get("version") not in (1, CHECKPOINT_VERSION):
        raise ValueError(f"{path} is a checkpoint of version {meta.get('version')!r}; this minialex reads "
                         f"versions 1 to {CHECKPOINT_VERSION}")
    problems = []
    if not _count(meta.get("epoch")):
        problems.append(f"epoch {meta.get('epoch')!r}")
    if not _count(meta.get("iterations")):
        problems.append(f"iterations {meta.get('iterations')!r}")
    rng = meta.get("rng")
    if not (isinstance(rng, dict) and _count(rng.get("seed")) and _count(rng.get("position"))):
        problems.append(f"generator state {rng!r}")
    history = meta.get("history")
    if not (isinstance(history, dict) and all(
            isinstance(v, list) and len(v) == meta.get("epoch") and all(isinstance(e, (int, float)) for e in v)
            for v in history.values())):
        problems.append("history (not one number per epoch done)")
    if not isinstance(meta.get("settings", {}), dict) or not isinstance(meta.get("optimizer"), str):
        problems.append("settings")
    if problems:
        raise ValueError(f"{path} is a damaged checkpoint: bad {', '.join(problems)}")
    return arrays, meta


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_checkpoint(path, model: Trainable, settings=None):
    """Restore a checkpoint into a compiled model and the run's generator; returns (epochs done, History).

    Everything in the file is checked -- metadata, every weight, the optimiser's state, and (given
    ``settings``, as ``run_settings`` makes them) that it comes from a run with the same settings --
    before anything is written into the model, the optimiser or the generator.
    """
    arrays, meta = read_checkpoint(path)
    if meta["optimizer"] != type(model.optimizer).__name__:
        raise ValueError(f"{path} was saved with {meta['optimizer']}, the model is compiled with "
                         f"{type(model.optimizer).__name__}")
    dtypes = sorted({str(v.dtype) for k, v in arrays.items() if k.startswith("weights/") and v.dtype.kind == "f"})
    if dtypes and dtypes != [model.dtype]:
        raise ValueError(f"{path} does not fit this model: its weights are {', '.join(dtypes)}, the model's "
                         f"{model.dtype}; resume it into a model built with dtype={dtypes[0]!r}")
    if settings is not None:
        differences = _settings_differences(meta.get("settings", {}), settings)
        if differences:
            raise CheckpointMismatchError(path, differences)
    weights = {k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")}
    state = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    unknown = sorted(k for k in arrays if not k.startswith(("weights/", "optimizer/")))
    try:
        if unknown:
            raise ValueError(f"unexpected arrays {unknown}")
        model.check_weights(weights)
        params = [] if model.flat_parameters is None else [model.flat_parameters]
        model.optimizer.check_state(dict(state, iterations=meta["iterations"]), params)
        state = {name: checks.representable(f"optimizer state {name}", value, model.dtype)
                 for name, value in state.items()}
        state["iterations"] = meta["iterations"]
    except ValueError as exc:
        raise ValueError(f"{path} does not fit this model: {exc}") from None
    model.optimizer.set_state(state, params)
    model.assign_weights(weights)
    random.get_rng().set_state(meta["rng"])
    return meta["epoch"], History(meta["history"])


@contextmanager
def owned_checkpoint(path, resume_from=None, overwrite=False):
    """Within the block this run alone saves checkpoints to ``path`` (``ownership.CheckpointOwner``,
    yielded); raises before any work unless it may.

    Its folder must exist and be writable, the names of the files written there must fit, no other
    run may hold it, and an existing file there is replaced only when this run resumes that very
    file or ``overwrite`` is true (a rerun never silently destroys a checkpoint).
    """
    check_destination(path, "save a checkpoint",
                      also={"its lock file (.NAME.lock)": os.path.basename(lock_path(path))})
    with CheckpointOwner(path) as owner:
        if os.path.exists(path) and not overwrite and not _same_file(path, resume_from):
            _, held = describe(path)
            error = CheckpointExistsError(f"{path} already holds {held}; resume it (resume_from={str(path)!r}), "
                                          f"choose another path, or pass overwrite=True to replace it")
            error.held = held
            raise error
        yield owner


def _same_file(path, other):
    """True when ``other`` (None for none) is the file at ``path``, which exists."""
    return other is not None and os.path.exists(other) and os.path.samefile(path, other)


def check_checkpoint_destination(path, resume_from=None, overwrite=False):
    """Raise before any work unless ``path`` can take this run's checkpoints (see ``owned_checkpoint``)."""
    with owned_checkpoint(path, resume_from, overwrite):
        pass


# ---- the fit loop ------------------------------------------------------------------------------

def fit(model: Trainable, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None, shuffle=True,
        verbose=1, checkpoint=None, resume_from=None, overwrite=False, settings=None):
    """Train ``model`` on (x, y) for ``epochs`` epochs, as Keras's ``Model.fit``.

    ``checkpoint=path`` saves everything needed to continue after every epoch; ``resume_from=path``
    restores such a file first and trains the epochs that remain, exactly as if never stopped. A
    checkpoint records the run's settings (batch size, validation, data, optimiser, and ``settings``,
    a dict of anything else that defines the run); resuming with other ones is refused, naming each
    difference. An existing file at ``checkpoint`` is replaced only when it is the one resumed, or
    with ``overwrite=True``. Every argument, input and destination is checked before the first step.
    """
    model.ensure_compiled()
    model.optimizer.check_fits([] if model.flat_parameters is None else [model.flat_parameters])
    checkpoint, resume_from = (None if path is None else os.fsdecode(path) for path in (checkpoint, resume_from))
    epochs = checks.positive_int("epochs", epochs, minimum=0)
    batch_size = checks.positive_int("batch_size", batch_size)
    validation_split = checks.fraction("validation_split", validation_split)
    checks.flag("shuffle", shuffle)
    checks.one_of("verbose", verbose, (0, 1, 2))
    checks.flag("overwrite", overwrite)
    settings = checks.recordable_settings(settings)
    if validation_data is not None and (not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
        count = f"a {type(validation_data).__name__} of {len(validation_data)}" \
            if isinstance(validation_data, (tuple, list)) else type(validation_data).__name__
        raise ValueError(f"validation_data must be a pair (x_val, y_val), got {count}")
    if validation_data is not None and any(part is None for part in validation_data):
        missing = "x_val" if validation_data[0] is None else "y_val"
        raise ValueError(f"validation_data's {missing} is None: give both arrays (y_val one-hot, as y), or "
                         f"validation_data=None for no validation")
    holding = nullcontext() if checkpoint is None else owned_checkpoint(checkpoint, resume_from, overwrite)
    with holding as owner:   # no other run writes the checkpoint until fit returns
        if resume_from is not None:
            read_checkpoint(resume_from)         # a missing or foreign file fails before the data are moved
        x, y = model.prepare_inputs(x, y)
        x_train, y_train, x_val, y_val = _split(x, y, validation_split, validation_data)
        if validation_data is not None:
            x_val, y_val = model.prepare_inputs(x_val, y_val, names=("validation_data x", "validation_data y"))
            if x_val.shape[0] == 0:
                raise ValueError("validation_data holds no samples; pass None for no validation")
        rng = random.get_rng()
        n = x_train.shape[0]
        if n == 0:
            raise ValueError("fit needs at least one training sample")
        steps = math.ceil(n / batch_size)
        run = run_settings(model, x_train, y_train, x_val, y_val, batch_size, bool(shuffle),
                           None if validation_data is not None else validation_split, settings)

        first_epoch, history = 0, History()
        if resume_from is not None:
            first_epoch, history = load_checkpoint(resume_from, model, run)
            if verbose and first_epoch >= epochs:
                print(f"{resume_from} holds {first_epoch} epochs already: nothing left to train for epochs={epochs}")

        guard = NonFiniteGuard(model, steps, x_train)
        training_steps = model.training_steps(x_train, y_train, guard)
        try:
            for epoch in range(first_epoch, epochs):
                logs = _train_epoch(model, guard, training_steps, epoch, epochs, x_train, y_train, x_val, y_val,
                                    batch_size, rng.permutation(n) if shuffle else None, verbose)
                history.append(logs)
                if owner is not None:
                    owner.check(epoch + 1)
                    save_checkpoint(checkpoint, model, epoch + 1, history, run)
                    owner.saved()
        except NonFiniteLossError as exc:
            exc.history = history
            raise
        return history


def _train_epoch(model: Trainable, guard, training_steps, epoch, epochs, x_train, y_train, x_val, y_val, batch_size,
                 order, verbose):
    """One epoch's steps (through ``training_steps``: ``EagerSteps`` or its GPU twin), then validation;
    returns its logs."""
    n = x_train.shape[0]
    steps = math.ceil(n / batch_size)
    progress = Progress(epoch, epochs, steps, verbose)
    guard.start_epoch(epoch)
    training_steps.start_epoch()
    seen, last_refresh, start = 0, time.perf_counter(), time.perf_counter()
    for step in range(steps):
        batch = slice(step * batch_size, (step + 1) * batch_size)
        training_steps.run(step, batch if order is None else order[batch])
        seen += min(batch_size, n - step * batch_size)
        if progress.bar is not None and time.perf_counter() - last_refresh >= REFRESH_SECONDS:
            guard.check(step)
            loss_sum, correct = training_steps.sums()
            progress.update(step + 1, {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen})
            last_refresh = time.perf_counter()
    guard.check(steps - 1)
    loss_sum, correct = training_steps.sums()
    logs = {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}
    if x_val is not None:
        val_loss, val_correct = model.evaluate_sums(x_val, y_val, batch_size)
        logs["val_loss"] = float(val_loss) / x_val.shape[0]
        logs["val_accuracy"] = float(val_correct) / x_val.shape[0]
        guard.end_epoch(logs["val_loss"], "validation loss")
    else:   # one batch through the final weights, so that fit never ends on (or saves) weights that give NaN
        probe_loss, _ = model.evaluate_sums(x_train[:batch_size], y_train[:batch_size], batch_size)
        guard.end_epoch(float(probe_loss), "loss")
    backend.synchronize()
    progress.close(time.perf_counter() - start, logs)
    return logs
