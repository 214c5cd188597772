"""The GPU check's own stages; ``benchmarks/gpu_check.py`` runs each in a process of its own:

    python benchmarks/gpu_stages.py device    --backend cupy
    python benchmarks/gpu_stages.py train     --backend cupy --data-dir D --out DIR [--quick]
    python benchmarks/gpu_stages.py transfer  --backend cupy --data-dir D --out DIR [--quick]
    python benchmarks/gpu_stages.py gradcheck-layers --backend numpy
    python benchmarks/gpu_stages.py graphs    --backend cupy --data-dir D --out DIR [--quick]
    python benchmarks/gpu_stages.py epochs    --backend cupy --data-dir D [--quick]

``device`` names the card and the versions; ``train`` is the tutorial's run (``minialex.train_mnist``,
as ``examples/train_mnist.py`` runs it) with the seconds of each epoch and the peak memory, and keeps
the trained weights and their test-set predictions in DIR; ``transfer`` loads those weights on the
CPU and checks the predictions, then trains briefly on the CPU and checks that model on the GPU;
``gradcheck-layers`` is the dry run's short gradient check (every layer and the loss, not the
whole network); ``graphs`` is the CUDA graphs check (``graphs_check`` says what it reports), and
``epochs`` the tutorial's run it starts twice, with a cold kernel cache and a warm one. Each prints
``INFO label: text`` lines and ends with ``RESULT key=value ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy  # noqa: E402

import common  # noqa: E402
import compare  # noqa: E402
import gpu_check  # noqa: E402
from minialex import backend, random  # noqa: E402

WEIGHTS = "train_weights.npz"          # what the train stage leaves for the transfer stage
PREDICTIONS = "train_predictions.npy"
PROBABILITY_TOLERANCE = 1e-3           # float32 on two devices: sums in another order, not other maths
INFERENCE_BATCH = 128


def result_line(values):
    return "RESULT " + " ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
                                for key, value in values.items())


def peak_rss_mb():
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_memory():
    """{pool_mb: what CuPy's memory pool holds (it never gives blocks back during a run, so this is
    its high-water mark), device_used_mb: the card's memory in use (all processes, CUDA context included)}."""
    cupy = backend.xp()
    backend.synchronize()
    free, total = cupy.cuda.runtime.memGetInfo()
    return {"gpu_pool_peak_mb": cupy.get_default_memory_pool().total_bytes() / 2**20,
            "gpu_pool_used_mb": cupy.get_default_memory_pool().used_bytes() / 2**20,
            "gpu_device_used_mb": (total - free) / 2**20, "gpu_device_total_mb": total / 2**20}


# ---- device ----------------------------------------------------------------------------------

def device(args):
    backend.set_backend(args.backend)
    print(f"INFO device: {backend.describe_device()}")
    print(f"INFO python: {sys.version.split()[0]}, NumPy {numpy.__version__}, {os.cpu_count()} CPU cores "
          f"({backend.cpu_model()})")
    values = {}
    if backend.get_backend() == "cupy":
        cupy = backend.xp()
        runtime = cupy.cuda.runtime
        props = runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"INFO CuPy: {cupy.__version__}, CUDA runtime {runtime.runtimeGetVersion()}, driver "
              f"{runtime.driverGetVersion()}, compute capability {props['major']}.{props['minor']}, "
              f"{props['multiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.0f} GiB")
        print(f"INFO CuPy settings: CUPY_TF32={os.environ.get('CUPY_TF32', '0 (unset)')}, kernel cache "
              f"{os.environ.get('CUPY_CACHE_DIR', '~/.cupy/kernel_cache')}, "
              f"per-thread default stream {os.environ.get('CUPY_CUDA_PER_THREAD_DEFAULT_STREAM', '0 (unset)')}")
        values["gpu_memory_gb"] = props["totalGlobalMem"] / 2**30
    try:
        import torch
    except ImportError:
        print("INFO PyTorch: not installed (the step stage's PyTorch columns stay empty)")
    else:
        cuda = f"CUDA {torch.version.cuda}, GPU {'available' if torch.cuda.is_available() else 'NOT available'}"
        print(f"INFO PyTorch: {torch.__version__} ({cuda})")
    print(result_line(values))
    return 0


# ---- train -----------------------------------------------------------------------------------

