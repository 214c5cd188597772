"""Nothing lost, round 3 (issue 29): forks, threads, files touched or shared, settings, and messages.

One section per kind of trouble; each test holds one fix. Small models on 8x8 images, forks and
subprocesses only where a process boundary is the point.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from minialex import backend, parallel, random, serialization, train_mnist, training, viz
from minialex.data import load_mnist
from minialex.layers import BatchNormalization, Dense, Flatten, Layer
from minialex.models import Sequential, alexnet_mnist
from minialex.optimizers import SGD, Adam
from minialex.ownership import CheckpointOwner
from minialex.serialization import load_npz, save_npz

from .test_models import quadrant_data, small_model

ROOT = Path(__file__).resolve().parents[1]


def finishes(pid, seconds=20.0):
    """The exit status of forked child ``pid`` if it ends within ``seconds``; else kill it and say None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def in_child(work):
    """Fork; the child runs ``work()`` and exits 0 (1 on any error) without returning to pytest."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return pid


# ---- forks and threads ----------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["predict", "fit"])
def test_a_forked_child_predicts_and_trains(monkeypatch, call):
    """The parent's pool threads are not in a forked child: it must start its own, not wait on theirs."""
    monkeypatch.setattr(parallel, "blas_threads", lambda: 2)
    random.set_seed(0)
    model = small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = quadrant_data(64)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)      # two shards, and a pool of threads
    expected = model.predict(x, batch_size=16)               # four batches over two threads

    def work():
        if call == "predict":
            np.testing.assert_array_equal(model.predict(x, batch_size=16), expected)
        else:
            model.fit(x, y, epochs=1, batch_size=32, verbose=0)

    assert finishes(in_child(work)) == 0


def blas_of_several_threads():
    threads = parallel.blas_threads()
    if threads < 2:
        pytest.skip("BLAS runs one thread here (one core, or OMP_NUM_THREADS=1)")
    return threads


def test_overlapping_single_threaded_blas_contexts_of_two_threads_restore_blas():
    """Thread A enters, B enters, A leaves, B leaves: BLAS gets its threads back (it kept one for good)."""
    threads = blas_of_several_threads()
    steps = [threading.Event() for _ in range(3)]
    seen = {}

    def a():
        with parallel.single_threaded_blas():
            steps[0].set()
            steps[1].wait(5)
        steps[2].set()

    def b():
        steps[0].wait(5)
        with parallel.single_threaded_blas():
            steps[1].set()
            steps[2].wait(5)
            seen["inside"] = parallel.blas_threads()

    workers = [threading.Thread(target=a), threading.Thread(target=b)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert seen["inside"] == 1                # A has left, B is still inside
    assert parallel.blas_threads() == threads


def test_a_child_forked_inside_a_single_threaded_blas_context_of_another_thread_gets_blas_back():
    threads = blas_of_several_threads()
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with parallel.single_threaded_blas():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(5)
    try:
        status = finishes(in_child(lambda: os._exit(0 if parallel.blas_threads() == threads else 3)))
    finally:
        leave.set()
        thread.join(10)
    assert status == 0
    assert parallel.blas_threads() == threads


# ---- checkpoints: continuing into a new file ---------------------------------------------------

def compiled(seed=0):
    random.set_seed(seed)
    model = small_model()
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_resume_into_a_new_checkpoint_file_that_does_not_exist_yet(tmp_path):
    x, y = quadrant_data(32)
    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=old)
    saved = old.read_bytes()
    history = compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=new, resume_from=old)
    assert len(history.history["loss"]) == 2
    assert training.read_checkpoint(new)[1]["epoch"] == 2 and old.read_bytes() == saved


def test_the_example_resumes_into_a_new_save_path(tmp_path, capsys):
    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    model = compiled()
    flags = dict(dataset="mnist", limit=320, seed=0, batch_size=64, validation_split=0.2, learning_rate=1e-3)
    training.save_checkpoint(old, model, 2, training.History({"loss": [1.0, 0.5]}), flags)
    args = train_mnist.build_parser().parse_args(["--resume", str(old), "--save", str(new), "--limit", "320"])
    train_mnist.check_arguments(args)          # raised [Errno 2] No such file or directory: 'new.npz'
    assert not new.exists()


