"""Every kernel of one training step of the tutorial network, ranked by its time on the card, with its
FLOPs and bytes beside it.

    python benchmarks/kernel_table.py --backend cupy     # on a GPU: device times (needs PyTorch's profiler)
    python benchmarks/kernel_table.py                    # anywhere: the launches, FLOPs and bytes, no times

The launches come from the CPU: one step (batch 64) captured by the emulator of CUDA graphs
(``minialex.graph_stand_in``), each with its part of the network (``launch_count.py``'s labels), the
bytes of the arrays it reads and writes (each counted once) and, for a product (and Conv2D's input
gradient, a product and a kernel), its FLOPs (2 M N K).
On a GPU the step runs as ``fit`` runs it (the graph replayed) under PyTorch's profiler, whose CUPTI
sees every kernel of the process, CuPy's and cuBLAS's too: each kernel's device time is the median
over ``--steps`` steps, and the card's kernels are matched to the launches in order (a product can
be more than one cuBLAS kernel, a reduction more than one CUB kernel: those are summed into it;
``match`` says how). Rows are ranked by device time, with GB/s and GFLOP/s; without times (no GPU,
or no PyTorch) by bytes. The run ends with ``RESULT kernels=N step_device_ms=... largest=...``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import launch_count  # noqa: E402
from minialex import backend, graph_stand_in  # noqa: E402

Row = namedtuple("Row", "part what flops bytes token launches")
FUSED_PREFIX = "minialex_"


def recorded_rows(batch=common.BATCH):
    """[Row] of the launches of one training step's graph, as the emulator captured them."""
    with graph_stand_in.emulating() as counter:
        model = common.tutorial_model()
        x, y = common.tutorial_batch(batch)
        launch_count.instrument(model, counter)
        steps, _ = common.fit_steps(model, x, y, warmup=2)          # eager, then captured
        return [row(launch) for launch in steps.batches[batch].replayer.graph.launches]


def row(launch):
    """A Row for one recorded launch."""
    label = launch.label
    part = f"{label[1]} {label[0]}" if isinstance(label, tuple) else str(label)
    kernel = getattr(launch.function, "kernel", None)
    what = kernel.__name__ if kernel is not None else launch.name
    arrays = {}
    for array in graph_stand_in._arrays_in((launch.args, launch.kwargs, launch.result)):
        arrays[(array.__array_interface__["data"][0], array.shape, array.strides)] = array.nbytes
    flops = 0
    if what == "matmul":
        (M, K), N = launch.args[0].shape, launch.args[1].shape[1]
        flops = 2 * M * N * K
    elif what == "col2im_by_taps":                        # its product dcols = dz @ K^T, then col2im
        flops = 2 * launch.args[0].shape[0] * launch.args[1].size
    token = "P" if what == "matmul" else ("K" if kernel is not None else "C")
    return Row(part, what, flops, sum(arrays.values()), token, launch.launches)


# ---- the card's kernels --------------------------------------------------------------------------

def profiled_kernels(run_step, steps):
    """[[(kernel name, device µs)] per step], from PyTorch's profiler (CUPTI) over ``steps`` calls of
    ``run_step``, its Chrome trace read back: kernels, copies and fills, in the order they ran."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        for _ in range(steps):
            run_step()
        backend.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    torch.cuda.synchronize()
    on_card = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                     key=lambda e: e["ts"])
    sequence = [(e["name"], float(e["dur"])) for e in on_card]
    if len(sequence) % steps:
        raise RuntimeError(f"{len(sequence)} kernels over {steps} steps: the steps differ")
    size = len(sequence) // steps
    return [sequence[k * size:(k + 1) * size] for k in range(steps)]


def card_token(name, fused):
    """A kernel's kind: 'K' one of minialex's (its ElementwiseKernels, ``minialex_*``; ``backend.fuse``'s
    functions, by name), 'C' another of CuPy's (``cupy_*``), 'P' the rest (cuBLAS's, CUB's, copies)."""
    if name.startswith(FUSED_PREFIX) or name in fused:
        return "K"
    return "C" if name.startswith("cupy_") else "P"


OUTSIDE = 6          # kernels before the graph's: the step's values and its batch, copied in


