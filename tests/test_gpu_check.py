"""The GPU check's plumbing, on the CPU: stages that pass, fail and hang, the summary written after
each, the time budget, the parsers on output shaped like the real stages', and the check's own
stages (device, the short gradient check, weights across backends) run on NumPy at small sizes."""
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"_{name}_under_test", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")


def python(code):
    return [sys.executable, "-c", code]


def fake_stages():
    """The real stages' names, each a few lines of Python printing what the real one prints."""
    Stage = gpu_check.Stage
    return [
        Stage("device", 10, python("print('INFO device: cupy 14.2 on a pretend card'); print('RESULT ')"), ""),
        Stage("tests", 10, python("print('tests/test_a.py::test_x[cupy] PASSED  [ 50%]'); "
                                  "print('FAILED tests/test_a.py::test_y[cupy] - boom'); "
                                  "print('1 failed, 1 passed, 3 deselected in 0.52s'); raise SystemExit(1)"), ""),
        Stage("train", 2, python("import subprocess\nprint('Epoch 1/5'); print('EPOCH 1 seconds=0.9', flush=True)\n"
                                 "print('Epoch 2/5'); print('EPOCH 2 seconds=0.8', flush=True)\n"
                                 "subprocess.run(['sleep', '60'])"), ""),      # hangs, in a child process too
        Stage("launches", 10, python("print('RESULT launches_per_step=317 launches_per_inference_batch=90')"), ""),
        Stage("step", 10, python(f"print({STEP_OUTPUT!r})"), ""),
    ]


STEP_OUTPUT = """LAYER name=conv2d_1 kind=fwd+bwd ms=0.9 torch_ms=0.2 host_ms=0.8 device_ms=0.85 \
torch_host_ms=0.1 torch_device_ms=0.2
LAYER name=dense kind=fwd+bwd ms=0.3 torch_ms=0.25 host_ms=0.3 device_ms=0.3 torch_host_ms=0.1 \
torch_device_ms=0.25
LAYER name=conv2d_1 kind=forward ms=5.0 torch_ms=0.1
RESULT step_ms=3.2 torch_step_ms=2.5 ratio=1.28 step_host_ms=3.1 step_device_ms=3.2 step_queued_ms=1.1 \
step_queued_calls=15 torch_step_host_ms=1.2 torch_step_device_ms=2.4 torch_step_queued_ms=2.3 images_per_s=90000"""


def test_stage_limits_add_up_to_the_budget_and_name_real_scripts():
    for argv in ([], ["--backend", "numpy", "--quick"]):
        args = gpu_check.argparse.Namespace(backend="numpy" if argv else "cupy", quick=bool(argv), data_dir="d")
        stages = gpu_check.plan(args, logs="out")
        assert [s.name for s in stages] == ["device", "tests", "gradcheck", "train", "transfer", "launches", "step",
                                            "both", "graphs"]
        default = [s for s in stages if s.name not in gpu_check.ON_REQUEST]
        assert sum(s.limit for s in default) <= gpu_check.BUDGET_S <= 450
        assert [s.limit for s in stages if s.name == "graphs"] == [300]          # --only graphs: 5 minutes
        for stage in stages:
            scripts = [part for part in stage.command if part.endswith(".py")]
            assert all((BENCHMARKS.parent / part).exists() for part in scripts), stage
    tests = gpu_check.plan(gpu_check.argparse.Namespace(backend="cupy", quick=False, data_dir="d"))[1].command
    assert tests[tests.index("--backend") + 1] == "cupy"