# ---- temporary files: a live writer's is never removed ----------------------------------------

def dead_pid():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(gone.stdout)


def test_a_temporary_file_whose_writer_holds_its_lock_is_kept_whatever_its_name_says(tmp_path):
    """A writer in another PID namespace (a container on this host) has a PID that means nothing
    here: the cleanup asks the lock, which every process on this machine sees."""
    path = tmp_path / "w.npz"
    save_npz(path, {"a": np.zeros(3)})
    live = Path(serialization.temporary_path(path).replace(f".{os.getpid()}-", f".{dead_pid()}-"))
    with open(live, "wb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)
        load_npz(path)
        save_npz(path, {"a": np.ones(3)})
        assert live.exists()
    load_npz(path)                               # its lock is gone with its writer
    assert not live.exists()


def test_a_temporary_file_from_another_pid_namespace_waits_for_its_age(tmp_path, monkeypatch):
    """Without locks (a file system that has none), the PID in a name counts only in the namespace it
    comes from: this host's other namespaces are treated as other hosts."""
    path = tmp_path / "w.npz"
    save_npz(path, {"a": np.zeros(3)})
    other_namespace = getattr(serialization, "WRITER_HOST", socket.gethostname()) + "1"
    monkeypatch.setattr(serialization, "WRITER_HOST", other_namespace, raising=False)
    theirs = Path(serialization.temporary_path(path).replace(f".{os.getpid()}-", f".{dead_pid()}-"))
    monkeypatch.undo()
    theirs.write_bytes(b"partial")
    load_npz(path)
    assert theirs.exists()
    old = time.time() - 2 * serialization.STALE_SECONDS
    os.utime(theirs, (old, old))
    load_npz(path)
    assert not theirs.exists()


# ---- settings: checked and put in JSON's kinds before the first step --------------------------

def test_settings_of_numpy_numbers_paths_and_tuples_are_recorded_and_resume(tmp_path):
    x, y = quadrant_data(32)
    path = tmp_path / "run.npz"
    settings = {"width": np.int64(64), "rate": np.float32(0.5), "data": tmp_path / "data", "sizes": (64, 128),
                "flag": np.bool_(True), "nested": {"layers": (1, 2)}}
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path, settings=settings)
    assert training.read_checkpoint(path)[1]["settings"]["sizes"] == [64, 128]
    history = compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path, resume_from=path,
                             settings=settings)
    assert len(history.history["loss"]) == 2


@pytest.mark.parametrize("settings, message", [
    ({"tags": {"a", "b"}}, r"settings\['tags'\] is a set, which a checkpoint cannot record"),
    ({"by": {1: "x"}}, r"settings\['by'\] is a dict with keys that are not strings"),
    ({"rate": float("nan")}, r"settings\['rate'\] is nan: a checkpoint's setting must equal itself"),
    ({"sizes": [1, object()]}, r"settings\['sizes'\]\[1\] is an object"),
    ({"batch_size": 16}, r"settings \['batch_size'\]: fit records these itself"),
])
def test_settings_a_checkpoint_cannot_record_are_refused_before_the_first_step(tmp_path, settings, message):
    x, y = quadrant_data(32)
    model = compiled()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=tmp_path / "run.npz", settings=settings)
    assert model.optimizer.iterations == 0 and not (tmp_path / "run.npz").exists()
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# ---- a checkpoint touched between epochs is still the run's ------------------------------------

class Toucher(Layer):
    """Passes its input through; at each training forward, touches ``path`` (or rewrites it, same bytes)."""

    def __init__(self, path, how, **kwargs):
        super().__init__(**kwargs)
        self.path, self.how = path, how

    def forward(self, x, training=False):
        if training and self.path.exists():
            if self.how == "touch":
                later = time.time() + 5
                os.utime(self.path, (later, later))
            else:                                   # copied back over itself: another inode, the same bytes
                copy = self.path.with_suffix(".copy")
                copy.write_bytes(self.path.read_bytes())
                os.replace(copy, self.path)
        return x

    def backward(self, dout):
        return dout


