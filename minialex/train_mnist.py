"""The tutorial notebook's run, step by step: MNIST in, the small AlexNet trained, test accuracy out.

    python examples/train_mnist.py [--backend auto|numpy|cupy] [--epochs 5] [--batch-size 64] ...

It prints what the notebook prints (the arrays' shapes, the model, each epoch, ``Running time`` and
``Test accuracy``) and, at the end, which backend and device ran. ``--plots DIR`` also keeps the
weights before and after training and the history in DIR and draws the run's pictures there
(``minialex.viz``; ``python -m minialex.viz DIR`` redraws them later). Problems a user can fix (no
dataset and no network, a bad path, a backend this machine cannot run, no matplotlib for
``--plots``) end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import backend, random, viz
from .data import DatasetUnavailableError, load_fashion_mnist, load_mnist, preprocess_images, to_categorical
from .models import alexnet_mnist
from .optimizers import Adam
from .training import NonFiniteLossError

LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def build_parser():
    parser = argparse.ArgumentParser(prog="train_mnist.py", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default="auto",
                        help="array backend: cupy on an NVIDIA GPU, numpy on the CPU, auto picks (default auto)")
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
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="keep the initial and final weights and the history in DIR and draw the run's "
                             "pictures there (needs matplotlib: pip install 'minialex[viz]')")
    return parser


def run(args) -> dict:
    """Do the whole run; returns its results (history, test loss and accuracy, seconds)."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    backend.set_backend(args.backend)
    random.set_seed(args.seed)

    # 1-3. Data, preprocessed as the notebook does: pad 28x28 to 32x32, channel axis, /255, one-hot.
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](args.data_dir)
    if args.limit is not None:
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
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.validation_split, checkpoint=args.save or args.resume,
                        resume_from=args.resume)
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
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (backend.BackendError, DatasetUnavailableError, FileNotFoundError, NonFiniteLossError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except viz.MatplotlibMissing as exc:
        print(f"error: no pictures drawn: {exc} (the weights and history are saved in {args.plots}; "
              f"draw them later with python -m minialex.viz {args.plots})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
