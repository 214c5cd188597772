"""Kernel launches per training step and per inference batch of the tutorial network, counted on the CPU.

    python benchmarks/launch_count.py                  # the table, ending in a RESULT line
    python benchmarks/launch_count.py --trace conv2d_1 # where each launch of one part comes from

On a GPU a small network's step is bound by launches, not FLOPs: at batch 64 most of this network's
kernels finish faster than the host takes to start them. This script runs the tutorial network
through ``minialex.stand_in``, NumPy arrays that count what CuPy would launch (its docstring says
what counts), with each layer's forward and backward, the loss and the optimiser labelled.

One step is counted as the difference between ``fit`` over three batches and over two (so the
epoch's own work cancels out and the step counted is a warm one); one inference batch likewise with
``evaluate_sums``, which ``fit``'s validation and ``evaluate`` run. The script prints launches by part
and ends with ``RESULT launches_per_step=N launches_per_inference_batch=M``.
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minialex.stand_in import LaunchCounter, counting  # noqa: E402

BATCH = 64
def labelled(counter, name, function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with counter.label(name):
            return function(*args, **kwargs)
    return call


def instrument(model, counter):
    """Label the launches of each layer's forward and backward, the loss, accuracy and the optimiser."""
    for layer in model.layers:
        layer.forward = labelled(counter, ("forward", layer.name), layer.forward)
        layer.backward = labelled(counter, ("backward", layer.name), layer.backward)
    model.loss.forward = labelled(counter, ("forward", "loss + accuracy"), model.loss.forward)
    model.forward_loss = labelled(counter, ("forward", "loss + accuracy"), model.forward_loss)
    model.loss.backward = labelled(counter, ("backward", "loss + accuracy"), model.loss.backward)
    model.optimizer.apply = labelled(counter, "optimiser", model.optimizer.apply)


def _counted_run(batches, what):
    """Launches (by label) of ``fit`` over ``batches`` batches ('step') or of ``evaluate_sums`` ('inference')."""
    import common
    from minialex import random

    counter = LaunchCounter()
    with counting(counter):
        model = common.tutorial_model()
        x, y = common.tutorial_batch(BATCH * batches)
        instrument(model, counter)
        counter.counts.clear()
        if what == "step":
            random.set_seed(1)
            model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, shuffle=True)
        else:
            model.evaluate_sums(x, y, BATCH)
    return counter


def count_launches():
    """{'step': Counter of one training step by label, 'inference': one inference batch, 'assumed': names}."""
    result, assumed = {}, set()
    for what in ("step", "inference"):
        three, two = _counted_run(3, what), _counted_run(2, what)
        difference = Counter(three.counts)
        difference.subtract(two.counts)
        result[what] = Counter({k: v for k, v in difference.items() if v})
        assumed |= three.assumed
    result["assumed"] = assumed
    return result


def layer_names():
    import common

    with counting():
        return [layer.name for layer in common.tutorial_model().layers]


def table(counts, names):
    """The report: one row per layer (training forward, backward; inference), then loss, optimiser, loop."""
    step, inference = counts["step"], counts["inference"]
    lines = [f"{'part':<24}{'step: forward':>14}{'backward':>10}{'inference':>11}"]

    def row(label, forward, backward, infer):
        cells = [f"{v:>{w}}" if v else f"{'':>{w}}" for v, w in ((forward, 14), (backward, 10), (infer, 11))]
        lines.append((f"{label:<24}" + "".join(cells)).rstrip())

    parts = names + ["loss + accuracy"]
    for name in parts:
        row(name, step[("forward", name)], step[("backward", name)], inference[("forward", name)])
    row("optimiser", 0, step["optimiser"], inference["optimiser"])
    row("loop (fit / evaluate)", 0, step["loop"], inference["loop"])
    known = {(way, name) for way in ("forward", "backward") for name in parts} | {"optimiser", "loop"}
    for label in sorted((set(step) | set(inference)) - known, key=str):
        row(str(label), step[label], 0, inference[label])
    forward = sum(v for k, v in step.items() if isinstance(k, tuple) and k[0] == "forward")
    lines.append("-" * 59)
    row("total", forward, sum(step.values()) - forward, sum(inference.values()))
    lines.append(f"{'':<24}{'step: ' + str(sum(step.values())):>24}")
    return "\n".join(lines)


def trace(name):
    """Where each launch of part ``name`` (a layer's name, 'optimiser' or 'loop') comes from, in one
    warm fit step over one batch (the loop's lines include the epoch's own work)."""
    import common

    counter = LaunchCounter()
    with counting(counter):
        model = common.tutorial_model()
        x, y = common.tutorial_batch(BATCH)
        instrument(model, counter)
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
        counter.trace = name
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    for label, launches, where in counter.lines:
        print(f"{label[0] if isinstance(label, tuple) else label:<10}{launches:>3}  {where}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", metavar="PART", help="list where each launch of one part comes from "
                        "(a layer's name as in the table, 'loss + accuracy', 'optimiser' or 'loop')")
    args = parser.parse_args(argv)
    if args.trace:
        return trace(args.trace)
    counts = count_launches()
    print(f"Kernel launches of the tutorial network, batch {BATCH}, as CuPy would make them "
          "(counted on NumPy; see this file's docstring)\n")
    print(table(counts, layer_names()))
    if counts["assumed"]:
        print(f"\n(counted as one launch each, not in FUNCTION_LAUNCHES: {', '.join(sorted(counts['assumed']))})")
    print(f"\nRESULT launches_per_step={sum(counts['step'].values())} "
          f"launches_per_inference_batch={sum(counts['inference'].values())}")


if __name__ == "__main__":
    main()