@pytest.mark.parametrize("how", ["touch", "same bytes"])
def test_a_checkpoint_touched_or_rewritten_unchanged_between_epochs_goes_on(tmp_path, how):
    path = tmp_path / "run.npz"
    random.set_seed(0)
    model = Sequential([Flatten(input_shape=(8, 8, 1)), Toucher(path, how), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    history = model.fit(*quadrant_data(32), epochs=3, batch_size=16, verbose=0, checkpoint=path)
    assert len(history.history["loss"]) == 3 and training.read_checkpoint(path)[1]["epoch"] == 3


# ---- --plots never replaces a run's weights unasked -------------------------------------------

def test_plots_into_a_folder_of_an_earlier_run_is_refused_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / viz.WEIGHTS).write_bytes(b"the only copy")
    (run / viz.HISTORY).write_text("{}")
    base = ["--backend", "numpy", "--data-dir", str(tmp_path / "never-read"), "--plots", str(run)]
    assert train_mnist.main(base) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --plots {run} holds another run's weights.npz, history.json already; choose another "
                   f"folder, or pass --overwrite to replace them\n")
    assert (run / viz.WEIGHTS).read_bytes() == b"the only copy"
    args = train_mnist.build_parser().parse_args(base + ["--overwrite"])
    train_mnist.check_arguments(args)              # told to: allowed


# ---- float16 is refused where the layer is made -------------------------------------------------

@pytest.mark.parametrize("make", [lambda: alexnet_mnist(dtype="float16"), lambda: Dense(3, dtype=np.float16),
                                  lambda: BatchNormalization(dtype="int32")])
def test_a_dtype_the_layers_do_not_compute_in_is_refused_at_construction(make):
    with pytest.raises(ValueError, match=r"dtype must be 'float32' \(training\) or 'float64' \(gradient checks\), "
                                         r"got '(float16|int32)'"):
        make()


# ---- hyperparameters that cannot work are refused where they are given ---------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: Adam(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1.0 \(each step divides by 1 - beta_1 \*\* t\)"),
    (lambda: Adam(beta_2=-0.1), r"beta_2 must be in \[0, 1\), got -0.1"),
    (lambda: Adam(epsilon=0), r"epsilon must be a positive finite number, got 0 \(it keeps m / \(sqrt\(v\) \+ "),
    (lambda: Adam(learning_rate="0.001"), r"learning_rate must be a positive finite number, got '0.001'"),
    (lambda: SGD(momentum=True), r"momentum must be in \[0, 1\), got True"),
    (lambda: BatchNormalization(epsilon=float("inf")), "epsilon must be a positive finite number, got inf"),
])
def test_hyperparameters_that_cannot_work_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_numbers_are_hyperparameters_too():
    adam = Adam(learning_rate=np.float32(0.5), beta_1=np.float64(0.5))
    assert (adam.learning_rate, adam.beta_1) == (0.5, 0.5)


# ---- the example: out of memory, a closed pipe ------------------------------------------------------