def test_failing_and_hanging_stages_leave_a_summary_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    start = time.perf_counter()
    code = gpu_check.main(["--backend", "cupy", "--data-dir", str(tmp_path), "--budget", "60"], stages=fake_stages())
    assert time.perf_counter() - start < 30           # the hanging stage was stopped at its 2 s limit
    assert code == 1
    summary = (tmp_path / "summary.txt").read_text()
    assert "cupy 14.2 on a pretend card" in summary
    lines = stage_rows(summary)
    assert "FAILED" in lines["tests"] and "1 failed, 1 passed, 3 deselected" in lines["tests"]
    assert "test_a.py::test_y[cupy]" in lines["tests"]
    assert "TIMEOUT" in lines["train"] and "2 of 5 epochs" in lines["train"]
    assert "ok" in lines["launches"] and "317 per step" in lines["launches"]
    assert "ok" in lines["step"] and "minialex 3.20 ms, PyTorch 2.50 ms" in summary
    assert "0.90, 0.80" in summary                                       # the epochs the hung run finished
    assert "the host: launching takes 3.10 ms, the card's work 1.10 ms" in summary
    assert "host 9.8 us per launch, card 3.5 us per launch" in summary
    assert "ratio 1.28" in summary and "FAIL" in summary
    assert summary.index("conv2d_1 0.900 vs 0.200") < summary.index("dense 0.300 vs 0.250")
    assert (tmp_path / "train.log").read_text().rstrip().endswith("[train stopped at its 2 s limit]")
    assert "CuPy kernels compiled, by stage" in summary
    assert summary in capsys.readouterr().out


def stage_rows(summary):
    """{stage: its row} from the summary's table of stages."""
    table = summary.split("\nstage ", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: line for line in table.splitlines()[1:]}


def test_the_budget_stops_a_stage_early_and_skips_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(gpu_check, "MIN_STAGE_S", 1)
    Stage = gpu_check.Stage
    stages = [Stage("tests", 100, python("import time; time.sleep(60)"), ""),
              Stage("launches", 10, python("print('RESULT launches_per_step=1')"), "")]
    start = time.perf_counter()
    assert gpu_check.main(["--budget", "3", "--data-dir", str(tmp_path)], stages=stages) == 1
    assert time.perf_counter() - start < 15
    rows = stage_rows((tmp_path / "summary.txt").read_text())
    assert "TIMEOUT" in rows["tests"] and "SKIPPED" in rows["launches"] and "no time left" in rows["launches"]


def test_a_summary_is_on_disk_while_a_stage_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    Stage = gpu_check.Stage
    read = f"print(open({str(tmp_path / 'summary.txt')!r}).read())"
    gpu_check.main(["--data-dir", str(tmp_path)], stages=[Stage("launches", 10, python(read), "")])
    assert "launches   RUNNING" in (tmp_path / "launches.log").read_text()


def test_parsers_read_what_the_real_stages_print():
    partial = ("tests/test_a.py::test_x[cupy] PASSED                  [  1%]\n"
               "tests/test_a.py::test_z[cupy] FAILED                  [  2%]\n"
               "tests/test_b.py::test_hangs[cupy-Conv2D 3x3 same, 1x8 -> 3] ")     # no newline: still running
    line = gpu_check.pytest_result(partial)
    assert "1 passed, 1 failed" in line
    assert "was running tests/test_b.py::test_hangs[cupy-Conv2D 3x3 same, 1x8 -> 3]" in line
    assert "test_a.py::test_z[cupy]" in line
    table = ("Conv2D 3x3 valid relu, 2x7x9x3 -> 5                      x                           3.10e-09  PASS\n"
             "LRN r=2 alpha=0.1 beta=0.75, 2x3x4x7                     x                           2.00e-05  FAIL\n"
             "Dense 6 -> 5 softmax                                     kernel                           inf  FAIL\n"
             "2 FAILED\n")
    line = gpu_check.gradcheck_result(table)
    assert line.startswith("2 FAILED (3 rows); worst inf (Dense 6 -> 5 softmax / kernel)")
    assert "LRN r=2 alpha=0.1 beta=0.75, 2x3x4x7 / x 2.0e-05" in line
    assert gpu_check.results("RESULT a=1 b=nan c=x\nRESULT step_ms=2.5") == {"step_ms": 2.5}
    assert gpu_check.bound({"step_host_ms": 1.0, "step_queued_ms": 2.0}).startswith("the card")
    assert gpu_check.bound({"step_host_ms": 1.0, "step_queued_ms": float("nan"), "step_queued_calls": 0.0}) \
        .startswith("unknown: the step waits")


