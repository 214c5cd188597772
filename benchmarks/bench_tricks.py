"""What each trick of the fast layers buys: the fast way against the plain way it replaces, at the
tutorial network's real shapes (batch 64: every layer of ``alexnet_mnist()`` at its own input).

Each comparison names a fast way (A, what ``minialex.layers`` runs) and a plain way (B) and times
both over the layers where the trick applies (e.g. all five convolutions):

    the layer             against its plain twin (``minialex.naive``), forward and backward
    im2col's C == 1 branch  against im2col's general branch, on the first convolution's input
    col2im by taps        against dcols = dz @ K^T and col2im(dcols) (the formula's path)
    LRN's band matrix     against a loop over the window, 2r + 1 shifted slice-adds
    power() by roots      against den ** beta
    max-pool's separable taps  against the max over all PH*PW taps of the window at once
    max-pool's routing in place  against routing from zeros, adding each tap's share (disjoint windows)

The twins loop in Python over images, so the conv, pool, dense and loss twins run on a slice of
TWIN_IMAGES images and their time is scaled to the batch (a loop's time grows with the images it
visits); the LRN twin loops over channels only and runs on the whole batch. The twins compute what
the fast layers compute (tests/test_naive.py holds them equal); every other pair is checked equal
here, before it is timed.

    python3 benchmarks/bench_tricks.py [--threads 1] [--rounds 5]
        one table: A and B alternated in one process (blocks of calls), medians per batch of 64,
        with the CPU, the date and the machine's load; --threads 1 (the default) is the BLAS of
        one shard of the data-parallel step
    python3 -m pytest benchmarks/bench_tricks.py [--backend cupy]
        pytest-benchmark, one group per comparison (the twins are skipped on CuPy: each loop step
        would be a kernel launch); set OPENBLAS_NUM_THREADS=1 for the script's setting
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))          # `common`, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # minialex, from a checkout

import numpy  # noqa: E402
import pytest  # noqa: E402

import common  # noqa: E402
from minialex import backend, naive  # noqa: E402
from minialex.layers import Conv2D, Dense, LocalResponseNorm, MaxPool2D  # noqa: E402
from minialex.layers.base import same_padding  # noqa: E402
from minialex.layers.conv import col2im, col2im_by_taps, im2col  # noqa: E402
from minialex.layers.lrn import power, window_sum  # noqa: E402
from minialex.layers.pool import max_over_taps, max_pool, route_by_adding, route_in_place  # noqa: E402
from minialex.losses import SoftmaxCrossEntropy  # noqa: E402

TWIN_IMAGES = 1
NO_PADS = ((0, 0), (0, 0))       # for im2col of an input padded already


@dataclass
class Comparison:
    name: str                   # what is compared, e.g. "conv forward: im2col + one product vs the twin"
    layers: str                 # where, e.g. "5 conv"
    fast: Callable
    plain: Callable
    plain_scale: float = 1.0    # plain's time x this = its time for the whole batch
    twin: bool = False          # plain is a loop twin: slow, checked by tests/test_naive.py, not here


# ---- the network at batch 64 ------------------------------------------------------------------

class Network:
    """The tutorial model after one forward pass of a batch of 64 (training=True, so every layer
    holds what its backward needs), with each layer's input and a gradient for its output."""

    def __init__(self, batch=common.BATCH, seed=0):
        self.model = common.tutorial_model(seed)
        x, y = common.tutorial_batch(batch, seed)
        self.inputs, self.grads = {}, {}
        rng = numpy.random.default_rng(seed)
        for layer, x_in in common.layer_inputs(self.model, x):
            logits = isinstance(layer, (Conv2D, Dense))       # z, before the activation: what the twins see
            out = layer.forward(x_in, training=True, logits=True) if logits else layer.forward(x_in, training=True)
            self.inputs[layer.name] = x_in
            self.grads[layer.name] = backend.to_device(rng.standard_normal(out.shape).astype(numpy.float32))
        self.y = y

    def layers(self, kind):
        return [layer for layer in self.model.layers if isinstance(layer, kind)]

    def needs_input_grad(self, layer):
        """As in training: every layer computes dx but the first."""
        return layer is not self.model.layers[0]


