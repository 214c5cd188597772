"""The tutorial notebook's run, step by step: MNIST in, the small AlexNet trained, test accuracy out.

    python examples/train_mnist.py [--backend auto|numpy|cupy] [--epochs 5] [--batch-size 64] ...

The backend is ``--backend`` if given, else ``$MINIALEX_BACKEND``, else auto.

It prints what the notebook prints (the arrays' shapes, the model, each epoch, ``Running time`` and
``Test accuracy``) and, at the end, which backend and device ran. ``--plots DIR`` also keeps the
weights before and after training and the history in DIR and draws the run's pictures there
(``minialex.viz``; ``python -m minialex.viz DIR`` redraws them later). Problems a user can fix (no
dataset and no network, a bad path, a backend this machine cannot run, no matplotlib for
``--plots``) end with one line on stderr and exit status 2, found before any work where they can
be. ``--save`` never replaces an existing file unless it is the run resumed or ``--overwrite`` says
so, nor one that another run writes; nor does ``--plots`` replace a run's weights and history
without ``--overwrite``; ``--resume`` refuses flags that contradict the checkpoint's run. SIGTERM
is handled like Ctrl-C: temporary files removed, the last complete checkpoint kept, exit status
143 (130 for Ctrl-C); a second Ctrl-C or SIGTERM while that happens is ignored.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import backend, random, viz
from .data import DatasetUnavailableError, load_fashion_mnist, load_mnist, preprocess_images, to_categorical
from .models import alexnet_mnist
from .optimizers import Adam
from .training import (CheckpointExistsError, CheckpointMismatchError, NonFiniteLossError,
                       check_checkpoint_destination, read_checkpoint)

LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
# A checkpoint's settings, as the flags that set them (what fit records under other names, too).
FLAGS = {"dataset": "--dataset", "limit": "--limit", "seed": "--seed", "batch_size": "--batch-size",
         "validation_split": "--validation-split", "learning_rate": "--learning-rate",
         "training_samples": "--limit", "validation_samples": "--validation-split",
         "training_digest": "--dataset / --data-dir (the training images differ)",
         "validation_digest": "--dataset / --data-dir (the validation images differ)"}
PATH_FLAGS = ("save", "resume", "data_dir", "plots")
EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143
EXIT_BROKEN_PIPE = 141      # 128 + SIGPIPE: what a shell shows for a tool whose reader went away


class Terminated(BaseException):
    """SIGTERM arrived (``timeout``, a scheduler, ``docker stop``): unwound like Ctrl-C."""


def build_parser():
    parser = argparse.ArgumentParser(prog="train_mnist.py", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default=None,
                        help="array backend: cupy on an NVIDIA GPU, numpy on the CPU, auto picks "
                             "(default: $MINIALEX_BACKEND, else auto)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four IDX files (default: $MINIALEX_DATA_DIR, the cache, or download)")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="mnist")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--save", default=None, metavar="PATH",
                        help="write a checkpoint (weights, optimiser, history) after every epoch")
    parser.add_argument("--resume", default=None, metavar="PATH", help="continue the run saved in PATH")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --save replace an existing file, and --plots a run's weights and history "
                             "(by default they refuse to)")
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="keep the initial and final weights and the history in DIR and draw the run's "
                             "pictures there (needs matplotlib: pip install 'minialex[viz]')")
    return parser


def run_settings(args) -> dict:
    """The flags that define a run beyond what ``fit`` records itself."""
    return {"dataset": args.dataset, "limit": args.limit, "seed": args.seed}


def describe_differences(path, differences) -> str:
    listed = "; ".join(f"{FLAGS.get(name, name)}: {_shown(saved)} in the checkpoint, {_shown(now)} now"
                       for name, saved, now in differences)
    return (f"--resume {path} was saved by a run with other settings ({listed}); resume with the same flags, "
            f"or start a new run with another --save path")


def _shown(value):
    return "not given" if value is None else repr(value)


def check_arguments(args):
    """Everything that can be checked before any data are read: numbers, paths, the checkpoint's settings."""
    for name in PATH_FLAGS:
        if getattr(args, name) == "":
            raise ValueError(f"--{name.replace('_', '-')} is empty: give a path (is a variable in the command unset?)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    if not 0.0 <= args.validation_split < 1.0:
        raise ValueError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        raise ValueError(f"--learning-rate must be a positive finite number, got {args.learning_rate}")
    if args.save:
        try:
            check_checkpoint_destination(args.save, args.resume, args.overwrite)
        except CheckpointExistsError as exc:
            raise CheckpointExistsError(f"--save {args.save}: {exc.held} is there already; resume it with --resume "
                                        f"{args.save}, choose another --save path, or pass --overwrite to "
                                        f"replace it") from None
    if args.resume:
        _, meta = read_checkpoint(args.resume)
        if not args.save:
            check_checkpoint_destination(args.resume, args.resume)   # it is written again after each epoch
        saved, now = meta.get("settings", {}), dict(run_settings(args), batch_size=args.batch_size,
                                                    validation_split=args.validation_split,
                                                    learning_rate=args.learning_rate)
        differences = [(name, saved[name], value) for name, value in now.items()
                       if name in saved and saved[name] != value]
        if differences:
            raise ValueError(describe_differences(args.resume, differences))
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise NotADirectoryError(f"--plots {args.plots} is a file, not a folder")
    kept = [name for name in (viz.INITIAL_WEIGHTS, viz.WEIGHTS, viz.HISTORY)
            if args.plots and os.path.lexists(Path(args.plots) / name)]
    if kept and not args.overwrite:
        raise FileExistsError(f"--plots {args.plots} holds another run's {', '.join(kept)} already; choose another "
                              f"folder, or pass --overwrite to replace them")


def choose_backend(args):
    """Make the backend active that ``--backend`` names, else ``$MINIALEX_BACKEND``, else auto."""
    if args.backend is not None:
        backend.set_backend(args.backend)
        return
    name = os.environ.get("MINIALEX_BACKEND") or "auto"
    try:
        backend.set_backend(name)
    except backend.BackendError as exc:
        raise backend.BackendError(f"MINIALEX_BACKEND={name} (pass --backend to choose another): {exc}") from None


def run(args) -> dict:
    """Do the whole run; returns its results (history, test loss and accuracy, seconds)."""
    check_arguments(args)
    choose_backend(args)
    random.set_seed(args.seed)

    # 1-3. Data, preprocessed as the notebook does: pad 28x28 to 32x32, channel axis, /255, one-hot.
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](args.data_dir)
    if args.limit is not None:
        if args.limit > len(x_train):
            print(f"--limit {args.limit} is more than the {len(x_train)} training images: all {len(x_train)} "
                  f"are used")
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, x_test = preprocess_images(x_train), preprocess_images(x_test)
    y_train, y_test = to_categorical(y_train, 10), to_categorical(y_test, 10)
    print("x_train shape:", x_train.shape, "y_train shape:", y_train.shape)
    print("x_test shape:", x_test.shape, "y_test shape:", y_test.shape)

    # 4-5. The network, compiled with Adam and categorical cross-entropy.
    model = alexnet_mnist(input_shape=x_train.shape[1:], num_classes=10)
    model.summary()
    model.compile(optimizer=Adam(learning_rate=args.learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        model.save_weights(Path(args.plots) / viz.INITIAL_WEIGHTS)

    # 6. Training.
    start = time.perf_counter()
    try:
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=args.validation_split, checkpoint=args.save or args.resume,
                            resume_from=args.resume, overwrite=args.overwrite, settings=run_settings(args))
    except CheckpointMismatchError as exc:
        raise ValueError(describe_differences(exc.path, exc.differences)) from None
    seconds = time.perf_counter() - start
    print(f"Running time: {seconds:.2f} seconds")

    # 7. Testing.
    test_loss, test_accuracy = model.evaluate(x_test, y_test)
    print(f"Test loss: {test_loss:.4f}")
    print(f"Test accuracy: {test_accuracy:.4f}")
    print(f"Ran on: {backend.describe_device()}")
    if args.plots:
        viz.save_run(args.plots, model, history)
        for path in viz.draw_run(args.plots, model, x_test, y_test.argmax(axis=1)):
            print("Saved", path)
    return {"model": model, "history": history, "test_loss": test_loss, "test_accuracy": test_accuracy,
            "seconds": seconds}


def main(argv=None) -> int:
    """Run from the command line: 0 when done, 2 for a problem the user can fix (one line on stderr),
    130 after Ctrl-C and 143 after SIGTERM (temporary files removed, the last complete checkpoint kept),
    141, quietly, once the reader of the output is gone (``| head``)."""
    args = build_parser().parse_args(argv)
    before = _stamp(args.save)       # what --save held before this run: not this run's checkpoint
    try:
        with signals_unwind():
            run(args)
    except BrokenPipeError:         # the reader of the output is gone (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing more to flush at exit
        return EXIT_BROKEN_PIPE
    except (backend.BackendError, DatasetUnavailableError, NonFiniteLossError, OSError, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError as exc:      # NumPy's says how much it asked for; a ulimit -v or a full machine
        print(f"error: out of memory{': ' + _one_line(exc) if str(exc) else ''}; free memory or raise the limit "
              f"(ulimit -v), or use a smaller --batch-size or --limit{_kept(args, before)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except viz.MatplotlibMissing as exc:
        print(f"error: no pictures drawn: {exc} (the weights and history are saved in {args.plots}; "
              f"draw them later with python -m minialex.viz {args.plots})", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"interrupted{_kept(args, before)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"terminated (SIGTERM){_kept(args, before)}", file=sys.stderr)
        return EXIT_TERMINATED
    return 0


def _kept(args, before) -> str:
    """Where the last complete checkpoint of this run is, for a run that stops: the --save file once
    this run wrote it (it is not ``before`` any more), else the file it resumed; or that none was saved."""
    if args.save and os.path.isfile(args.save) and _stamp(args.save) != before:
        return f"; the last complete checkpoint is in {args.save}"
    if args.resume and os.path.isfile(args.resume):
        return f"; the last complete checkpoint is in {args.resume}"
    if args.save and os.path.isfile(args.save):
        return f"; no epoch was saved: {args.save} holds what it held before this run"
    return ""


def _stamp(path):
    """(inode, modification time, size) of the file at ``path``, or None."""
    try:
        status = os.stat(path)
    except (OSError, TypeError, ValueError):     # no file, no path (None), a path with a NUL byte
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class signals_unwind:
    """Within the block, Ctrl-C (SIGINT) raises KeyboardInterrupt and SIGTERM ``Terminated`` in the main
    thread, so that both unwind alike (``finally`` blocks remove temporary files). After the first,
    both are ignored for the rest of the process: a second Ctrl-C, quick on the first, neither cuts
    that short nor prints a traceback at exit (where Python waits for the worker threads). A signal
    ignored when the block starts (SIGINT, for a job a script starts with &) stays ignored."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._raise) for signum in (signal.SIGINT, signal.SIGTERM)
                             if signal.getsignal(signum) is not signal.SIG_IGN}
        return self

    @staticmethod
    def _raise(signum, frame):
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()

    def __exit__(self, *exc_info):
        if self.previous is None:
            return False
        for signum, handler in self.previous.items():
            if signal.getsignal(signum) is self._raise:     # not ignored: no signal came
                signal.signal(signum, handler)
        return False


if __name__ == "__main__":
    sys.exit(main())
