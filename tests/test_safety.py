"""Nothing lost (issue 15): reruns, kills and bad arguments never cost a user their work.

One section per point of the issue: (1) reruns and resumes, (2) errors before the work, (3) temporary
files and kills, (4) non-finite values (more in test_training.py), (5) one line instead of a
traceback, (6) loads checked before anything is written, (7) inputs of the wrong kind.
Kills run in subprocesses on small models; downloads come from test_data's server on 127.0.0.1,
and test_data's ``isolated`` keeps HOME and the caches under tmp_path and refuses other hosts here too.
"""
from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from minialex import random, serialization, train_mnist, training
from minialex.data import mnist as mnist_module
from minialex.data import load_mnist
from minialex.optimizers import SGD, Adam
from minialex.serialization import load_npz, save_npz

from .test_data import isolated, serve_shared, server  # noqa: F401 (fixtures: HOME under tmp_path, no internet)
from .test_models import quadrant_data, small_model

ROOT = Path(__file__).resolve().parents[1]
TEST_LABELS = "t10k-labels-idx1-ubyte"


def compiled(seed=0, learning_rate=0.01):
    random.set_seed(seed)
    model = small_model()
    model.compile(optimizer=Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.suffix in (".tmp", ".part"))


def snapshot(model):
    return [w.copy() for w in model.get_weights()], model.optimizer.get_state(), random.get_rng().get_state()


def assert_unchanged(model, before):
    weights, state, rng = before
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    now = model.optimizer.get_state()
    assert now.keys() == state.keys() and now["iterations"] == state["iterations"]
    for key in state:
        if key != "iterations":
            np.testing.assert_array_equal(now[key], state[key])
    assert random.get_rng().get_state() == rng


# ---- 1. A rerun never destroys a checkpoint; a resume must match the run ---------------------

def test_a_rerun_refuses_to_replace_a_checkpoint_unless_told(tmp_path):
    x, y = quadrant_data(60)
    path = tmp_path / "run.npz"
    compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path)
    saved = path.read_bytes()
    again = compiled()
    before = snapshot(again)
    with pytest.raises(training.CheckpointExistsError, match=r"already holds a checkpoint of 2 epochs; resume it "
                                                             r"\(resume_from=.*\), choose another path, or pass "
                                                             r"overwrite=True"):
        again.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    assert path.read_bytes() == saved
    assert_unchanged(again, before)                        # refused before the first step
    history = again.fit(x, y, epochs=3, batch_size=16, verbose=0, checkpoint=path, resume_from=path)
    assert len(history.history["loss"]) == 3               # resuming it is the way on...
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path, overwrite=True)
    assert training.read_checkpoint(path)[1]["epoch"] == 1   # ...or replacing it, when asked


def test_a_resume_with_other_settings_is_refused_naming_each_difference(tmp_path):
    x, y = quadrant_data(60)
    path = tmp_path / "run.npz"
    compiled().fit(x, y, epochs=1, batch_size=16, validation_split=0.2, verbose=0, checkpoint=path,
                   settings={"dataset": "mnist"})
    model = compiled(seed=5, learning_rate=0.02)
    before = snapshot(model)
    other_x, other_y = quadrant_data(60, seed=9)
    with pytest.raises(training.CheckpointMismatchError) as error:
        model.fit(other_x, other_y, epochs=2, batch_size=8, validation_split=0.25, verbose=0, resume_from=path,
                  checkpoint=path, settings={"dataset": "fashion-mnist"})
    names = [name for name, _, _ in error.value.differences]
    assert names == ["batch_size", "training_samples", "training_digest", "validation_split", "validation_samples",
                     "validation_digest", "learning_rate", "dataset"]
    assert "batch_size: the checkpoint's run had 16, this one has 8" in str(error.value)
    assert_unchanged(model, before)
    assert training.read_checkpoint(path)[1]["epoch"] == 1


def test_a_resume_on_data_changed_in_one_sample_is_refused(tmp_path):
    """The digest covers every sample (it once took 16 evenly spaced ones: 0, 3, 7, ... of 60)."""
    x, y = quadrant_data(60)
    path = tmp_path / "run.npz"
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    x[1, 4, 4, 0] += 0.25
    with pytest.raises(training.CheckpointMismatchError) as error:
        compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path, resume_from=path)
    assert [name for name, _, _ in error.value.differences] == ["training_digest"]