def host(array, images=None):
    """A NumPy copy of ``array`` (its first ``images`` images), for the twins."""
    array = backend.to_numpy(array)
    return array if images is None else array[:images]


# ---- the layers against their twins -----------------------------------------------------------

def twin_comparisons(net, images=TWIN_IMAGES):
    batch = next(iter(net.inputs.values())).shape[0]
    scale = batch / images
    convs, pools, lrns, denses = (net.layers(kind) for kind in (Conv2D, MaxPool2D, LocalResponseNorm, Dense))
    x, g = net.inputs, net.grads

    def conv_args(layer):
        return dict(strides=layer.strides, padding=layer.padding)

    def fast_forward(layers, **options):
        return lambda: [layer.forward(x[layer.name], training=True, **options) for layer in layers]

    def fast_backward(layers):
        return lambda: [layer.backward(g[layer.name], input_grad=net.needs_input_grad(layer)) for layer in layers]

    twin_x = {name: host(value, images) for name, value in x.items()}
    twin_g = {name: host(value, images) for name, value in g.items()}
    params = {layer.name: {key: host(value) for key, value in layer.params.items()} for layer in convs + denses}
    logits, y = host(g[denses[-1].name], images), host(net.y, images)
    loss = SoftmaxCrossEntropy()
    fast_logits = g[denses[-1].name]
    return [
        Comparison("conv forward: im2col + one product vs the twin's loops", f"{len(convs)} conv",
                   fast_forward(convs, logits=True),
                   lambda: [naive.conv2d_forward(twin_x[c.name], params[c.name]["kernel"], params[c.name]["bias"],
                                                 **conv_args(c)) for c in convs], scale, True),
        Comparison("conv backward: products + col2im by taps vs the twin's loops", f"{len(convs)} conv",
                   fast_backward(convs),
                   lambda: [naive.conv2d_backward(twin_g[c.name], twin_x[c.name], params[c.name]["kernel"],
                                                  **conv_args(c)) for c in convs], scale, True),
        Comparison("max-pool forward: taps vs the twin's loops", f"{len(pools)} pool", fast_forward(pools),
                   lambda: [naive.maxpool2d_forward(twin_x[p.name], p.pool_size, p.strides, p.padding)
                            for p in pools], scale, True),
        Comparison("max-pool backward: routing by taps vs the twin's loops", f"{len(pools)} pool",
                   fast_backward(pools),
                   lambda: [naive.maxpool2d_backward(twin_g[p.name], twin_x[p.name], p.pool_size, p.strides,
                                                     p.padding) for p in pools], scale, True),
        Comparison("LRN forward: band matrix vs the twin's loop over channels", f"{len(lrns)} LRN",
                   fast_forward(lrns),
                   lambda: [naive.lrn_forward(host(x[n.name]), n.depth_radius, n.bias, n.alpha, n.beta)
                            for n in lrns], 1.0, True),
        Comparison("LRN backward: band matrix vs the twin's loop over channels", f"{len(lrns)} LRN",
                   fast_backward(lrns),
                   lambda: [naive.lrn_backward(host(g[n.name]), host(x[n.name]), n.depth_radius, n.bias, n.alpha,
                                               n.beta) for n in lrns], 1.0, True),
        Comparison("dense forward: one product vs the twin's loops", f"{len(denses)} dense",
                   fast_forward(denses, logits=True),
                   lambda: [naive.dense_forward(twin_x[d.name], params[d.name]["kernel"], params[d.name]["bias"])
                            for d in denses], scale, True),
        Comparison("dense backward: three products vs the twin's loops", f"{len(denses)} dense",
                   fast_backward(denses),
                   lambda: [naive.dense_backward(twin_g[d.name], twin_x[d.name], params[d.name]["kernel"])
                            for d in denses], scale, True),
        Comparison("softmax cross-entropy, forward + backward: fused vs the twin's loops", "loss",
                   lambda: (loss.forward(fast_logits, net.y), loss.backward()),
                   lambda: (naive.softmax_cross_entropy_forward(logits, y),
                            naive.softmax_cross_entropy_backward(logits, y)), scale, True),
    ]


# ---- the tricks against the plain way ----------------------------------------------------------