def match(rows, kernels):
    """[(row or None, [(name, µs)])]: the card's kernels of one step matched to the launches in order.

    Each launch takes one or more kernels in a row, at least one: an alignment of least cost (dynamic
    programming) where a kernel of another kind than its launch's costs 1 ('P' a product or another
    library's kernel, 'K' one of minialex's, 'C' one of CuPy's), a kernel beyond the launches a launch
    makes costs 0.5 when it is another library's (a product's split-K reduction, CUB's second pass) and
    2 otherwise, and one short 0.5. Up to ``OUTSIDE`` kernels before the first launch (the step's values
    and its batch, copied in outside the graph) come with row None."""
    fused = {row.what for row in rows if row.token == "K"}
    tokens = [card_token(name, fused) for name, _ in kernels]
    m, n = len(rows), len(kernels)
    best = {(0, j): (0.0, None) for j in range(min(OUTSIDE, n) + 1)}
    for i, row in enumerate(rows):
        for j in sorted(j for (k, j) in best if k == i):
            for size in range(1, row.launches + 3):
                if j + size > n:
                    break
                cost = best[(i, j)][0] + group_cost(row, tokens[j:j + size])
                if cost < best.get((i + 1, j + size), (float("inf"),))[0]:
                    best[(i + 1, j + size)] = (cost, j)
    if (m, n) not in best:
        raise ValueError(f"{n} kernels cannot be matched to {m} launches")
    matched, j = [], n
    for i in range(m, 0, -1):
        start = best[(i, j)][1]
        matched.append((rows[i - 1], kernels[start:j]))
        j = start
    matched.reverse()
    return ([(None, kernels[:j])] if j else []) + matched


def group_cost(row, tokens):
    cost = 0.0 if row.token in tokens else 1.0
    extra = tokens[row.launches:] if len(tokens) > row.launches else []
    cost += sum(0.5 if token == "P" else 2.0 for token in extra)
    return cost + 0.5 * max(0, row.launches - len(tokens))


def table(matched, steps_run=None):
    """The report's lines: ranked by device time (by bytes where there are no times)."""
    timed = any(kernels for _, kernels in matched)
    lines = [f"{'rank':>4} {'µs':>8} {'share':>6}  {'part':<28} {'launch':<24} {'MFLOP':>8} {'kB':>9} "
             f"{'GB/s':>7} {'GFLOP/s':>8}  kernels on the card"]
    total = sum(us for _, kernels in matched for _, us in kernels) or float("nan")
    order = sorted(matched, key=lambda pair: (-sum(us for _, us in pair[1]), -(pair[0].bytes if pair[0] else 0)))
    for rank, (launch, kernels) in enumerate(order, 1):
        us = sum(time for _, time in kernels)
        part, what = (launch.part, launch.what) if launch else ("(outside the graph)", "values, batch")
        flops, nbytes = (launch.flops, launch.bytes) if launch else (0, 0)
        rate = f"{nbytes / us / 1e3:>7.1f}" if us else f"{'':>7}"
        compute = f"{flops / us / 1e3:>8.1f}" if us and flops else f"{'':>8}"
        times = f"{us:>8.1f} {100 * us / total:>5.1f}%" if timed else f"{'':>8} {'':>6}"
        names = ", ".join(sorted({name[:40] for name, _ in kernels}))
        lines.append(f"{rank:>4} {times}  {part:<28.28} {what:<24.24} {flops / 1e6:>8.1f} {nbytes / 1e3:>9.1f} "
                     f"{rate} {compute}  {names}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--batch", type=int, default=common.BATCH)
    parser.add_argument("--steps", type=int, default=10, help="steps profiled on the card (median per kernel)")
    args = parser.parse_args(argv)
    rows = recorded_rows(args.batch)
    matched = [(row, []) for row in rows]
    note = "no device times: the CPU"
    backend.set_backend(args.backend)
    if backend.get_backend() == "cupy":
        try:
            matched, note = device_times(rows, args.batch, args.steps)
        except Exception as exc:  # noqa: BLE001 - the table without times, and why
            note = f"no device times ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    print(f"The kernels of one training step of the tutorial network, batch {args.batch}, on "
          f"{backend.describe_device()}: {note}\n")
    print("\n".join(table(matched)))
    times = [sum(us for _, us in kernels) for _, kernels in matched]
    graph = [(launch, us) for (launch, _), us in zip(matched, times) if launch is not None]
    largest = max(graph, key=lambda pair: (pair[1], pair[0].bytes))[0]
    print(f"\nRESULT kernels={len(rows)} step_device_ms={sum(times) / 1000:.4f} "
          f"largest={largest.part.replace(' ', '_')}:{largest.what}")


def device_times(rows, batch, steps):
    """(matched rows with each kernel's median device µs over ``steps`` replayed steps, a note)."""
    model = common.tutorial_model()
    x, y = common.tutorial_batch(batch)
    _, run = common.fit_steps(model, x, y)                      # eager, captured, replayed
    per_step = profiled_kernels(run, steps)
    names = [name for name, _ in per_step[0]]
    medians = [statistics.median(step[k][1] for step in per_step) for k in range(len(names))]
    kernels = list(zip(names, medians))
    matched = match(rows, kernels)
    one_to_one = sum(1 for launch, found in matched if launch is not None and len(found) == 1)
    return matched, (f"{len(kernels)} kernels on the card a step (median µs of {steps} replayed steps, "
                     f"CUPTI through PyTorch's profiler); {one_to_one} of {len(rows)} launches matched one to one")


if __name__ == "__main__":
    main()