def record_epoch_seconds():
    """Have the fit loop print each epoch's seconds as it ends (so a stage stopped midway keeps them),
    and on a GPU what the memory pools hold then: CuPy's default pool and the CUDA graphs' own."""
    from minialex import graphs, training

    seconds_seen = []
    progress = getattr(training, "Progress", None)
    if progress is None or not hasattr(progress, "close"):
        return seconds_seen
    original = progress.close

    def close(self, seconds, logs):
        seconds_seen.append(seconds)
        pools = ""
        if backend.get_backend() == "cupy":
            default = backend.xp().get_default_memory_pool().total_bytes()
            pools = f" pool_mb={default / 2**20:.1f} graph_pools_mb={graphs.pool_bytes() / 2**20:.1f}"
        print(f"EPOCH {len(seconds_seen)} seconds={seconds:.3f}{pools}", flush=True)
        return original(self, seconds, logs)

    progress.close = close
    return seconds_seen


def test_images(data_dir, count=None):
    """(preprocessed MNIST test images, labels, where they came from); random stand-ins without MNIST."""
    from minialex.data import load_mnist, preprocess_images

    try:
        (_, _), (x_test, y_test) = load_mnist(data_dir, progress=False, mirrors=[])
        x, y, source = preprocess_images(x_test), y_test, "MNIST test images"
    except Exception as exc:  # no files and no network: still check, on stand-ins
        print(f"(MNIST not found: {exc}; using random images)")
        rng = numpy.random.default_rng(0)
        x, y, source = rng.random((10000, 32, 32, 1), dtype=numpy.float32), None, "random images"
    if count is not None:
        x, y = x[:count], None if y is None else y[:count]
    return x, y, source