def padded(layer, x):
    """(xpad, ((top, bottom), (left, right))) for a Conv2D's input, as its forward pads it."""
    xp = backend.get_array_module(x)
    if layer.padding == "valid":
        return x, ((0, 0), (0, 0))
    pads = tuple(same_padding(size, k, s) for size, k, s in zip(x.shape[1:3], layer.kernel_size, layer.strides))
    return xp.pad(x, ((0, 0),) + pads + ((0, 0),)), pads


def general_im2col(xpad, kernel_size, strides, out_size):
    """im2col's general branch (strided windows, one copy into cols), whatever the channel count:
    what ``im2col`` would run for C == 1 without its single-channel branch."""
    xp = backend.get_array_module(xpad)
    (KH, KW), (SH, SW), (OH, OW) = kernel_size, strides, out_size
    N, _, _, C = xpad.shape
    s_n, s_h, s_w, s_c = xpad.strides
    windows = backend.as_strided(xpad, (N, OH, OW, KH, KW, C), (s_n, s_h * SH, s_w * SW, s_h, s_w, s_c))
    cols = xp.empty((N * OH * OW, KH * KW * C), dtype=xpad.dtype)
    cols.reshape(N, OH, OW, KH, KW, C)[...] = windows
    return cols


def window_sum_by_shifts(values, depth_radius, weight):
    """weight * (the sum over each channel's window), as 2r + 1 shifted slice-adds over the channels."""
    total = values.copy()
    for shift in range(1, depth_radius + 1):
        total[..., shift:] += values[..., :-shift]
        total[..., :-shift] += values[..., shift:]
    total *= weight
    return total


def max_over_all_taps(x, pool_size, strides, out_size):
    """y = max over the PH*PW strided views of x at once (the window's taps, not separated)."""
    xp = backend.get_array_module(x)
    (ph, pw), (sh, sw), (oh, ow) = pool_size, strides, out_size
    views = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :] for i in range(ph) for j in range(pw)]
    out = xp.maximum(views[0], views[1])
    for view in views[2:]:
        xp.maximum(out, view, out=out)
    return out