def test_out_of_memory_is_one_line_and_status_2(monkeypatch, capsys):
    def run(args):                            # what NumPy raises under a small ulimit -v
        raise MemoryError("Unable to allocate 4.00 TiB for an array with shape (1099511627776,) and data type "
                          "float32")

    monkeypatch.setattr(train_mnist, "run", run)
    assert train_mnist.main(["--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory: Unable to allocate 4.00 TiB")
    assert err.endswith("free memory or raise the limit (ulimit -v), or use a smaller --batch-size or --limit\n")


# ---- a checkpoint's lock never outlives its run in a forked child ---------------------------------

def test_a_forked_child_does_not_keep_its_parents_checkpoint_lock(tmp_path):
    """The parent dies (its descriptor closed, as a kill -9 does) while a child it forked runs on:
    the next run takes the lock over (it was refused, naming the dead parent)."""
    path = tmp_path / "run.npz"
    owner = CheckpointOwner(path).__enter__()
    read, write = os.pipe()
    started, running = os.pipe()
    pid = in_child(lambda: os.write(running, b"x") and os.read(read, 1))     # runs until told
    try:
        assert os.read(started, 1) == b"x"            # the child runs (its fork handlers are done)
        os.close(owner.descriptor)                    # the parent's end of the lock, as at its death
        owner.descriptor = None
        with CheckpointOwner(path):
            pass
    finally:
        os.write(write, b"x")
        assert finishes(pid) == 0


def test_an_interrupted_overwrite_does_not_call_the_other_runs_file_its_checkpoint(tmp_path, monkeypatch, capsys):
    path = tmp_path / "old.npz"
    path.write_bytes(b"another run's checkpoint")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mnist, "run", interrupted)
    assert train_mnist.main(["--save", str(path), "--overwrite"]) == 130
    assert capsys.readouterr().err == f"interrupted; no epoch was saved: {path} holds what it held before this run\n"

    def one_epoch_then_interrupted(args):
        save_npz(args.save, {"a": np.ones(3)})
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mnist, "run", one_epoch_then_interrupted)
    assert train_mnist.main(["--save", str(path), "--overwrite"]) == 130
    assert capsys.readouterr().err == f"interrupted; the last complete checkpoint is in {path}\n"


# ---- messages that told something untrue ----------------------------------------------------------

def test_a_finite_float64_input_beyond_float32s_range_is_called_so_not_non_finite():
    x, y = quadrant_data(32)
    x = x.astype(np.float64)
    x[3, 1, 1, 0] = 1e39
    with pytest.warns(RuntimeWarning, match="overflow"), \
            pytest.raises(ValueError, match=r"^bad input: x holds values beyond the range of float32 \(up to "
                                            r"1e\+39\): they would become infinity; scale them down$"):
        compiled().fit(x, y, verbose=0)
    x[4, 1, 1, 0] = np.nan                             # NaN itself is said as such, with its sample
    with pytest.warns(RuntimeWarning, match="overflow"), \
            pytest.raises(ValueError, match=r"x holds 1 non-finite value \(NaN or infinity\), in samples \[4\]"):
        compiled().fit(x, y, verbose=0)


@pytest.mark.parametrize("make, message", [
    (lambda x, y: dict(validation_data=(x, None)), r"^validation_data's y_val is None: give both arrays"),
    (lambda x, y: dict(validation_data=(None, y)), r"^validation_data's x_val is None"),
    (lambda x, y: dict(y=y[:30]), r"^x holds 32 samples but y 30 targets: give one target row per sample$"),
    (lambda x, y: dict(y=np.eye(5, dtype=np.float32)[y.argmax(axis=1)]),
     r"^y has 5 columns \(classes\), the model outputs 3: make it with to_categorical\(labels, 3\)"),
])
def test_mismatched_targets_are_named_for_what_they_are(make, message):
    x, y = quadrant_data(32)
    kwargs = dict(x=x, y=y, verbose=0)
    kwargs.update(make(x, y))
    model = compiled()
    with pytest.raises(ValueError, match=message) as error:
        model.fit(**kwargs)
    assert "to_categorical" not in str(error.value) or "columns" in str(error.value)
    assert model.optimizer.iterations == 0


def test_one_metric_given_as_a_string():
    model = small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics="accuracy")
    with pytest.raises(ValueError, match=r"unknown metrics \['mse'\]"):
        model.compile(metrics="mse")


def test_load_weights_given_a_checkpoint_says_so_in_a_line(tmp_path):
    path = tmp_path / "run.npz"
    compiled().fit(*quadrant_data(32), epochs=1, batch_size=16, verbose=0, checkpoint=path)
    model = compiled()
    with pytest.raises(ValueError) as error:
        model.load_weights(path)
    assert str(error.value) == (f"{path} is a checkpoint, not a weights file: continue its run with "
                                f"fit(resume_from='{path}') (the example: --resume), with the same data and settings")
    many = {f"layer_{i}/kernel": np.zeros(3) for i in range(40)}
    save_npz(tmp_path / "other.npz", many)
    with pytest.raises(ValueError, match=r"other.npz does not fit this model: weights do not match the model: "
                                         r"missing \[.*\] and 1 more, unexpected \[.*\] and 35 more$"):
        model.load_weights(tmp_path / "other.npz")


