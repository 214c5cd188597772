"""Where one training step's time goes, measured inside the real step (not each layer alone).

    python3 benchmarks/step_profile.py [--threads N] [--steps 60] [--norm lrn|batchnorm] [--data-dir DIR]

The tutorial model trains on real MNIST batches of 64 (random images if MNIST is absent) exactly as
``fit`` runs it: ``train_step`` (on the CPU, shards side by side, one per thread) then
``apply_gradients``. Every layer's ``forward`` and ``backward``, the loss, the summing of the
shards' gradients and Adam are timed as they run, on whichever thread runs them. A layer's figure is
its time on one shard's thread, the median over steps of the mean over shards: with two shards on
two threads, the step's wall time is about the sum of one shard's column plus what runs on one
thread only (the sum of gradients, Adam, the loop).

Each layer's matrix products are then replayed alone at the shard's shapes on one thread (the BLAS
that a shard's thread gets), so its time splits into "products" and "other" (elementwise passes,
copies, im2col, col2im, pooling, ...). The floor is the step's FLOPs at the GEMM rate measured in
the same run: the time the step would take if it were nothing but its products.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy  # noqa: E402

import common  # noqa: E402
from minialex import backend, parallel  # noqa: E402
from minialex.layers import Conv2D, Dense, LocalResponseNorm  # noqa: E402


class Clock:
    """Seconds per (part, phase) for the step being run, per thread."""

    def __init__(self):
        self.step = collections.defaultdict(float)      # (part, phase, thread) -> seconds this step
        self.steps = []

    def wrap(self, owner, method, part, phase):
        function = getattr(owner, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.step[part, phase, threading.get_ident()] += time.perf_counter() - start

        setattr(owner, method, timed)

    def wrap_program(self, owner, method, part, phase):
        """Like ``wrap``, for a shard's program (a generator: ``Layer.forward_meeting``): the time it runs
        between its meetings, not the time it waits in them."""
        function = getattr(owner, method)

        def timed(*args, **kwargs):
            program, total = function(*args, **kwargs), None
            while True:
                start = time.perf_counter()
                try:
                    part_sums = program.send(total)
                except StopIteration as finished:
                    return finished.value
                finally:
                    self.step[part, phase, threading.get_ident()] += time.perf_counter() - start
                total = yield part_sums

        setattr(owner, method, timed)

    def end_step(self):
        self.steps.append(self.step)
        self.step = collections.defaultdict(float)

    def per_shard(self, part, phase):
        """Median over steps of the mean over the threads that ran (part, phase)."""
        values = []
        for step in self.steps:
            times = [seconds for (p, f, _), seconds in step.items() if (p, f) == (part, phase)]
            if times:
                values.append(sum(times) / len(times))
        return statistics.median(values) if values else 0.0


def instrument(model, clock):
    """Time every layer's forward/backward and the loss in the model and its replicas (made first)."""
    networks = [model] + model.replicas(len(parallel.shard_plan(common.BATCH)) - 1)
    for network in networks:
        for layer in network.layers:
            clock.wrap(layer, "forward", layer.name, "forward")
            clock.wrap(layer, "backward", layer.name, "backward")
            if layer.mixes_samples:     # in shards it runs these instead, meeting the other shards
                clock.wrap_program(layer, "forward_meeting", layer.name, "forward")
                clock.wrap_program(layer, "backward_meeting", layer.name, "backward")
        clock.wrap(network.loss, "forward", "loss", "forward")
        clock.wrap(network.loss, "backward", "loss", "backward")


def products(layer, rows):
    """[(m, k, n)] of the matrix products a layer runs per forward and per backward at ``rows`` samples."""
    if isinstance(layer, Conv2D):
        kh, kw, c, f = layer.params["kernel"].shape
        pixels = rows * layer.output_shape[0] * layer.output_shape[1]
        forward = [(pixels, kh * kw * c, f)]
        backward = [(f, pixels, kh * kw * c)] + ([(pixels, f, c)] * (kh * kw) if layer.input_shape[-1] > 1 else [])
        return forward, backward
    if isinstance(layer, Dense):
        d_in, d_out = layer.params["kernel"].shape
        return [(rows, d_in, d_out)], [(d_in, rows, d_out), (rows, d_out, d_in)]
    if isinstance(layer, LocalResponseNorm):
        h, w, c = layer.input_shape
        return [(rows * h * w, c, c)], [(rows * h * w, c, c)]
    return [], []


def product_seconds(shapes, repeat=15):
    """Median seconds of running the products of ``shapes`` once each, one BLAS thread."""
    rng = numpy.random.default_rng(0)
    pairs = [(rng.random((m, k), dtype=numpy.float32), rng.random((k, n), dtype=numpy.float32)) for m, k, n in shapes]
    if not pairs:
        return 0.0
    with parallel.single_threaded_blas():
        times = common.timed(lambda: [a @ b for a, b in pairs], repeat + 3)[3:]
    return statistics.median(times)


