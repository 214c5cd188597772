"""What ``fit`` adds to its steps: one epoch of ``fit`` against the same work done bare, in turns.

    python3 benchmarks/fit_loop.py [--images 5000] [--rounds 4] [--threads N] [--data-dir DIR]

The bare epoch is what an epoch cannot do without: the training steps (``train_step`` then
``apply_gradients``) over batches gathered before the clock starts, then the validation pass
(``evaluate_sums``). ``fit``'s epoch does the same plus its own work: shuffling, gathering each
batch, summing loss and accuracy, the non-finite guard, the progress line (verbose=2: one line an
epoch; a bar needs a terminal). The two alternate, one epoch each per round, on one model (both
train it on), and the ratio is the median of the rounds' ratios. The issue's target: fit's epoch
within 1.05x of the bare one.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from minialex import backend, random  # noqa: E402


def bare_epoch(model, batches, x_val, y_val, batch_size):
    """The steps over ready batches, then the validation sums read back: what fit's epoch must do."""
    for x, y in batches:
        model.train_step(x, y)
        model.apply_gradients()
    loss, correct = model.evaluate_sums(x_val, y_val, batch_size)
    return float(loss), float(correct)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="training images, of which 20%% validate")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: BLAS's own)")
    parser.add_argument("--norm", default="lrn", choices=["lrn", "batchnorm"])
    parser.add_argument("--data-dir", default=common.DATA_DIR)
    args = parser.parse_args(argv)
    threads = common.set_threads(args.threads)
    (x, y), source = common.mnist_training_images(args.images, args.data_dir)
    random.set_seed(0)
    model = common.tutorial_model(norm=args.norm)
    x, y = model.prepare_inputs(x, y)
    split = int(math.floor(len(x) * 0.8))
    x_train, y_train, x_val, y_val = x[:split], y[:split], x[split:], y[split:]
    batch_size = common.BATCH
    order = random.get_rng().permutation(split)
    batches = [(x_train[order[i:i + batch_size]], y_train[order[i:i + batch_size]])
               for i in range(0, split, batch_size)]
    load_before = common.machine_load()

    def fit_epoch():
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(x, y, epochs=1, batch_size=batch_size, validation_split=0.2, verbose=2)

    def bare():
        bare_epoch(model, batches, x_val, y_val, batch_size)

    times = {"fit": [], "bare": []}
    fit_epoch()            # warm-up: replicas, thread pools, the guard's first copy
    for _ in range(args.rounds):
        for name, function in (("fit", fit_epoch), ("bare", bare)):
            start = time.perf_counter()
            function()
            backend.synchronize()
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(f / b for f, b in zip(times["fit"], times["bare"]))
    print(f"{backend.describe_device()}; BLAS threads {threads}; {source}, {split} training + "
          f"{len(x) - split} validation images, batch {batch_size}, the {args.norm} network; "
          f"load {load_before:.2f} before, {common.machine_load():.2f} after")
    print(f"fit's epoch {statistics.median(times['fit']):.2f} s, bare {statistics.median(times['bare']):.2f} s "
          f"(medians of {args.rounds}); fit / bare, round by round: {ratio:.3f} "
          f"({', '.join(f'{f / b:.3f}' for f, b in zip(times['fit'], times['bare']))})")
    print(f"RESULT fit_s={statistics.median(times['fit']):.3f} bare_s={statistics.median(times['bare']):.3f} "
          f"ratio={ratio:.4f}")


if __name__ == "__main__":
    main()