def collected(*options):
    """The node ids pytest collects from tests/test_kernels.py with these options."""
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/test_kernels.py", "--collect-only", "-q",
                          "-p", "no:cacheprovider", *options], cwd=BENCHMARKS.parent, capture_output=True, text=True)
    return {line for line in run.stdout.splitlines() if "::" in line}


def test_the_tests_stage_runs_every_kernel_s_gpu_comparison():
    """The tests stage (``pytest tests --backend cupy``) runs the CuPy leg of test_kernels.py's comparisons
    of each CUDA half with its NumPy half, and nothing of that file that runs on the CPU alone."""
    args = gpu_check.argparse.Namespace(backend="cupy", quick=False, data_dir="d")
    tests = next(stage for stage in gpu_check.plan(args) if stage.name == "tests")
    assert "tests" in tests.command and tests.command[tests.command.index("--backend") + 1] == "cupy"
    gpu_legs = {item for item in collected() if "cupy" in item.partition("[")[2].rstrip("]").split("-")}
    assert len(gpu_legs) >= 20
    assert collected("--backend", "cupy") == gpu_legs


# ---- the check's own stages, on NumPy at small sizes ------------------------------------------

@pytest.fixture(scope="module")
def gpu_stages():
    return load("gpu_stages")


def test_device_stage_names_the_machine(gpu_stages, capsys):
    assert gpu_stages.main(["device", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "INFO device: numpy" in out and out.rstrip().splitlines()[-1].startswith("RESULT")


def test_short_gradcheck_stops_before_the_whole_network(gpu_stages, capsys):
    assert gpu_stages.main(["gradcheck-layers", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("all passed") and "alexnet" not in out
    assert gpu_check.gradcheck_result(out).startswith("all passed")


def test_predictions_that_differ_are_caught(gpu_stages, capsys):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), 50).astype(np.float32)
    assert gpu_stages.compare_predictions("a -> b", p, p + 1e-6, None)[0]
    q = p.copy()
    q[3] = np.roll(q[3], 1)                                              # one prediction, another class
    same, difference, differ = gpu_stages.compare_predictions("a -> b", p, q, None)
    assert not same and differ == 1 and difference > gpu_stages.PROBABILITY_TOLERANCE
    assert "DIFFERENT" in capsys.readouterr().out


def test_transfer_stage_checks_both_ways(gpu_stages, tmp_path, capsys):
    argv = ["transfer", "--backend", "numpy", "--quick", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)]
    assert gpu_stages.main(argv) == 0             # no train stage before it: it trains its own 4 steps first
    out = capsys.readouterr().out
    values = gpu_check.results(out)
    assert values["same"] == 1 and values["to_cpu_max_diff"] == 0 and values["to_device_differ"] == 0
    assert "numpy -> CPU SAME" in gpu_check.stage_line(gpu_check.Stage("transfer", 1, [], ""),
                                                       {"status": "ok", "text": out})


def test_the_graphs_stage_dry_run_reports_every_figure(gpu_stages, mnist_dir, tmp_path, monkeypatch, capsys):
    """``--only graphs`` on NumPy (--quick): the emulator's capture, eager steps equal to replayed ones, the
    host calls of a step (79 eager, 4 replayed), one epoch, the kernel table and compare.py, each read
    back into the summary's figures."""
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main(["--backend", "numpy", "--quick", "--only", "graphs", "--data-dir", str(mnist_dir)]) == 0
    summary = (tmp_path / "summary.txt").read_text()
    values = gpu_check.results((tmp_path / "graphs.log").read_text())
    assert values["graph_nodes"] == 71 and values["eager_equals_graphed"] == 1
    assert values["eager_host_calls"] == 79 and values["replayed_host_calls"] == 4
    assert values["steps_replayed"] == 2 and values["cold_ok"] == values["table_ok"] == values["peers_ok"] == 1
    assert values["table_kernels"] == 71 and values["peers_fit_step_ms"] > 0
    assert "eager steps vs replayed ones, one seed           equal bit for bit" in summary
    assert "graph of 71 nodes; eager vs replayed equal" in stage_rows(summary)["graphs"]
    capsys.readouterr()