def route_over_all_taps(dout, x, y, pool_size, strides):
    """The backward of ``max_over_all_taps``, with the fast layer's tie rule: the taps are tried
    column by column, top to bottom within a column, and the first that holds the maximum takes
    what is left of the gradient."""
    xp = backend.get_array_module(dout)
    (ph, pw), (sh, sw), (oh, ow) = pool_size, strides, dout.shape[1:3]
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    remaining = dout
    for j in range(pw):
        for i in range(ph):
            view = (slice(None), slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
            share = remaining * (x[view] == y)
            dx[view] += share
            remaining = remaining - share
    return dx


def trick_comparisons(net):
    convs, pools, lrns = net.layers(Conv2D), net.layers(MaxPool2D), net.layers(LocalResponseNorm)
    geometry = {}
    for layer in convs:
        xpad, pads = padded(layer, net.inputs[layer.name])
        kernel = layer.params["kernel"]
        geometry[layer.name] = dict(
            xpad=xpad, pads=pads, out=layer.output_shape[:2], kernel=kernel,
            matrix=kernel.reshape(-1, layer.filters), dz=net.grads[layer.name].reshape(-1, layer.filters),
            cols=im2col(xpad, NO_PADS, layer.kernel_size, layer.strides, layer.output_shape[:2]))

    with_dx = [c for c in convs if net.needs_input_grad(c)]

    def by_taps():
        return [col2im_by_taps(geometry[c.name]["dz"], geometry[c.name]["kernel"], net.inputs[c.name].shape,
                               geometry[c.name]["pads"], c.strides, geometry[c.name]["out"]) for c in with_dx]

    def via_dcols():
        out = []
        for c in with_dx:
            s = geometry[c.name]
            dxpad = col2im(s["dz"] @ s["matrix"].T, s["xpad"].shape, c.kernel_size, c.strides, s["out"])
            (top, _), (left, _) = s["pads"]
            _, h, w, _ = net.inputs[c.name].shape
            out.append(dxpad[:, top:top + h, left:left + w, :])
        return out

    first = convs[0]
    s0 = geometry[first.name]
    squares = {n.name: net.inputs[n.name] * net.inputs[n.name] for n in lrns}
    dens = {n.name: window_sum_by_shifts(squares[n.name], n.depth_radius, n.alpha) + n.bias for n in lrns}

    def separable(p):
        x = net.inputs[p.name]
        (ph, pw), (sh, sw), (oh, ow) = p.pool_size, p.strides, p.output_shape[:2]
        return max_over_taps(max_over_taps(x, axis=1, size=ph, stride=sh, length=oh), axis=2, size=pw, stride=sw,
                             length=ow)

    disjoint = [p for p in pools if p.padding == "valid" and all(s >= k for s, k in zip(p.strides, p.pool_size))]
    passes = {p.name: max_pool(net.inputs[p.name], p.pool_size, p.strides, NO_PADS, p.output_shape[:2])
              for p in disjoint}

    def two_passes(route, p):
        """dx of pool p through ``route``: across the columns' maxima, then down each column."""
        x, (y, column_max) = net.inputs[p.name], passes[p.name]
        (ph, pw), (sh, sw), (oh, ow) = p.pool_size, p.strides, p.output_shape[:2]
        dcolumn_max = route(net.grads[p.name], column_max, y, axis=2, size=pw, stride=sw, length=ow)
        return route(dcolumn_max, x, column_max, axis=1, size=ph, stride=sh, length=oh)

    out = [
        Comparison(f"first conv's im2col (C = {first.input_shape[-1]}): the C == 1 branch vs the general one",
                   "conv2d", lambda: im2col(s0["xpad"], NO_PADS, first.kernel_size, first.strides, s0["out"]),
                   lambda: general_im2col(s0["xpad"], first.kernel_size, first.strides, s0["out"])),
        Comparison("conv dx: col2im by taps vs dcols = dz @ K^T, then col2im", f"{len(with_dx)} conv",
                   by_taps, via_dcols),
        Comparison("LRN window sum: band-matrix product vs a loop over the window", f"{len(lrns)} LRN",
                   lambda: [window_sum(squares[n.name], n.depth_radius, n.alpha) for n in lrns],
                   lambda: [window_sum_by_shifts(squares[n.name], n.depth_radius, n.alpha) for n in lrns]),
        Comparison("LRN den^beta (beta 0.75): power() by square roots vs den ** beta", f"{len(lrns)} LRN",
                   lambda: [power(dens[n.name], n.beta) for n in lrns],
                   lambda: [dens[n.name] ** n.beta for n in lrns]),
        Comparison("max-pool forward: separable taps (PH + PW views) vs all PH*PW taps at once",
                   f"{len(pools)} pool", lambda: [separable(p) for p in pools],
                   lambda: [max_over_all_taps(net.inputs[p.name], p.pool_size, p.strides, p.output_shape[:2])
                            for p in pools]),
        Comparison("max-pool backward: separable routing (two passes) vs routing over all PH*PW taps",
                   f"{len(pools)} pool", lambda: [p.backward(net.grads[p.name]) for p in pools],
                   lambda: [route_over_all_taps(net.grads[p.name], net.inputs[p.name], separable(p), p.pool_size,
                                                p.strides) for p in pools]),
        Comparison("max-pool routing, disjoint windows: in place (parked in the next tap) vs from zeros, adding",
                   f"{len(disjoint)} pool", lambda: [two_passes(route_in_place, p) for p in disjoint],
                   lambda: [two_passes(route_by_adding, p) for p in disjoint]),
    ]
    return out


def check_agree(comparison, tolerance=1e-4):
    """The fast and the plain way give the same arrays, up to float32 rounding: each pair's largest
    difference is at most ``tolerance`` times its largest entry (sums of many terms cancel, so a
    per-entry relative test would fail near zero). Raises AssertionError naming the comparison."""
    fast, plain = comparison.fast(), comparison.plain()
    fast = fast if isinstance(fast, (list, tuple)) else [fast]
    plain = plain if isinstance(plain, (list, tuple)) else [plain]
    assert len(fast) == len(plain), comparison.name
    for a, b in zip(fast, plain):
        a, b = backend.to_numpy(a).astype(numpy.float64), backend.to_numpy(b).astype(numpy.float64)
        assert a.shape == b.shape, f"{comparison.name}: shapes {a.shape} and {b.shape}"
        difference, scale = numpy.abs(a - b).max(), numpy.abs(b).max()
        assert difference <= tolerance * scale, f"{comparison.name}: differ by {difference:.3g} (largest {scale:.3g})"


def comparisons(net, twins=True, check=True):
    """The twin comparisons (unless ``twins`` is false), then the tricks, each checked (``check``)."""
    tricks = trick_comparisons(net)
    for comparison in tricks if check else []:
        check_agree(comparison)
    return (twin_comparisons(net) if twins else []) + tricks


# ---- pytest-benchmark ----------------------------------------------------------------------------

NAMES = [c.name for c in comparisons(Network(batch=2), check=False)]


@pytest.fixture(scope="module")
def network(bench_backend):
    return Network()


@pytest.mark.parametrize("side", ["fast", "plain"])
@pytest.mark.parametrize("name", NAMES)
def test_trick(benchmark, bench_backend, network, name, side):
    comparison = {c.name: c for c in comparisons(network, twins=bench_backend == "numpy", check=side == "fast")}.get(name)
    if comparison is None:
        pytest.skip("the twins are loops of tiny steps: on a GPU each would be a kernel launch")
    function = getattr(comparison, side)
    slow = side == "plain" and comparison.twin

    def call():
        function()
        backend.synchronize()
    benchmark.group = name
    benchmark.extra_info.update(layers=comparison.layers, scale_to_batch=comparison.plain_scale if side == "plain"
                                else 1.0)
    benchmark.pedantic(call, rounds=3 if slow else 15, iterations=1, warmup_rounds=1 if slow else 3)


# ---- the script: one table -----------------------------------------------------------------------

def measure(comparison, rounds, block):
    """(fast, plain, plain / fast) for a batch of 64: median seconds, and the median over rounds of
    the ratio of the two blocks' medians (robust to a load that changes during the run). A and B
    alternate in blocks of calls; a twin, hundreds of times slower, is timed in 3 single calls
    after the fast way's own blocks."""
    if comparison.twin:
        fast = common.alternate({"fast": comparison.fast}, rounds=rounds, block=block)["fast"]
        plain = common.alternate({"plain": comparison.plain}, rounds=3, block=1, warmup=1)["plain"]
        fast, plain = statistics.median(fast), statistics.median(plain) * comparison.plain_scale
        return fast, plain, plain / fast
    times = common.alternate({"fast": comparison.fast, "plain": comparison.plain}, rounds=rounds, block=block)
    ratio = common.blockwise_ratios(times["plain"], times["fast"], block)
    return statistics.median(times["fast"]), statistics.median(times["plain"]), ratio


def fmt_ms(seconds):
    ms = 1000.0 * seconds
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1, as in one shard)")
    parser.add_argument("--rounds", type=int, default=15, help="blocks of calls per side (a twin: 3 single calls)")
    parser.add_argument("--block", type=int, default=5, help="calls per block")
    parser.add_argument("--no-twins", action="store_true", help="skip the slow twin comparisons")
    args = parser.parse_args(argv)
    threads = common.set_threads(args.threads)
    load_before = common.machine_load()
    net = Network()
    rows = [(c, *measure(c, args.rounds, args.block)) for c in comparisons(net, twins=not args.no_twins)]
    print(f"{datetime.date.today().isoformat()}, {backend.cpu_model()} ({os.cpu_count()} cores, "
          f"{platform.machine()}), numpy {numpy.__version__}, {threads} BLAS thread(s), batch {common.BATCH}; "
          f"load average {load_before:.2f} before, {common.machine_load():.2f} after")
    print(f"medians of {args.rounds} blocks of {args.block} calls, the plain way's alternating with the fast "
          f"way's; plain / fast: the median of the blocks' ratios. A twin: {TWIN_IMAGES} image(s) timed in 3 "
          f"single calls, scaled to {common.BATCH}\n")
    print("| comparison | layers | fast | plain | plain / fast |")
    print("| --- | --- | ---: | ---: | ---: |")
    for comparison, fast, plain, ratio in rows:
        print(f"| {comparison.name} | {comparison.layers} | {fmt_ms(fast)} | {fmt_ms(plain)} | {ratio:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