def cli_checkpoint(path, **settings):
    """A checkpoint as the example writes it (a small model: the example only reads its metadata first)."""
    model = compiled()
    flags = dict(dataset="mnist", limit=320, seed=0, batch_size=64, validation_split=0.2, learning_rate=1e-3)
    flags.update(settings)
    training.save_checkpoint(path, model, 2, training.History({"loss": [1.0, 0.5]}), flags)


def test_the_example_refuses_a_rerun_onto_its_checkpoint_and_a_contradicting_resume(tmp_path, capsys):
    path = tmp_path / "run.npz"
    cli_checkpoint(path)
    saved = path.read_bytes()
    base = ["--backend", "numpy", "--data-dir", str(tmp_path / "never-read"), "--limit", "320"]
    assert train_mnist.main(base + ["--epochs", "1", "--save", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--save {path}: a checkpoint of 2 epochs is there already; resume it with " \
                              f"--resume {path}, choose another --save path, or pass --overwrite" in err[0]
    assert train_mnist.main(base + ["--resume", str(path), "--batch-size", "32", "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--seed: 0 in the checkpoint, 3 now; --batch-size: 64 in the checkpoint, 32 now" in err[0]
    assert train_mnist.main(base[:-1] + ["1000", "--resume", str(path), "--dataset", "fashion-mnist"]) == 2
    err = capsys.readouterr().err
    assert "--dataset: 'mnist' in the checkpoint, 'fashion-mnist' now; --limit: 320 in the checkpoint, 1000 now" in err
    assert path.read_bytes() == saved


# ---- 2. Every argument and destination is checked before the first step ---------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(validation_data="empty"), "validation_data holds no samples"),
    (dict(validation_data="one"), r"validation_data must be a pair \(x_val, y_val\), got a tuple of 1"),
    (dict(validation_split="0.2"), r"validation_split must be a number in \[0, 1\), got '0.2' \(str\)"),
    (dict(validation_split=1.0), r"validation_split must be in \[0, 1\)"),
    (dict(epochs=2.0), "epochs must be an int, got 2.0"),
    (dict(verbose=True), "verbose must be one of 0, 1, 2"),
    (dict(checkpoint="missing-folder"), "cannot save a checkpoint to .*: folder .* does not exist"),
    (dict(checkpoint="a-folder"), "it is a folder; name a file inside it"),
    (dict(resume_from="absent"), "no such file"),
])
def test_bad_arguments_fail_before_the_first_step(tmp_path, kwargs, message):
    x, y = quadrant_data(40)
    replacements = {"empty": (x[:0], y[:0]), "one": (x,), "missing-folder": tmp_path / "nowhere" / "run.npz",
                    "a-folder": tmp_path, "absent": tmp_path / "absent.npz"}
    kwargs = {key: replacements.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}
    model = compiled()
    before = snapshot(model)
    with pytest.raises((ValueError, OSError), match=message):
        model.fit(x, y, **{"batch_size": 8, "verbose": 0, **kwargs})
    assert_unchanged(model, before)


def test_the_example_checks_its_save_folder_before_reading_any_data(tmp_path, capsys):
    start = time.perf_counter()
    status = train_mnist.main(["--backend", "numpy", "--data-dir", str(tmp_path / "not-read"),
                               "--save", str(tmp_path / "no-such-folder" / "run.npz")])
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert status == 2 and "x_train shape" not in out
    assert err.startswith("error: cannot save a checkpoint to ") and "no-such-folder does not exist" in err
    assert seconds < 1.0


# ---- 3. Temporary files never outlive their writer ---------------------------------------

SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy
    from minialex import train_mnist
    from minialex.serialization import save_npz

    def run(args):                      # the example, with its training replaced by big writes
        big = {"a": numpy.ones((int(sys.argv[2]),), numpy.float32)}
        while True:
            save_npz(args.save, big)
            print("saved", flush=True)

    train_mnist.run = run
    sys.exit(train_mnist.main(["--save", sys.argv[1], "--overwrite"]))
""")


def start_save_loop(path, floats=8_000_000):
    process = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path), str(floats)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "saved"      # one complete file; the next write is under way
    time.sleep(0.02)
    return process


@pytest.mark.parametrize("signum, status, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_sigterm_or_ctrl_c_mid_write_removes_the_temporary_file(tmp_path, signum, status, said):
    path = tmp_path / "run.npz"
    process = start_save_loop(path)
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == status
    assert err.strip().splitlines()[-1] == f"{said}; the last complete checkpoint is in {path}"
    assert temporaries(tmp_path) == []
    assert load_npz(path)[0]["a"].shape == (8_000_000,)


DOUBLE_CTRL_C = textwrap.dedent("""
    import os
    import signal
    import sys
    import threading
    import time
    from minialex import train_mnist

    def ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)

    def busy_worker():                   # a thread Python waits for at exit; the second Ctrl-C comes then
        time.sleep(0.3)
        ctrl_c()
        time.sleep(0.3)

    def run(args):
        if sys.argv[1] == "at exit":
            threading.Thread(target=busy_worker).start()
            ctrl_c()
            time.sleep(10)
        try:
            ctrl_c()
            time.sleep(10)
        finally:                         # the cleanup the first Ctrl-C runs, as atomic_write's
            ctrl_c()
            time.sleep(0.1)
            print("cleanup finished", flush=True)

    train_mnist.run = run
    sys.exit(train_mnist.main([]))
""")


@pytest.mark.parametrize("second", ["at exit", "during the cleanup"])
def test_a_second_ctrl_c_is_quiet_and_lets_the_cleanup_finish(second):
    done = subprocess.run([sys.executable, "-c", DOUBLE_CTRL_C, second], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted\n"
    assert done.stdout == ("" if second == "at exit" else "cleanup finished\n")


def test_a_file_is_flushed_to_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda descriptor: calls.append(("fsync", os.readlink(f"/proc/self/fd/"
                                                                                              f"{descriptor}"))))
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: calls.append(("replace", source)) or
                        replace(source, target))
    save_npz(tmp_path / "w.npz", {"a": np.ones(3)})
    assert [what for what, _ in calls] == ["fsync", "replace"] and calls[0][1] == calls[1][1]


def test_a_kill_9_leftover_is_removed_by_the_next_load_or_save(tmp_path):
    path = tmp_path / "run.npz"
    process = start_save_loop(path)
    process.kill()
    process.communicate(timeout=30)
    leftovers = temporaries(tmp_path)                   # 0 or 1: wherever the kill landed
    assert len(leftovers) <= 1
    assert load_npz(path)[0]["a"].shape == (8_000_000,)
    assert temporaries(tmp_path) == []


def test_only_the_temporaries_of_writers_that_are_gone_are_removed(tmp_path):
    path = tmp_path / "w.npz"
    save_npz(path, {"a": np.zeros(3)})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = serialization.temporary_path(path).replace(f".{os.getpid()}-", f".{int(gone.stdout)}-")
    alive = serialization.temporary_path(path).replace(f".{os.getpid()}-", f".{os.getppid()}-")
    legacy = tmp_path / f".w.npz.{'ab' * 16}.tmp"
    fresh_legacy = tmp_path / f".w.npz.{'cd' * 16}.tmp"
    other_file = tmp_path / ".x.npz.somehost.1-ab.tmp"
    for name in (dead, alive, legacy, fresh_legacy, other_file):
        Path(name).write_bytes(b"partial")
    old = time.time() - 2 * serialization.STALE_SECONDS
    os.utime(legacy, (old, old))
    save_npz(path, {"a": np.ones(3)})
    assert temporaries(tmp_path) == sorted(Path(p).name for p in (alive, fresh_legacy, other_file))


def test_an_interrupted_download_leaves_no_part_file_and_a_dead_ones_is_cleaned(tmp_path, monkeypatch,
                                                                                 server_url):
    cache = tmp_path / "cache"
    cache.mkdir()
    leftover = Path(serialization.temporary_path(cache / f"{TEST_LABELS}.gz", ".part").replace(
        f".{os.getpid()}-", ".999999999-"))
    leftover.write_bytes(b"x" * 1000)

    def stop(*args, **kwargs):
        raise train_mnist.Terminated()

    monkeypatch.setattr(mnist_module, "_verified", stop)           # SIGTERM once the bytes are in
    with pytest.raises(train_mnist.Terminated):
        mnist_module.fetch(TEST_LABELS, cache, mirrors=[server_url], timeout=5, retry_delays=(), progress=False)
    assert os.listdir(cache) == []


# ---- 3. A cached file that fails its checksum is downloaded again ---------------------------

@pytest.fixture
def server_url(server, mnist_dir):
    return serve_shared(server, "m")


def test_a_corrupt_cached_file_is_downloaded_again(tmp_path, mnist_dir, server, server_url, monkeypatch):
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in mnist_module.FILES:
        (cache / f"{name}.gz").write_bytes((mnist_dir / f"{name}.gz").read_bytes())
    labels = bytearray(gzip.decompress((cache / f"{TEST_LABELS}.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10                   # one flipped label: valid file, wrong checksum
    (cache / TEST_LABELS).write_bytes(bytes(labels))        # a plain copy, found before the .gz one
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_mnist(tmp_path / "cache")                     # a folder the user names is never replaced
    (_, _), (_, y_test) = load_mnist(cache_dir=tmp_path / "cache", mirrors=[server_url], timeout=5,
                                     retry_delays=(), progress=False)
    assert list(server.hits) == [f"/m/{TEST_LABELS}.gz"]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert sorted(os.listdir(cache)) == sorted(f"{name}.gz" for name in mnist_module.FILES)
    (cache / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(mnist_module.DatasetUnavailableError, match=r"(?s)checksum mismatch.*HTTP 404"):
        load_mnist(cache_dir=tmp_path / "cache", mirrors=[server.url("gone")], timeout=5, retry_delays=(),
                   progress=False)
    assert (cache / f"{TEST_LABELS}.gz").exists()          # no mirror answered: the cache is as it was


# ---- 5. One line on stderr and exit status 2, never a traceback -------------------------------

def test_bad_resume_files_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.npz").write_bytes(b"")
    small_model().save_weights(tmp_path / "weights.npz")
    np.savez(tmp_path / "pickle.npz", a=np.array([{"run": "code"}], dtype=object))
    expected = {"array.npy": "not a readable .npz file (a .npy file (one array))", "folder": "is a folder",
                "empty.npz": "not a readable .npz file", "weights.npz": "not a minialex checkpoint",
                "pickle.npz": "not a readable .npz file"}
    for name, message in expected.items():
        assert train_mnist.main(["--backend", "numpy", "--resume", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (name, err)


def test_a_read_only_cache_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIALEX_CACHE_DIR", str(tmp_path / "cache"))

    def refuse(self, *args, **kwargs):       # as a read-only folder answers (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert train_mnist.main(["--backend", "numpy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MNIST is not on this machine and could not be downloaded.")
    assert f"The cache cannot take a download (Permission denied: {tmp_path / 'cache' / 'mnist'})." in err[0]
    assert "To fix: set MINIALEX_CACHE_DIR to a folder you can write, with room for the files (downloads go there), " \
           "or pass --data-dir" in err[0]


def test_the_script_ends_in_one_line_for_a_folder_given_to_resume(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_mnist.py"), "--backend", "numpy",
                           "--resume", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path} is a folder, not a .npz file\n"


# ---- 6. A load checks everything before it writes anything -----------------------------------

def damaged(path, tmp_path, damage):
    arrays, meta = load_npz(path)
    if damage == "weight shape":
        arrays["weights/dense_1/kernel"] = arrays["weights/dense_1/kernel"][:, :2]
    elif damage == "weight dtype":
        arrays["weights/dense_1/bias"] = arrays["weights/dense_1/bias"].astype(str)
    elif damage == "nan weight":
        arrays["weights/dense_1/bias"] = arrays["weights/dense_1/bias"].copy()
        arrays["weights/dense_1/bias"][0] = np.nan
    elif damage == "optimizer length":
        arrays["optimizer/v/0"] = arrays["optimizer/v/0"][:-1]
    elif damage == "optimizer slot missing":
        del arrays["optimizer/m/0"]
    elif damage == "generator state":
        meta["rng"] = {"seed": 1}
    elif damage == "history":
        meta["history"]["loss"].append(0.1)
    out = tmp_path / "damaged.npz"
    save_npz(out, arrays, meta)
    return out


@pytest.mark.parametrize("damage", ["weight shape", "weight dtype", "nan weight", "optimizer length",
                                    "optimizer slot missing", "generator state", "history"])
def test_a_damaged_checkpoint_changes_nothing(tmp_path, damage):
    """Each damage sits after what a load writes first (the weights), so a half-load would show."""
    x, y = quadrant_data(40)
    path = tmp_path / "run.npz"
    compiled(seed=1).fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    model = compiled(seed=2)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)   # its own optimiser slots, to compare with
    before = snapshot(model)
    with pytest.raises(ValueError, match="damaged checkpoint|does not fit this model"):
        training.load_checkpoint(damaged(path, tmp_path, damage), model)
    assert_unchanged(model, before)


def test_weights_beyond_float32s_range_are_refused_after_the_cast(tmp_path):
    """1e300 is a finite float64 and infinity as float32: checked after the cast, wherever weights come in."""
    x, y = quadrant_data(40)
    model = compiled()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=tmp_path / "run.npz")
    before = snapshot(model)
    huge = [w.astype(np.float64) for w in model.get_weights()]
    huge[-1][0] = 1e300
    beyond = r"weight dense_1/bias holds values beyond the range of float32 \(up to 1e\+300\)"
    with pytest.raises(ValueError, match=beyond):
        model.set_weights(huge)
    save_npz(tmp_path / "w.npz", {name: w for (name, _), w in zip(model.weight_items(), huge)})
    with pytest.raises(ValueError, match=beyond):
        model.load_weights(tmp_path / "w.npz")
    arrays, meta = load_npz(tmp_path / "run.npz")
    arrays["optimizer/v/0"] = arrays["optimizer/v/0"].astype(np.float64)
    arrays["optimizer/v/0"][5] = 1e300
    save_npz(tmp_path / "state.npz", arrays, meta)
    with pytest.raises(ValueError, match=r"does not fit this model: bad input: optimizer state v/0 holds values "
                                         r"beyond the range of float32"):
        training.load_checkpoint(tmp_path / "state.npz", model)
    assert_unchanged(model, before)
    assert np.isfinite(model.predict(x)).all()


def test_a_checkpoint_of_another_dtype_names_the_dtype(tmp_path):
    x, y = quadrant_data(40)
    path = tmp_path / "run.npz"
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    random.set_seed(0)
    model = small_model(dtype="float64")
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"does not fit this model: its weights are float32, the model's float64; "
                                         r"resume it into a model built with dtype='float32'") as error:
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path, resume_from=path)
    assert "differ" not in str(error.value)


def test_an_optimizer_state_of_the_wrong_length_is_refused_before_any_change():
    params = [np.ones(5, np.float32)]
    opt = Adam(0.1)
    opt.apply(params, [np.ones(5, np.float32)])
    state = opt.get_state()
    fresh = Adam(0.1)
    state["m/0"] = state["m/0"][:4]
    with pytest.raises(ValueError, match=r"m/0 has shape \(4,\), the parameters \(5,\)"):
        fresh.set_state(state, params)
    assert fresh.iterations == 0 and fresh.slots == {"m": [], "v": []}
    with pytest.raises(ValueError, match="slots \\['m', 'v'\\] do not belong to SGD"):
        SGD(0.1).set_state(opt.get_state())


# ---- 7. Inputs of the wrong kind ---------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda x, y: (x.astype(str), y), "x must hold numbers, got dtype <U"),
    (lambda x, y: (x.astype(complex), y), "x holds complex numbers"),
    (lambda x, y: (x > 0.5, y), "x holds booleans"),
    (lambda x, y: (x, np.zeros_like(y)), r"y must be one-hot rows .* 40 rows are not .* 40 are all zero"),
    (lambda x, y: (x, -y), "values are negative"),
])
def test_inputs_that_cannot_be_right_are_refused(make, message):
    model = compiled()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        model.fit(*make(*quadrant_data(40)), epochs=1, verbose=0)
    assert_unchanged(model, before)


def test_integer_labels_as_targets_are_called_labels_not_unscaled_images(monkeypatch):
    from minialex import checks

    monkeypatch.setattr(checks, "_warned", set())
    x, y = quadrant_data(40)
    model = compiled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"y must be one-hot targets of shape \(40, 3\), got \(40,\); convert "
                                             r"labels with minialex.data.to_categorical"):
            model.fit(x, y.argmax(axis=1), epochs=1, verbose=0)
    assert [str(w.message) for w in caught] == []


def test_integer_images_warn_once_and_numpy_integers_count_as_ints(monkeypatch):
    from minialex import checks

    monkeypatch.setattr(checks, "_warned", set())
    x, y = quadrant_data(32)
    pixels = (x * 255).astype(np.uint8)
    model = compiled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(pixels, y, epochs=np.int64(1), batch_size=np.int64(16), verbose=0)
        model.fit(pixels, y, epochs=1, batch_size=np.int32(16), verbose=0)
        model.evaluate(pixels, y, batch_size=np.int64(8))
    unscaled = [w for w in caught if "not scaled" in str(w.message)]
    assert len(unscaled) == 1 and "divided by 255" in str(unscaled[0].message)
    assert model.optimizer.iterations == 4
    for bad in (True, np.bool_(True), 16.0):
        with pytest.raises(ValueError, match="batch_size must be an int"):
            model.fit(x, y, batch_size=bad, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be an int"):
        model.predict(x, batch_size=True)