def real_batches(data_dir, steps):
    """``steps`` batches of 64 real MNIST training images (random ones if MNIST is absent), on the device."""
    (x, y), source = common.mnist_training_images(steps * common.BATCH, data_dir)
    x, y = backend.to_device(x), backend.to_device(y)
    return [(x[i:i + common.BATCH], y[i:i + common.BATCH]) for i in range(0, len(x), common.BATCH)], source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: BLAS's own)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps (after 10 warm-up steps)")
    parser.add_argument("--data-dir", default=common.DATA_DIR)
    parser.add_argument("--norm", default="lrn", choices=["lrn", "batchnorm"],
                        help="the tutorial's network (lrn) or its BatchNorm chapter's")
    args = parser.parse_args(argv)
    threads = common.set_threads(args.threads)
    load_before = common.machine_load()
    gemm = common.gemm_rate()
    model = common.tutorial_model(norm=args.norm)
    batches, source = real_batches(args.data_dir, args.steps + 10)
    model.train_step(*batches[0])                 # builds the replicas
    model.apply_gradients()
    clock = Clock()
    instrument(model, clock)
    step_times = []
    for index, (x, y) in enumerate(batches):
        start = time.perf_counter()
        model.train_step(x, y)
        summed = time.perf_counter()
        model.apply_gradients()
        end = time.perf_counter()
        clock.step["adam", "update", 0] += end - summed
        clock.end_step()
        if index >= 10:
            step_times.append(end - start)
    clock.steps = clock.steps[10:]

    shards = parallel.shard_plan(common.BATCH)
    rows = shards[0].stop - shards[0].start
    step_ms = 1000 * statistics.median(step_times)
    print(f"{backend.describe_device()}; numpy {numpy.__version__}; BLAS threads {threads}; "
          f"{len(shards)} shards of {rows}; {source}; load {load_before:.2f} before")
    print(f"float32 GEMM rate ({'x'.join(map(str, common.GEMM_SHAPE))}, {threads} threads): {gemm:.1f} GFLOP/s; "
          f"one thread at these shapes: see 'products' below\n")
    print("| part | forward ms | backward ms | products ms | other ms | products GFLOP/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    totals = collections.Counter()
    for layer in model.layers:
        forward, backward = clock.per_shard(layer.name, "forward"), clock.per_shard(layer.name, "backward")
        shapes_f, shapes_b = products(layer, rows)
        if layer is model.layers[0] and isinstance(layer, (Conv2D, Dense)):
            shapes_b = shapes_b[:1]                  # the first layer computes no dx
        gemm_s = product_seconds(shapes_f) + product_seconds(shapes_b)
        flops = sum(2 * m * k * n for m, k, n in shapes_f + shapes_b)
        rate = f"{flops / gemm_s / 1e9:.0f}" if gemm_s else ""
        print(f"| {layer.name} | {1000 * forward:.2f} | {1000 * backward:.2f} | {1000 * gemm_s:.2f} | "
              f"{1000 * (forward + backward - gemm_s):.2f} | {rate} |")
        totals.update(forward=forward, backward=backward, products=gemm_s)
    loss = clock.per_shard("loss", "forward") + clock.per_shard("loss", "backward")
    adam = clock.per_shard("adam", "update")
    shard_ms = 1000 * (totals["forward"] + totals["backward"] + loss)
    print(f"| loss (fused softmax cross-entropy) | | | | {1000 * loss:.2f} | |")
    print(f"| one shard, all of the above | {1000 * totals['forward']:.2f} | {1000 * totals['backward']:.2f} | "
          f"{1000 * totals['products']:.2f} | {shard_ms - 1000 * totals['products']:.2f} | |")
    print(f"| Adam (one thread, flat buffer) | | | | {1000 * adam:.2f} | |")
    print(f"| the rest: hand-offs and meetings, summing the shards' gradients | | | | "
          f"{step_ms - shard_ms * len(shards) / min(len(shards), threads or 1) - 1000 * adam:.2f} | |")
    flops = common.step_flops(model)
    print(f"\nstep: {step_ms:.1f} ms median over {len(step_times)} steps ({flops / 1e9:.2f} GFLOP, "
          f"{flops / (step_ms / 1000) / 1e9:.0f} GFLOP/s = {100 * flops / (step_ms / 1000) / 1e9 / gemm:.0f}% of "
          f"the GEMM rate); floor at the GEMM rate: {1000 * flops / (gemm * 1e9):.1f} ms; "
          f"load {common.machine_load():.2f} after")
    print(f"RESULT step_ms={step_ms:.2f} shard_ms={shard_ms:.2f} products_ms={1000 * totals['products']:.2f} "
          f"adam_ms={1000 * adam:.2f} gemm_gflops={gemm:.1f}")


if __name__ == "__main__":
    main()