def test_a_fifo_or_a_dangling_link_given_to_resume_or_load_weights_is_named(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "gone.npz", tmp_path / "link.npz")
    said = {"pipe": f"{tmp_path / 'pipe'} is not a regular file (a FIFO, a socket or a device), so not a .npz file",
            "link.npz": f"{tmp_path / 'link.npz'} is a symbolic link to {tmp_path / 'gone.npz'}, which does not exist"}
    for name, message in said.items():
        assert train_mnist.main(["--backend", "numpy", "--resume", str(tmp_path / name)]) == 2   # never blocks
        assert capsys.readouterr().err.startswith(f"error: {message}")
        with pytest.raises((OSError, ValueError), match=re.escape(message)):
            small_model().load_weights(tmp_path / name)


def test_paths_given_as_bytes_work_as_strings(tmp_path):
    x, y = quadrant_data(32)
    model = compiled()
    checkpoint = os.fsencode(tmp_path / "run.npz")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=checkpoint)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=checkpoint, resume_from=checkpoint)
    model.save_weights(os.fsencode(tmp_path / "w.npz"))
    again = small_model()
    again.load_weights(os.fsencode(tmp_path / "w.npz"))
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


PRINTS_ON = textwrap.dedent("""
    import sys
    import time
    from minialex import train_mnist

    def run(args):                      # the example's output, line after line
        while True:
            print("Epoch 1/5", flush=True)
            time.sleep(0.01)

    train_mnist.run = run
    sys.exit(train_mnist.main([]))
""")


def test_output_into_a_pipe_whose_reader_is_gone_ends_quietly():
    """As `... | head -1`: the reader takes a line and leaves; no 'Broken pipe', no traceback at exit."""
    process = subprocess.Popen([sys.executable, "-c", PRINTS_ON], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "Epoch 1/5\n"
    process.stdout.close()
    assert process.wait(timeout=30) == 141
    assert process.stderr.read() == ""


# ---- the sweep (issue 29, 12): more mistakes a new user makes ----------------------------------------

def test_evaluate_without_targets_says_to_predict():
    with pytest.raises(ValueError, match=r"^evaluate needs the targets y .*; for the outputs alone, use predict\(x\)$"):
        compiled().evaluate(quadrant_data(32)[0], None)


def test_an_optimizer_used_with_another_model_or_before_a_change_is_refused_before_the_step():
    x, y = quadrant_data(32)
    optimizer = Adam(0.01)
    first = small_model()
    first.compile(optimizer=optimizer, loss="categorical_crossentropy")
    first.fit(x, y, verbose=0)
    other = Sequential([Flatten(input_shape=(8, 8, 1)), Dense(3, activation="softmax")])
    other.compile(optimizer=optimizer, loss="categorical_crossentropy")
    before = other.get_weights()
    message = r"the optimizer keeps its state \(m\) for [\d,]+ weights, the model has 195: it was used with another"
    with pytest.raises(ValueError, match=message):
        other.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=message):
        other.train_on_batch(x, y)
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_a_layer_of_one_model_cannot_join_another():
    """Its weights are views of the first model's flat buffer: the second would take them over, and
    training the first would change nothing it computes with (its loss stayed as it was)."""
    shared = Dense(3, activation="softmax")
    first = Sequential([Flatten(input_shape=(8, 8, 1)), shared])
    with pytest.raises(ValueError, match="layer 'dense' belongs to another model already"):
        Sequential([Flatten(input_shape=(8, 8, 1)), shared])
    first.add(Dense(3, activation="softmax"))        # its own model takes more layers
    del first                                         # once that model is gone, another may take the layer
    assert Sequential([Flatten(input_shape=(8, 8, 1)), shared]).layers[1] is shared


