"""minialex against its peers, Keras and PyTorch, side by side in ONE process, alternating, at the
tutorial's shapes, on the same real MNIST batch.

    python benchmarks/compare.py [--backend numpy|cupy] [--threads N] [--rounds 20]

Prints, per layer (forward, and forward + backward) against PyTorch, and for the whole training step
against both peers: minialex's median milliseconds, the peer's, their ratio (minialex / peer, the
median of round-by-round ratios; below 1 minialex is faster), and minialex's achieved GFLOP/s as a
share of the backend's own float32 matrix-multiply rate measured in the same run. The training step
of the tutorial's BatchNorm network (``alexnet_mnist(norm='batchnorm')``) runs in the same turns, with
its ratio to the LRN network's. Then inference throughput on the 10,000 MNIST test images, each
library's pass over them in turns (``--inference-rounds``; the ratio is the median of the rounds'),
and one epoch's projected time.

Keras is the notebook's own framework, its model built line for line (``keras_reference.py``:
TensorFlow on the CPU, LRN as a Lambda of ``tf.nn.local_response_normalization``, Adam, categorical
cross-entropy); PyTorch is ``torch_reference.py``. Both come from the ``bench`` extra
(``pip install -e '.[bench]'``); a peer that is not installed leaves its columns empty. Each peer
gets the threads minialex's BLAS uses (``--threads``), TensorFlow one op at a time.

On a GPU (``--backend cupy``; PyTorch on the same card with TF32 off, so both compute in float32)
each row also splits a call into host time and device time (``cupyx.profiler.benchmark``: the host's
seconds inside the call, and the card's from the call's first launch to its last kernel's end), and
the training step gets a third figure: its device time with every launch queued up front, behind a
kernel that holds the stream until the host has launched the whole step, so that the card never
waits for the host. Host time above that queued device time means the host (launching kernels)
bounds the step; below it, the card does. Every row is also printed as a ``LAYER key=value`` line,
and the run ends with ``RESULT key=value ...`` (benchmarks/gpu_check.py reads both).

minialex's step is timed twice: eagerly (``train_step`` and ``apply_gradients``) and as ``fit`` runs it
(``common.fit_steps``: on a GPU each step replayed as a CUDA graph, ``minialex.graphs``). On a GPU the
peers are PyTorch eager, PyTorch with the whole step captured as a CUDA graph (``torch.cuda.graph``,
Adam with ``capturable=True``), ``torch.compile(mode='reduce-overhead')`` (its compile time printed
apart) and Keras 3 on JAX (``KERAS_BACKEND=jax``, where Keras and JAX are installed); the ratio of
``fit``'s step to each, and to the fastest, ends the table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy  # noqa: E402

import common  # noqa: E402
from minialex import backend  # noqa: E402

STEPS_PER_EPOCH = 750   # 48,000 training images after validation_split=0.2, batch 64
INFERENCE_BATCH = 128


def load_test_images(data_dir):
    """The 10,000 MNIST test images, preprocessed; random ones of the same shape if MNIST is absent."""
    from minialex.data import load_mnist, preprocess_images

    try:
        (_, _), (x_test, _) = load_mnist(data_dir, progress=False, mirrors=[])
        return preprocess_images(x_test), "MNIST test set"
    except Exception as exc:  # no files and no download: still measure, on stand-in images
        print(f"(MNIST not found: {exc}; timing inference on random images)")
        rng = numpy.random.default_rng(0)
        return rng.random((10000, 32, 32, 1), dtype=numpy.float32), "random images"


def torch_reference(args, threads, x, y):
    if args.no_torch:
        return None, None
    try:
        import torch

        from torch_reference import Reference
    except ImportError:
        print("(torch is not installed: PyTorch columns stay empty; pip install 'minialex[bench]' to fill them)")
        return None, None
    device = "cuda" if backend.get_backend() == "cupy" else "cpu"
    if device == "cpu":
        torch.set_num_threads(threads or torch.get_num_threads())
    return Reference(device=device, x=x, y=y), torch


def keras_reference(args, threads, x, y):
    """(the notebook's model in Keras on this batch, its version), or (None, why not). On a GPU Keras 3
    runs on JAX (set before Keras is first imported; JAX told not to take most of the card's memory)."""
    if args.no_keras:
        return None, "Keras left out (--no-keras)"
    on_gpu = backend.get_backend() == "cupy"
    if on_gpu:
        os.environ.setdefault("KERAS_BACKEND", "jax")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import keras_reference
    except ImportError as exc:
        needs = ("Keras 3 and JAX (carry keras, namex and optree as wheels)" if on_gpu
                 else "pip install 'minialex[bench]'")
        return None, f"Keras is not installed ({exc}): {needs} to fill its column"
    if on_gpu and keras_reference.BACKEND != "jax":
        return None, f"Keras runs on {keras_reference.BACKEND} in this process, not JAX: no Keras column on a GPU"
    try:
        version = keras_reference.set_threads(None if on_gpu else threads)
        return keras_reference.Reference(x, y), version
    except Exception as exc:  # noqa: BLE001 - a peer lost, not the run
        return None, f"Keras failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def torch_peers(reference, compile_step=True):
    """{name: a synchronised training step} of PyTorch captured as a CUDA graph and (``compile_step``)
    compiled with ``mode='reduce-overhead'`` (on a GPU; each left out, saying why in one line, where it
    fails), and the compile's seconds (nan if none)."""
    peers, compile_s = {}, float("nan")
    if reference is None or reference.device.type != "cuda":
        return peers, compile_s
    import torch_reference

    try:
        peers["PyTorch graphed"] = _synchronised(torch_reference.graphed_step(reference), reference)
    except Exception as exc:  # noqa: BLE001
        print(f"(PyTorch's CUDA graph failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
    if not compile_step:
        return peers, compile_s
    try:
        step, compile_s = torch_reference.compiled_step(reference)
        peers["PyTorch compiled"] = _synchronised(step, reference)
        print(f"torch.compile(mode='reduce-overhead'): {compile_s:.1f} s to compile (the first 3 steps)")
    except Exception as exc:  # noqa: BLE001
        print(f"(torch.compile failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
    return peers, compile_s


def row(label, ours, theirs, flops, gemm, split=None):
    """Print one table row; ``split`` is host_and_device()'s {name: (host ms, device ms)}."""
    mine = common.median_ms(ours)
    text = f"{label:<34} {mine:>11.2f}"
    if theirs:
        ratio = common.blockwise_ratios(ours, theirs)
        text += f" {common.median_ms(theirs):>11.2f} {ratio:>7.2f}"
    else:
        text += f" {'':>11} {'':>7}"
    if flops:
        rate = flops / (mine / 1000) / 1e9
        text += f" {rate:>9.1f} {100 * rate / gemm:>8.0f}%"
    else:
        text += f" {'':>9} {'':>9}"
    for name in ("ours", "theirs"):
        if split and name in split:
            text += f" {split[name][0]:>7.3f}/{split[name][1]:<7.3f}"
    print(text, flush=True)
    return mine


def layer_line(name, kind, ours, theirs, split):
    """The row as ``LAYER key=value ...`` (milliseconds), for gpu_check's summary."""
    values = {"name": name, "kind": kind, "ms": f"{common.median_ms(ours):.4f}"}
    if theirs:
        values["torch_ms"] = f"{common.median_ms(theirs):.4f}"
    for name_, prefix in (("ours", ""), ("theirs", "torch_")):
        if split and name_ in split:
            values[prefix + "host_ms"], values[prefix + "device_ms"] = (f"{v:.4f}" for v in split[name_])
    return "LAYER " + " ".join(f"{key}={value}" for key, value in values.items())


def host_and_device(functions, rounds, block=5):
    """{name: (median host ms, median device ms) per call}, CuPy only, the functions in turns; None
    (and a line saying why) if the timing itself fails, so that the rest of the run still reports.

    ``cupyx.profiler.benchmark`` times each call twice: on the host (the seconds inside the call,
    which on a GPU is launching kernels) and on the device (CUDA events recorded on the current
    stream around the call: from before its first launch to its last kernel's end, gaps included).
    PyTorch and CuPy both use the legacy default stream here, so the events time either library.
    The functions must not synchronise the device themselves.
    """
    try:
        return _host_and_device(functions, rounds, block)
    except Exception as exc:  # noqa: BLE001 - a figure lost, not the run
        print(f"(host/device timing failed: {type(exc).__name__}: {exc})", flush=True)
        return None


def _host_and_device(functions, rounds, block):
    from cupyx.profiler import benchmark

    times = {name: ([], []) for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            timing = benchmark(function, n_repeat=block, n_warmup=1)
            times[name][0].extend(timing.cpu_times)
            times[name][1].extend(timing.gpu_times[0])
    return {name: (common.median_ms(host), common.median_ms(device)) for name, (host, device) in times.items()}


SPIN = r"""
extern "C" __global__ void spin(unsigned long long nanoseconds) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < nanoseconds);
}
"""


def queued_device_ms(function, host_ms, repeat=15):
    """(median device ms of one call with all its launches queued before the first runs, calls that
    stayed queued): a one-thread kernel spins for 3x the call's host time (+2 ms), the host launches
    the whole call behind it, and events around the call then time the card's work without the gaps
    in which it would wait for launches. A call that synchronises (waits for the card) cannot stay
    queued; such calls are left out, and none left means the call synchronises. (nan, -1) if the
    measurement itself fails."""
    try:
        return _queued_device_ms(function, host_ms, repeat)
    except Exception as exc:  # noqa: BLE001 - a figure lost, not the run
        print(f"(queued device timing failed: {type(exc).__name__}: {exc})", flush=True)
        return float("nan"), -1


def _queued_device_ms(function, host_ms, repeat):
    cupy = backend.xp()
    spin = cupy.RawKernel(SPIN, "spin")
    hold = numpy.uint64(int((3 * host_ms + 2) * 1e6))
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        spin((1,), (1,), (hold,))
        start.record()
        function()
        end.record()
        queued = not start.done       # the spin still holds the stream: every launch of the call is queued
        end.synchronize()
        if queued:
            times.append(cupy.cuda.get_elapsed_time(start, end) / 1000)
    return (common.median_ms(times) if times else float("nan")), len(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--threads", type=int, default=None, help="BLAS / PyTorch threads (default: BLAS's own)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per row (after warm-up)")
    parser.add_argument("--step-rounds", type=int, default=None,
                        help="timed rounds for the whole training step (default: --rounds, at least 10)")
    parser.add_argument("--data-dir", default=os.environ.get("MINIALEX_DATA_DIR",
                                                             Path(__file__).resolve().parents[2] / "shared" / "mnist"))
    parser.add_argument("--images", type=int, default=None, help="time inference on the first N test images only")
    parser.add_argument("--inference-rounds", type=int, default=3, help="passes over the test images per library")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes a while)")
    parser.add_argument("--skip-layers", action="store_true", help="only the whole step and inference")
    args = parser.parse_args(argv)

    backend.set_backend(args.backend)
    threads = common.set_threads(args.threads)
    (host_x, host_y), source = common.mnist_training_images(common.BATCH, args.data_dir)
    keras_model, keras_version = keras_reference(args, threads, host_x, host_y)
    reference, torch = torch_reference(args, threads, host_x, host_y)
    gemm = common.gemm_rate()
    model = common.tutorial_model()
    batchnorm_model = common.tutorial_model(norm="batchnorm")
    x, y = backend.to_device(host_x), backend.to_device(host_y)
    on_gpu = backend.get_backend() == "cupy"
    version = f"PyTorch {torch.__version__}" if torch else "no PyTorch"
    if torch and on_gpu:
        version += f" (TF32 {'on' if reference.tf32 else 'off'})"
    print(f"minialex vs {version} and {keras_version if keras_model else 'no Keras'} on "
          f"{backend.describe_device()}; batch {common.BATCH} of {source}; BLAS threads {threads}; "
          f"load {common.machine_load():.2f}")
    if keras_model is None:
        print(f"({keras_version})")
    print(f"{backend.get_backend()} float32 GEMM rate ({'x'.join(map(str, common.GEMM_SHAPE))}): {gemm:.1f} GFLOP/s")
    header = f"{'what':<34} {'minialex ms':>11} {'PyTorch ms':>11} {'ratio':>7} {'GFLOP/s':>9} {'of GEMM':>9}"
    if on_gpu:
        theirs_split = "PyTorch's"
        header += f" {'host/device ms':>15}" + (f" {theirs_split:>15}" if reference is not None else "")
    print(header)
    print("-" * len(header))
    lines = []

    if not args.skip_layers:
        for index, (layer, layer_x) in enumerate(common.layer_inputs(model, x)):
            out = layer.forward(layer_x, training=True)
            dout = backend.xp().ones_like(out)
            ours = {"forward": lambda: layer.forward(layer_x, training=True),   # no dx for the first layer:
                    "fwd+bwd": lambda: (layer.forward(layer_x, training=True),   # as in training
                                        layer.backward(dout, input_grad=index > 0))}
            theirs = {}
            if reference is not None:
                shape = dict((n, s) for n, _, s in reference.named_blocks)[layer.name]
                theirs = dict(zip(("forward", "fwd+bwd"), reference.layer_functions(layer.name, shape, common.BATCH)))
            for kind, function in ours.items():
                functions = {"ours": function}
                if theirs:
                    functions["theirs"] = _synchronised(theirs[kind], reference)
                times = common.alternate(functions, args.rounds)
                split = None
                if on_gpu:
                    split = host_and_device({"ours": function, **({"theirs": theirs[kind]} if theirs else {})},
                                            max(1, args.rounds // 2))
                flops = common.layer_flops(layer, common.BATCH, backward=kind == "fwd+bwd", input_grad=index > 0)
                row(f"{layer.name} {kind}", times["ours"], times.get("theirs"), flops, gemm, split)
                lines.append(layer_line(layer.name, kind, times["ours"], times.get("theirs"), split))

    def step():     # train_step and apply_gradients, eagerly: no read-back of the loss, nothing waits for the card
        model.train_step(x, y)
        model.apply_gradients()

    def batchnorm_step():
        batchnorm_model.train_step(x, y)
        batchnorm_model.apply_gradients()

    _, fit_step = common.fit_steps(model, x, y)       # as fit runs it: on a GPU, the graph replayed
    gemm_call, gemm_flops = common.gemm_function()
    functions = {"ours": step, "fit": fit_step, "batchnorm": batchnorm_step, "gemm": gemm_call}
    peer_steps, compile_s = torch_peers(reference, not args.no_compile)
    if reference is not None:
        functions["theirs"] = _synchronised(reference.train_step, reference)
    functions.update(peer_steps)
    if keras_model is not None:
        functions["Keras"] = keras_model.train_step
    times = common.alternate(functions, args.step_rounds or max(args.rounds, 10))
    split = None
    if on_gpu:
        split = host_and_device({"ours": step, "fit": fit_step,
                                 **({"theirs": reference.train_step} if reference else {})},
                                args.step_rounds or max(args.rounds, 10))
    print("-" * len(header))
    step_ms = row("training step (fwd, loss, bwd, Adam)", times["ours"], times.get("theirs"),
                  common.step_flops(model), gemm, split)
    fit_split = split and {"ours": split["fit"], **({"theirs": split["theirs"]} if "theirs" in split else {})}
    fit_ms = row("training step as fit runs it", times["fit"], times.get("theirs"), common.step_flops(model), gemm,
                 fit_split)
    lines.append(layer_line("step", "fwd+bwd+adam", times["ours"], times.get("theirs"), split))
    lines.append(layer_line("fit_step", "fwd+bwd+adam", times["fit"], times.get("theirs"), fit_split))
    share = common.step_flops(model) / gemm_flops / common.blockwise_ratios(times["fit"], times["gemm"])
    print(f"{'':<34} step rate / GEMM rate, round by round (median): {100 * share:.0f}% "
          f"(GEMM {gemm_flops / statistics.median(times['gemm']) / 1e9:.1f} GFLOP/s in these rounds)")

    result = {"step_ms": step_ms, "fit_step_ms": fit_ms, "gemm_share": share,
              "epoch_s": STEPS_PER_EPOCH * fit_ms / 1000, "batchnorm_step_ms": common.median_ms(times["batchnorm"]),
              "batchnorm_ratio": common.blockwise_ratios(times["batchnorm"], times["ours"])}
    print(f"{'training step, BatchNorm network':<34} {result['batchnorm_step_ms']:>11.2f} "
          f"(/ the LRN network's, round by round: {result['batchnorm_ratio']:.2f})")
    peers = {}
    if reference is not None:
        result["torch_step_ms"] = common.median_ms(times["theirs"])
        result["ratio"] = common.blockwise_ratios(times["ours"], times["theirs"])
        result["fit_ratio"] = peers["PyTorch"] = common.blockwise_ratios(times["fit"], times["theirs"])
    keys = {"PyTorch graphed": "torch_graphed", "PyTorch compiled": "torch_compiled", "Keras": "keras"}
    for name in [name for name in keys if name in functions]:
        result[f"{keys[name]}_step_ms"] = common.median_ms(times[name])
        result[f"{keys[name]}_ratio"] = peers[name] = common.blockwise_ratios(times["fit"], times[name])
        print(f"{'training step, ' + name:<34} {'':>11} {result[keys[name] + '_step_ms']:>11.2f} "
              f"{result[keys[name] + '_ratio']:>7.2f}")
    if compile_s == compile_s:
        result["torch_compile_s"] = compile_s
    if peers:
        fastest = min(peers, key=lambda name: common.median_ms(times["theirs" if name == "PyTorch" else name]))
        result["best_peer_ratio"] = peers[fastest]
        result["fastest_peer"] = fastest.replace(" ", "_")
        print(f"training step as fit runs it, minialex / the fastest peer ({fastest}): {peers[fastest]:.2f}; "
              + "; ".join(f"/ {name}: {ratio:.2f}" for name, ratio in peers.items()))
    if split:
        result["step_host_ms"], result["step_device_ms"] = split["ours"]
        result["step_queued_ms"], result["step_queued_calls"] = queued_device_ms(step, split["ours"][0])
        result["fit_step_host_ms"], result["fit_step_device_ms"] = split["fit"]
        result["fit_step_queued_ms"], _ = queued_device_ms(fit_step, split["fit"][0])
        text = (f"training step, host / device / device queued ms: minialex {split['ours'][0]:.3f} / "
                f"{split['ours'][1]:.3f} / {result['step_queued_ms']:.3f} ({result['step_queued_calls']} of 15 "
                f"calls stayed queued), as fit runs it {split['fit'][0]:.3f} / {split['fit'][1]:.3f} / "
                f"{result['fit_step_queued_ms']:.3f}")
        if reference is not None:
            result["torch_step_host_ms"], result["torch_step_device_ms"] = split["theirs"]
            result["torch_step_queued_ms"], result["torch_step_queued_calls"] = queued_device_ms(
                reference.train_step, split["theirs"][0])
            text += (f"; PyTorch {split['theirs'][0]:.3f} / {split['theirs'][1]:.3f} / "
                     f"{result['torch_step_queued_ms']:.3f} ({result['torch_step_queued_calls']} of 15)")
        print(text)

    images, source = load_test_images(args.data_dir)
    images = images[:args.images]
    passes = {"minialex": lambda: model.predict(images, batch_size=INFERENCE_BATCH)}
    if reference is not None:
        tensor = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(reference.device)

        def torch_pass():
            for i in range(0, len(tensor), INFERENCE_BATCH):
                reference.predict(tensor[i:i + INFERENCE_BATCH])
            reference.synchronize()
        passes["PyTorch"] = torch_pass
    if keras_model is not None:
        passes["Keras"] = lambda: keras_model.predict(images, INFERENCE_BATCH)
    seconds = common.alternate(passes, args.inference_rounds, block=1, warmup=1)
    keys = {"minialex": "images_per_s", "PyTorch": "torch_images_per_s", "Keras": "keras_images_per_s"}
    text = []
    for name, times in seconds.items():
        result[keys[name]] = len(images) / statistics.median(times)
        text.append(f"{name} {result[keys[name]]:,.0f} images/s")
    if "Keras" in seconds:
        result["keras_inference_ratio"] = common.blockwise_ratios(seconds["Keras"], seconds["minialex"], block=1)
        text.append(f"minialex / Keras images/s, round by round: {result['keras_inference_ratio']:.2f}")
    print(f"inference, {len(images):,} {source} (batch {INFERENCE_BATCH}, {args.inference_rounds} passes each, "
          f"in turns): " + ", ".join(text))
    print(f"one epoch ({STEPS_PER_EPOCH} steps of {common.BATCH}) projected: {result['epoch_s']:.1f} s")
    print(f"load after the run: {common.machine_load():.2f}")
    print("\n".join(lines))
    print("RESULT " + " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                               for key, value in result.items()))


def _synchronised(function, reference):
    def run():
        function()
        reference.synchronize()
    return run


if __name__ == "__main__":
    main()