def train(args):
    from minialex import train_mnist

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["--backend", args.backend, "--seed", "0"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.quick:
        argv += ["--epochs", "1", "--limit", "2000"]
    epoch_seconds = record_epoch_seconds()
    run = train_mnist.run(train_mnist.build_parser().parse_args(argv))
    values = {"train_s": run["seconds"], "epochs": len(epoch_seconds) or (1 if args.quick else 5),
              "test_accuracy": run["test_accuracy"], "test_loss": run["test_loss"]}
    if epoch_seconds:
        values["epoch_s_min"], values["epoch_s_max"] = min(epoch_seconds), max(epoch_seconds)
    if backend.get_backend() == "cupy":
        try:
            values.update(gpu_memory())    # after the run's fit and evaluate, before anything else here
        except Exception as exc:  # noqa: BLE001 - a figure lost, not the weights the transfer stage needs
            print(f"(GPU memory figures failed: {type(exc).__name__}: {exc})")
    values["peak_rss_mb"] = peak_rss_mb()

    model = run["model"]
    x_test, _, source = test_images(args.data_dir)
    start = time.perf_counter()
    probabilities = model.predict(x_test, batch_size=INFERENCE_BATCH)
    values["predict_s"] = time.perf_counter() - start
    model.save_weights(out / WEIGHTS)
    numpy.save(out / PREDICTIONS, probabilities)
    print(f"kept the trained weights ({out / WEIGHTS}) and their predictions on {len(x_test):,} {source} "
          f"({out / PREDICTIONS})")
    print(result_line(values))
    return 0


# ---- transfer --------------------------------------------------------------------------------

def compare_predictions(label, reference, other, labels):
    """Print and return how far two sets of class probabilities are apart; True when they agree."""
    difference = float(numpy.abs(reference - other).max(initial=0.0))
    top = numpy.sort(reference, axis=1)
    margin = top[:, -1] - top[:, -2]
    differ = reference.argmax(axis=1) != other.argmax(axis=1)
    near_ties = int((differ & (margin <= 2 * difference)).sum())
    agree = difference <= PROBABILITY_TOLERANCE and int(differ.sum()) == near_ties
    text = (f"{label}: max |probability difference| {difference:.2e} (tolerance {PROBABILITY_TOLERANCE:g}), "
            f"{int(differ.sum())} of {len(reference):,} predicted classes differ ({near_ties} at near-ties)")
    if labels is not None:
        text += (f"; accuracy {float((reference.argmax(axis=1) == labels).mean()):.4f} vs "
                 f"{float((other.argmax(axis=1) == labels).mean()):.4f}")
    print(f"{text}: {'SAME' if agree else 'DIFFERENT'}", flush=True)
    return agree, difference, int(differ.sum())


def model_from(path):
    """The tutorial network on the active backend with the weights in ``path``, checked bit for bit."""
    from minialex.models import alexnet_mnist
    from minialex.serialization import load_npz

    model = alexnet_mnist()
    model.load_weights(path)
    arrays, _ = load_npz(path)
    for name, param in model.weight_items():
        if not numpy.array_equal(backend.to_numpy(param), numpy.asarray(arrays[name])):
            raise AssertionError(f"{name} changed on the way from {path} to {backend.get_backend()}")
    return model


def train_briefly(x, labels, steps, seed):
    """The tutorial network trained for ``steps`` batches of 64 on the active backend."""
    from minialex.data import to_categorical
    from minialex.models import alexnet_mnist

    random.set_seed(seed)
    model = alexnet_mnist()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    n = 64 * steps
    model.fit(x[:n], to_categorical(labels[:n], 10), epochs=1, batch_size=64, verbose=0)
    return model


def training_images(data_dir):
    from minialex.data import load_mnist, preprocess_images

    try:
        (x_train, y_train), _ = load_mnist(data_dir, progress=False, mirrors=[])
        return preprocess_images(x_train[:6400]), y_train[:6400]
    except Exception:  # noqa: BLE001 - stand-ins, as for the test images
        rng = numpy.random.default_rng(1)
        return rng.random((6400, 32, 32, 1), dtype=numpy.float32), rng.integers(0, 10, 6400)


def transfer(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count, steps = (500, 4) if args.quick else (None, 50)
    images, labels, source = test_images(args.data_dir, count)
    device_name = "GPU" if args.backend == "cupy" else args.backend
    values, agreed = {}, []
    x_train, y_train = training_images(args.data_dir)

    weights, predictions = out / WEIGHTS, out / PREDICTIONS
    if weights.exists() and predictions.exists():
        on_device = numpy.load(predictions)[:len(images)]
        print(f"{device_name} -> CPU: the train stage's weights and predictions on {len(images):,} {source}")
    else:
        print(f"(the train stage left no weights: training {steps} steps on {args.backend} here instead)")
        weights = out / "device_weights.npz"
        with backend.set_backend(args.backend):
            model = train_briefly(x_train, y_train, steps, seed=0)
            model.save_weights(weights)
            on_device = model.predict(images, batch_size=INFERENCE_BATCH)
    with backend.set_backend("numpy"):
        on_cpu = model_from(weights).predict(images, batch_size=INFERENCE_BATCH)
    same, values["to_cpu_max_diff"], values["to_cpu_differ"] = compare_predictions(
        f"{device_name} -> CPU", on_device, on_cpu, labels)
    agreed.append(same)

    cpu_weights = out / "cpu_weights.npz"
    with backend.set_backend("numpy"):
        model = train_briefly(x_train, y_train, steps, seed=1)
        model.save_weights(cpu_weights)
        on_cpu = model.predict(images, batch_size=INFERENCE_BATCH)
    print(f"CPU -> {device_name}: the tutorial network trained {steps} steps on the CPU (seed 1)")
    with backend.set_backend(args.backend):
        on_device = model_from(cpu_weights).predict(images, batch_size=INFERENCE_BATCH)
    same, values["to_device_max_diff"], values["to_device_differ"] = compare_predictions(
        f"CPU -> {device_name}", on_cpu, on_device, labels)
    agreed.append(same)
    values["same"] = int(all(agreed))
    print(result_line(values))
    return 0 if all(agreed) else 1


# ---- the dry run's gradient check ------------------------------------------------------------

def gradcheck_layers(args):
    """``python -m minialex.gradcheck``'s table up to its first model: the layers, the twins and the loss,
    not the whole network (seconds on the CPU, not a minute)."""
    from minialex import gradcheck

    backend.set_backend(args.backend)
    print(f"Gradient check (layers and loss only) in float64 on {backend.describe_device()}")
    failures = 0
    for description, tensor, error in gradcheck.run_checks(0):
        passed = error <= gradcheck.TOLERANCE
        failures += not passed
        print(f"{description:<56} {tensor:<22} {error:>13.2e}  {'PASS' if passed else 'FAIL'}", flush=True)
        if "model" in description or description.startswith("alexnet"):
            break         # the generator stops at its first model: the whole network is never checked
    print(f"{'all passed' if not failures else f'{failures} FAILED'}")
    return 1 if failures else 0


# ---- CUDA graphs (issue 27) ------------------------------------------------------------------

GRAPH_STEPS = 50                # eager steps against replayed ones, from one seed
QUICK_BATCH = 16                # the dry run's batch
STEP_ROUNDS = 30                # steps timed for host and device milliseconds
PART_S = {"cold": 60, "warm": 40, "table": 40, "peers": 70, "compiled": 60}    # each part's limit (seconds)


def graphs(args):
    """The CUDA graphs check, what matters most first (a stage stopped at its limit keeps what it printed):
    the capture and its node count; 50 eager steps against 50 graphed ones from one seed (weights and
    Adam's moments equal, bit for bit); host and device ms per step, eager and replayed; the tutorial's
    5 epochs with a cold kernel cache, then a warm one (seconds, accuracy, memory pools per epoch); the
    per-kernel table (benchmarks/kernel_table.py); the peers (benchmarks/compare.py). On NumPy (the dry
    run) the graphs are the emulator's (``minialex.graph_stand_in``), the eager steps the launch counter's
    stand-in's, and the sizes small. Prints a RESULT line after each part, with everything so far."""
    backend.set_backend(args.backend)
    steps, batch = (4, QUICK_BATCH) if args.quick else (GRAPH_STEPS, common.BATCH)
    x, y = training_batches(args.data_dir, steps * batch)
    print(f"INFO graphs: on {backend.describe_device()}; {steps} steps of batch {batch}", flush=True)
    start = time.perf_counter()
    graphed, graphed_steps = stepped(args.backend, x, y, batch, eager=False)
    values = {"graphs_s": time.perf_counter() - start, **{f"steps_{how}": n for how, n in graphed_steps.counts.items()}}
    replayer = graphed_steps.batches[batch].replayer
    if replayer.graph is not None:
        values["graph_nodes"] = replayer.support.node_count(replayer.graph)
    print(f"INFO capture: steps {dict(graphed_steps.counts)}; the graph has {values.get('graph_nodes')} nodes")
    print(result_line(values), flush=True)
    eager, _ = stepped(args.backend, x, y, batch, eager=True)
    differences = [float(numpy.abs(a.astype(numpy.float64) - b).max(initial=0.0))
                   for part in range(2) for a, b in zip(eager[part], graphed[part])]
    values["eager_equals_graphed"] = int(max(differences) == 0.0 and eager[2] == graphed[2])
    values["eager_graphed_max_diff"] = max(differences)
    print(f"INFO equality: {steps} eager steps against {steps} graphed ones from seed 0: the weights and Adam's "
          f"moments {'equal bit for bit' if values['eager_equals_graphed'] else 'DIFFER'} (max |difference| "
          f"{max(differences):.3g}); generator {eager[2]} and {graphed[2]}")
    print(result_line(values), flush=True)
    for eager_step in (True, False):
        values.update(step_times(args.backend, x[:batch], y[:batch], eager_step))
        print(result_line(values), flush=True)
    with tempfile.TemporaryDirectory(prefix="minialex_kernel_cache_") as kernel_cache:    # gone afterwards
        for name, command in parts(args):
            values.update(run_part(name, command, PART_S[name], kernel_cache))
            print(result_line(values), flush=True)
    return 0


@contextlib.contextmanager
def stepping(backend_name, eager):
    """Where a step runs: on CuPy with graphs (or with ``MINIALEX_CUDA_GRAPHS=0`` for ``eager``); on NumPy
    in the emulator (or, for ``eager``, the launch counter's stand-in). Yields the launch counter, or None."""
    from minialex import graph_stand_in, graphs, stand_in

    previous = os.environ.get(graphs.SETTING)
    if eager:
        os.environ[graphs.SETTING] = "0"
    try:
        if backend_name == "cupy":
            yield None
        else:
            with (stand_in.counting() if eager else graph_stand_in.emulating()) as counter:
                yield counter
    finally:
        if previous is None:
            os.environ.pop(graphs.SETTING, None)
        else:
            os.environ[graphs.SETTING] = previous


def stepped(backend_name, x, y, batch, eager):
    """((weights, Adam's moments, generator state) after fit's steps over (x, y) from seed 0, the TrainingSteps)."""
    with stepping(backend_name, eager):
        model = common.tutorial_model()
        training_steps, _ = common.fit_steps(model, backend.to_device(x), backend.to_device(y), 0, batch)
        for step in range(x.shape[0] // batch):
            training_steps.run(step, slice(step * batch, (step + 1) * batch))
        backend.synchronize()
        state = model.optimizer.get_state()
        return ([backend.to_numpy(w) for w in model.get_weights()],
                [backend.to_numpy(v) for k, v in sorted(state.items()) if k != "iterations"],
                random.get_rng().get_state()), training_steps


def training_batches(data_dir, count):
    """(x, y): the first ``count`` MNIST training images, preprocessed (random stand-ins without MNIST)."""
    from minialex.data import to_categorical

    x, labels = training_images(data_dir)
    x = numpy.resize(x, (count,) + x.shape[1:]).astype(numpy.float32)
    return x, to_categorical(numpy.resize(labels, count), 10)


def step_times(backend_name, x, y, eager):
    """{host and device ms of one step of fit's on one batch, eager or replayed}; on the CPU host ms and the
    host calls of one step, counted by the stand-in (eager) or the emulator (replayed)."""
    name = "eager" if eager else "replayed"
    values = {}
    with stepping(backend_name, eager) as counter:
        model = common.tutorial_model()
        _, run = common.fit_steps(model, backend.to_device(x), backend.to_device(y), batch=x.shape[0])
        if backend_name == "cupy":
            from cupyx.profiler import benchmark

            timing = benchmark(run, n_repeat=STEP_ROUNDS, n_warmup=3)
            values[f"{name}_host_ms"] = 1000 * float(numpy.median(timing.cpu_times))
            values[f"{name}_device_ms"] = 1000 * float(numpy.median(timing.gpu_times[0]))
            values[f"{name}_queued_ms"], _ = compare.queued_device_ms(run, values[f"{name}_host_ms"])
        else:
            counter.counts.clear()
            start = time.perf_counter()
            run()
            values[f"{name}_host_ms"] = 1000 * (time.perf_counter() - start)
            values[f"{name}_host_calls"] = counter.total
    print("INFO step, " + ", ".join(f"{key} {value:.4g}" for key, value in values.items()), flush=True)
    return values


def parts(args):
    """[(name, command)]: the parts run as processes of their own."""
    python, here = sys.executable, Path(__file__).resolve().parent
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    quick = ["--quick"] if args.quick else []
    epochs = [python, str(here / "gpu_stages.py"), "epochs", "--backend", args.backend] + data + quick
    table = [python, str(here / "kernel_table.py"), "--backend", args.backend]
    peers = [python, str(here / "compare.py"), "--backend", args.backend, "--skip-layers"] + data
    if args.quick:                       # the CPU: one run of the epochs (no kernel cache to warm), small sizes
        return [("cold", epochs), ("table", table + ["--batch", str(QUICK_BATCH)]),
                ("peers", peers + ["--step-rounds", "1", "--images", "100", "--no-keras"])]
    return [("cold", epochs), ("warm", epochs), ("table", table),
            ("peers", peers + ["--step-rounds", "10", "--no-compile"]),       # torch.compile apart: it may take long
            ("compiled", peers + ["--step-rounds", "5", "--images", "1000", "--no-keras"])]


def run_part(name, command, limit, kernel_cache):
    """Run one part in a process of its own (the cold run with the CuPy kernel cache ``kernel_cache``
    empty, the warm one after it with the same cache); echo its output; its RESULT's values, each
    prefixed with the part's name."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if name in ("cold", "warm"):
        env["CUPY_CACHE_DIR"] = kernel_cache
    print(f"INFO part {name}: {' '.join(command)} (limit {limit} s)", flush=True)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
        text, status = done.stdout + done.stderr, "ok" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        text, status = (exc.stdout or "") + (exc.stderr or ""), "TIMEOUT"
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
    for line in text.strip().splitlines()[-40:]:
        print(f"  {name}| {line}", flush=True)
    print(f"INFO part {name}: {status}", flush=True)
    values = {f"{name}_{key}": value for key, value in gpu_check.results(text).items()}
    values[f"{name}_ok"] = int(status == "ok")
    return values


def epochs(args):
    """The tutorial's run (5 epochs; --quick: 1 epoch on 256 images), each epoch's seconds and memory pools."""
    from minialex import train_mnist

    argv = ["--backend", args.backend, "--seed", "0"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    if args.quick:
        argv += ["--epochs", "1", "--limit", "256"]
    epoch_seconds = record_epoch_seconds()
    run = train_mnist.run(train_mnist.build_parser().parse_args(argv))
    values = {"train_s": run["seconds"], "test_accuracy": run["test_accuracy"],
              "epoch_s_max": max(epoch_seconds or [0.0]), "epoch_s_min": min(epoch_seconds or [0.0])}
    if backend.get_backend() == "cupy":
        values.update(gpu_memory())
    print(result_line(values))
    return 0


STAGES = {"device": device, "train": train, "transfer": transfer, "gradcheck-layers": gradcheck_layers,
          "graphs": graphs, "epochs": epochs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    parser.add_argument("--data-dir", default=os.environ.get("MINIALEX_DATA_DIR"))
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_logs")
    parser.add_argument("--quick", action="store_true",
                        help="a dry run's sizes: train 1 epoch on 2,000 images; transfer 4 steps, 500 test images; "
                             "graphs 4 steps of 16, 1 epoch on 256 images")
    args = parser.parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
