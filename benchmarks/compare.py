"""minialex against PyTorch, side by side in ONE process, alternating, at the tutorial's shapes.

    python benchmarks/compare.py [--backend numpy|cupy] [--threads N] [--rounds 20]

Prints, per layer (forward, and forward + backward) and for the whole training step: minialex's
median milliseconds, PyTorch's, their ratio, and minialex's achieved GFLOP/s as a share of NumPy's
own float32 matrix-multiply rate measured in the same run. Then inference throughput on the
10,000 MNIST test images and one epoch's projected time. Without torch, the PyTorch columns are empty.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
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


def torch_reference(args):
    if args.no_torch:
        return None, None
    try:
        import torch

        from torch_reference import Reference
    except ImportError:
        print("(torch is not installed: PyTorch columns stay empty; pip install torch to fill them)")
        return None, None
    device = "cuda" if backend.get_backend() == "cupy" else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or torch.get_num_threads())
    return Reference(device=device), torch


def row(label, ours, theirs, flops, gemm):
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
    print(text, flush=True)
    return mine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--threads", type=int, default=None, help="BLAS / PyTorch threads (default: BLAS's own)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per row (after warm-up)")
    parser.add_argument("--data-dir", default=os.environ.get("MINIALEX_DATA_DIR",
                                                             Path(__file__).resolve().parents[2] / "shared" / "mnist"))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--skip-layers", action="store_true", help="only the whole step and inference")
    args = parser.parse_args(argv)

    backend.set_backend(args.backend)
    threads = common.set_threads(args.threads)
    reference, torch = torch_reference(args)
    gemm = common.gemm_rate()
    model = common.tutorial_model()
    x, y = common.tutorial_batch()
    version = f"PyTorch {torch.__version__}" if torch else "no PyTorch"
    print(f"minialex vs {version} on {backend.describe_device()}; batch {common.BATCH}; "
          f"BLAS threads {threads}; load {common.machine_load():.2f}")
    print(f"NumPy float32 GEMM rate ({'x'.join(map(str, common.GEMM_SHAPE))}): {gemm:.1f} GFLOP/s")
    header = f"{'what':<34} {'minialex ms':>11} {'PyTorch ms':>11} {'ratio':>7} {'GFLOP/s':>9} {'of GEMM':>9}"
    print(header)
    print("-" * len(header))

    if not args.skip_layers:
        for index, (layer, layer_x) in enumerate(common.layer_inputs(model, x)):
            layer.needs_input_grad = index > 0
            out = layer.forward(layer_x, training=True)
            dout = backend.xp().ones_like(out)
            ours = {"forward": lambda: layer.forward(layer_x, training=True),
                    "fwd+bwd": lambda: (layer.forward(layer_x, training=True), layer.backward(dout))}
            theirs = {}
            if reference is not None:
                shape = dict((n, s) for n, _, s in reference.named_blocks)[layer.name]
                theirs = dict(zip(("forward", "fwd+bwd"), reference.layer_functions(layer.name, shape, common.BATCH)))
            for kind, function in ours.items():
                functions = {"ours": function}
                if theirs:
                    functions["theirs"] = _synchronised(theirs[kind], reference)
                times = common.alternate(functions, args.rounds)
                flops = common.layer_flops(layer, common.BATCH, backward=kind == "fwd+bwd", input_grad=index > 0)
                row(f"{layer.name} {kind}", times["ours"], times.get("theirs"), flops, gemm)
        model.layers[0].needs_input_grad = True

    gemm_call, gemm_flops = common.gemm_function()
    functions = {"ours": lambda: model.train_on_batch(x, y), "gemm": gemm_call}
    if reference is not None:
        functions["theirs"] = _synchronised(reference.train_step, reference)
    times = common.alternate(functions, max(args.rounds, 10))
    print("-" * len(header))
    step_ms = row("training step (fwd, loss, bwd, Adam)", times["ours"], times.get("theirs"),
                  common.step_flops(model), gemm)
    share = common.step_flops(model) / gemm_flops / common.blockwise_ratios(times["ours"], times["gemm"])
    print(f"{'':<34} step rate / GEMM rate, round by round (median): {100 * share:.0f}% "
          f"(GEMM {gemm_flops / statistics.median(times['gemm']) / 1e9:.1f} GFLOP/s in these rounds)")

    result = {"step_ms": step_ms, "gemm_share": share, "epoch_s": STEPS_PER_EPOCH * step_ms / 1000}
    if reference is not None:
        result["torch_step_ms"] = common.median_ms(times["theirs"])
        result["ratio"] = common.blockwise_ratios(times["ours"], times["theirs"])

    images, source = load_test_images(args.data_dir)
    start = time.perf_counter()
    model.predict(images, batch_size=INFERENCE_BATCH)
    result["images_per_s"] = len(images) / (time.perf_counter() - start)
    text = (f"inference, {len(images):,} {source} (batch {INFERENCE_BATCH}): "
            f"minialex {result['images_per_s']:,.0f} images/s")
    if reference is not None:
        tensor = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(reference.device)
        start = time.perf_counter()
        for i in range(0, len(tensor), INFERENCE_BATCH):
            reference.predict(tensor[i:i + INFERENCE_BATCH])
        reference.synchronize()
        result["torch_images_per_s"] = len(images) / (time.perf_counter() - start)
        text += f", PyTorch {result['torch_images_per_s']:,.0f} images/s"
    print(text)
    print(f"one epoch ({STEPS_PER_EPOCH} steps of {common.BATCH}) projected: {result['epoch_s']:.1f} s")
    print(f"load after the run: {common.machine_load():.2f}")
    print("RESULT " + " ".join(f"{key}={value:.4g}" for key, value in result.items()))


def _synchronised(function, reference):
    def run():
        function()
        reference.synchronize()
    return run


if __name__ == "__main__":
    main()
