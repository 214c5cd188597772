"""The one-shot GPU check: everything the CuPy backend promises, on a bare GPU machine, in one go.

    PYTHONPATH=. python benchmarks/gpu_check.py [--data-dir .data/mnist]

Needs CuPy, NumPy, pytest and pytest-benchmark (PyTorch is optional), no network and no install
step; the MNIST files come from --data-dir (a git-ignored copy carried along) or MINIALEX_DATA_DIR.
It prints the card and the CuPy / CUDA versions, then runs, each with a time limit (7.5 minutes in all):
  1. the test suite with ``--backend cupy``;
  2. ``python -m minialex.gradcheck --backend cupy``;
  3. ``examples/train_mnist.py --backend cupy``, the tutorial's full 5 epochs;
  4. ``benchmarks/compare.py --backend cupy`` (the PyTorch CUDA reference where torch is there);
and ends with one table: ms per training step, seconds for 5 epochs, test accuracy and the
minialex/PyTorch step ratio. Logs go under $OUT when it is set (else ./gpu_check_logs).
``--backend numpy --quick`` runs the same plumbing on a CPU, for trying the script itself.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name, command, timeout, logs, env):
    """Run one stage, echo and log its output; returns (exit status, output, seconds)."""
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        status, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as exc:
        status, output = 124, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output += f"\n[{name} stopped after its {timeout} s limit]\n"
    seconds = time.perf_counter() - start
    (logs / f"{name}.log").write_text(output)
    tail = output.strip().splitlines()[-25:]
    print("\n".join(tail), flush=True)
    print(f"=== {name}: exit {status} in {seconds:.0f} s", flush=True)
    return status, output, seconds


def device_report(backend_name):
    """The card's name and the CuPy / CUDA versions (or the CPU's when checking the plumbing)."""
    code = ("from minialex import backend; backend.set_backend(%r); print(backend.describe_device())" % backend_name)
    lines = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout.strip()
             or "device: unknown (minialex could not start the backend)"]
    if backend_name == "cupy":
        code = ("import cupy; v = cupy.cuda.runtime.runtimeGetVersion(); d = cupy.cuda.runtime.driverGetVersion(); "
                "print(f'CuPy {cupy.__version__}, CUDA runtime {v}, driver {d}')")
        lines.append(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip())
    return lines


def find(pattern, text, cast=float):
    match = re.findall(pattern, text)
    return cast(match[-1]) if match else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    parser.add_argument("--data-dir", default=os.environ.get("MINIALEX_DATA_DIR", str(ROOT / ".data" / "mnist")))
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, few rounds (a dry run)")
    args = parser.parse_args(argv)

    logs = Path(os.environ.get("OUT") or ROOT / "gpu_check_logs")
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", MINIALEX_DATA_DIR=args.data_dir)
    python = sys.executable

    header = device_report(args.backend)
    print("\n".join(header), flush=True)
    (logs / "device.txt").write_text("\n".join(header) + "\n")

    stages = {}
    tests = [python, "-m", "pytest", "tests", "--backend", args.backend, "-q", "-p", "no:cacheprovider"]
    if args.quick:
        tests += ["-k", "gradcheck or backend"]
    stages["tests"] = run("tests", tests, 170, logs, env)
    stages["gradcheck"] = run("gradcheck", [python, "-m", "minialex.gradcheck", "--backend", args.backend], 40, logs, env)
    train = [python, "examples/train_mnist.py", "--backend", args.backend, "--data-dir", args.data_dir]
    if args.quick:
        train += ["--epochs", "1", "--limit", "2000"]
    stages["train"] = run("train", train, 150, logs, env)
    compare = [python, "benchmarks/compare.py", "--backend", args.backend, "--rounds", "3" if args.quick else "10",
               "--data-dir", args.data_dir]
    stages["compare"] = run("compare", compare, 90, logs, env)

    tests_out, train_out, compare_out = stages["tests"][1], stages["train"][1], stages["compare"][1]
    bench = dict(re.findall(r"(\w+)=([\d.e+-]+)", (re.findall(r"^RESULT .*$", compare_out, re.M) or [""])[-1]))
    epochs = find(r"Epoch \d+/(\d+)", train_out, int)
    rows = [
        ("device", header[0]),
        ("test suite", (re.findall(r"\d+ (?:passed|failed)[^\n]*", tests_out) or ["no summary (see tests.log)"])[-1]),
        ("gradcheck", (re.findall(r"all passed|\d+ FAILED", stages["gradcheck"][1]) or ["no summary"])[-1]),
        ("ms per training step (batch 64)", bench.get("step_ms", "n/a")),
        ("PyTorch ms per training step", bench.get("torch_step_ms", "n/a (no torch)")),
        ("minialex / PyTorch step ratio", bench.get("ratio", "n/a")),
        (f"seconds for {epochs or '?'} epochs (training time)", find(r"Running time: ([\d.]+)", train_out) or "n/a"),
        ("test accuracy", find(r"Test accuracy: ([\d.]+)", train_out) or "n/a"),
        ("inference images/s (minialex, PyTorch)",
         f"{bench.get('images_per_s', 'n/a')}, {bench.get('torch_images_per_s', 'n/a')}"),
    ]
    table = ["", "=== GPU check summary", *(f"{label:<40} {value}" for label, value in rows),
             "stage exit codes: " + ", ".join(f"{name} {result[0]} ({result[2]:.0f} s)" for name, result in stages.items())]
    print("\n".join(table), flush=True)
    (logs / "summary.txt").write_text("\n".join(table) + "\n")
    return 0 if all(result[0] == 0 for result in stages.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