@pytest.mark.parametrize("shape", [(0, 8, 1), (-4,), (8.0, 8, 1)])
def test_an_input_shape_of_sizes_below_1_is_refused(shape):
    with pytest.raises(ValueError, match=r"input_shape must be sizes of at least 1"):
        Dense(3, input_shape=shape)


def test_a_fifo_or_device_is_never_replaced_by_a_save(tmp_path, capsys):
    """As root, os.replace would put a regular file where /dev/null was; a FIFO shows it harmlessly."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"it is not a regular file \(a FIFO, a socket or a device such as /dev/null\)"):
        compiled().save_weights(fifo, overwrite=True)
    assert train_mnist.main(["--backend", "numpy", "--save", str(fifo), "--overwrite"]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_paths_with_a_nul_byte_or_a_file_for_a_folder_are_named(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"a path cannot hold a NUL byte"):
        compiled().save_weights(str(tmp_path / "a\0b.npz"))
    with pytest.raises(ValueError, match=r"a path cannot hold a NUL byte"):
        compiled().load_weights(str(tmp_path / "a\0b.npz"))
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path / 'afile'} is a file, not a folder"):
        compiled().save_weights(tmp_path / "afile" / "w.npz")


@pytest.mark.parametrize("value, said", [("", None), ("gpu", "MINIALEX_BACKEND=gpu: unknown backend 'gpu'")])
def test_minialex_backend_empty_is_unset_and_a_bad_one_is_named(monkeypatch, value, said):
    monkeypatch.setenv("MINIALEX_BACKEND", value)
    monkeypatch.setitem(backend._state, "name", None)      # as in a new process: chosen at first use
    if said is None:
        assert backend.get_backend() == "numpy"
    else:
        with pytest.raises(backend.BackendError, match=re.escape(said)):
            backend.get_backend()


def test_a_data_dir_given_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"data_dir {tmp_path / 'mnist'} is not a folder"):
        load_mnist("~/mnist")


def test_viz_given_a_file_says_it_is_one(tmp_path, capsys):
    (tmp_path / "history.json").write_text("{}")
    assert viz.main([str(tmp_path / "history.json")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'history.json'} is a file, not a run folder "
                                       f"(train_mnist.py --plots DIR writes one)\n")


SLEEPS = textwrap.dedent("""
    import sys
    import time
    from minialex import train_mnist

    def run(args):
        print("started", flush=True)
        time.sleep(1.0)
        print("finished", flush=True)

    train_mnist.run = run
    sys.exit(train_mnist.main([]))
""")


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it():
    """A script's `python train_mnist.py &` starts with SIGINT ignored, so that a Ctrl-C meant for
    the foreground spares it; the example took SIGINT back and stopped."""
    process = subprocess.Popen([sys.executable, "-c", SLEEPS], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert process.stdout.readline() == "started\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (0, "finished\n", "")


def test_a_validation_split_that_leaves_nothing_says_what_to_do():
    with pytest.raises(ValueError, match=r"leaves an empty training or validation set for 1 samples: give more samples, "
                                         r"or a validation_split that leaves one on each side \(0 for no validation\)"):
        compiled().fit(*quadrant_data(1), validation_split=0.2, verbose=0)


def test_a_disk_too_full_for_the_lock_file_is_said_before_any_work(tmp_path, monkeypatch):
    from minialex import ownership

    def full(descriptor, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ownership.os, "write", full)
    model = compiled()
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / '.run.npz.lock'}, the lock of {tmp_path / 'run.npz'}: "
                                      r"No space left on device; free some space there, or save elsewhere"):
        model.fit(*quadrant_data(32), verbose=0, checkpoint=tmp_path / "run.npz")
    assert model.optimizer.iterations == 0 and os.listdir(tmp_path) == []


def test_compiling_a_model_without_layers_says_so():
    with pytest.raises(ValueError, match=r"^the model has no layers: add them before compile"):
        Sequential().compile()
