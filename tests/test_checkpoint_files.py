"""Where a run's files go (issue 21): one writer per checkpoint, links written through, names that
fit the file system, a full disk named, a checkpoint never replaced by weights unasked.

Small models on 8x8 images; one subprocess, for a run that holds a checkpoint while another starts.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minialex import serialization, train_mnist, training
from minialex.layers import Layer
from minialex.models import Sequential
from minialex.serialization import load_npz, save_npz

from .test_models import quadrant_data
from .test_safety import assert_unchanged, compiled, snapshot, temporaries

ROOT = Path(__file__).resolve().parents[1]

# ---- one writer per checkpoint ---------------------------------------------------------------

A_LONG_RUN = textwrap.dedent("""
    import sys
    from minialex import random
    from minialex.optimizers import Adam
    from tests.test_models import quadrant_data, small_model

    random.set_seed(0)
    model = small_model()
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(*quadrant_data(32), epochs=100_000, batch_size=16, verbose=2, checkpoint=sys.argv[1])
""")


def test_a_second_run_on_a_checkpoint_is_refused_naming_the_first(tmp_path, capsys):
    """The issue's two runs on one --save, and its run paused (Ctrl-Z) while another writes."""
    path = tmp_path / "run.npz"
    first = subprocess.Popen([sys.executable, "-c", A_LONG_RUN, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        while not first.stdout.readline().startswith("Epoch 2/"):   # epoch 1 is saved
            assert first.poll() is None, first.stderr.read()
        first.send_signal(signal.SIGSTOP)
        saved = path.read_bytes()
        x, y = quadrant_data(32)
        holder = rf"is being written by another run \(process {first.pid} on {socket.gethostname()}\)"
        for kwargs in (dict(overwrite=True), dict(resume_from=path)):
            model = compiled()
            before = snapshot(model)
            with pytest.raises(OSError, match=holder):
                model.fit(x, y, epochs=50, batch_size=16, verbose=0, checkpoint=path, **kwargs)
            assert_unchanged(model, before)                     # refused before the first step
        base = ["--backend", "numpy", "--data-dir", str(tmp_path / "never-read")]
        for flags in (["--save", str(path), "--overwrite"], ["--resume", str(path)]):
            assert train_mnist.main(base + flags) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"(process {first.pid} on " in err[0]
        assert path.read_bytes() == saved
    finally:
        first.kill()                                 # as kill -9: its lock file stays, its lock goes
        first.communicate(timeout=30)
    assert (tmp_path / ".run.npz.lock").exists()
    epochs = training.read_checkpoint(path)[1]["epoch"]
    resumed = compiled().fit(*quadrant_data(32), epochs=epochs + 1, batch_size=16, verbose=0, checkpoint=path,
                             resume_from=path)
    assert len(resumed.history["loss"]) == epochs + 1
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]    # the next run took the lock over, and removed it


class OtherWriter(Layer):
    """Passes its input through; on its ``at``-th training forward, a writer that takes no lock
    replaces ``path`` (a run on a file system without locks, a copy by hand)."""

    def __init__(self, path, at, **kwargs):
        super().__init__(**kwargs)
        self.path, self.at, self.calls = path, at, 0

    def forward(self, x, training=False):
        if training:
            self.calls += 1
            if self.calls == self.at:
                save_npz(self.path, {"theirs": np.ones(3)})
        return x

    def backward(self, dout):
        return dout


def meddled_model(path, at):
    from minialex import random
    from minialex.layers import Dense, Flatten

    random.set_seed(0)
    model = Sequential([Flatten(input_shape=(8, 8, 1)), OtherWriter(path, at), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


@pytest.mark.parametrize("resumed", [False, True])
def test_a_checkpoint_another_writer_replaced_is_not_saved_over(tmp_path, resumed):
    """Batch size 8 on 32 samples: 4 steps an epoch; the other writer comes in epoch 2."""
    path = tmp_path / "run.npz"
    x, y = quadrant_data(32)
    if resumed:             # the paused run: resumed, then another writer saves a newer file
        meddled_model(path, at=None).fit(x, y, epochs=1, batch_size=8, verbose=0, checkpoint=path)
    model = meddled_model(path, at=1 if resumed else 5)
    with pytest.raises(OSError, match=r"run.npz was replaced by another writer since this run last saved or "
                                      r"resumed it; epoch 2 was not saved over it"):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, checkpoint=path, resume_from=path if resumed else None)
    assert list(load_npz(path)[0]) == ["theirs"]
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]


# ---- links, long names, empty paths ----------------------------------------------------------

def test_a_checkpoint_reached_through_a_link_is_written_through_it(tmp_path):
    (tmp_path / "run").mkdir()
    target, link = tmp_path / "run" / "ck.npz", tmp_path / "latest.npz"
    x, y = quadrant_data(32)
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=target)
    link.symlink_to(Path("run") / "ck.npz")
    compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=link, resume_from=link)
    assert link.is_symlink() and link.resolve() == target
    assert training.read_checkpoint(target)[1]["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "run"] and os.listdir(tmp_path / "run") == ["ck.npz"]


def name_that_leaves_no_room(folder, suffix=".npz"):
    """A valid name whose temporary file (.NAME.HOST.PID-RANDOM.tmp) is over the file system's limit."""
    limit = os.pathconf(folder, "PC_NAME_MAX")
    return Path(folder) / ("n" * (limit - 8 - len(suffix)) + suffix)


def test_a_name_too_long_for_its_temporary_file_is_refused_before_any_work(tmp_path, capsys):
    path = name_that_leaves_no_room(tmp_path)
    path.write_bytes(b"")
    path.unlink()                                    # the name itself is valid
    x, y = quadrant_data(32)
    model = compiled()
    before = snapshot(model)
    too_long = r"the name is too long for this file system \(at most \d+ bytes a name\): its temporary file"
    with pytest.raises(ValueError, match=too_long):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match=too_long):
        model.save_weights(path)
    assert train_mnist.main(["--backend", "numpy", "--data-dir", str(tmp_path / "never-read"),
                             "--save", str(path)]) == 2
    assert "the name is too long" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_an_empty_path_is_refused(tmp_path):
    model = compiled()
    before = snapshot(model)
    with pytest.raises(ValueError, match="cannot save a checkpoint to an empty path"):
        model.fit(*quadrant_data(32), epochs=1, verbose=0, checkpoint="")
    with pytest.raises(FileNotFoundError, match="the path is empty"):
        model.fit(*quadrant_data(32), epochs=1, verbose=0, resume_from="")
    with pytest.raises(ValueError, match="cannot save to an empty path"):
        model.save_weights("")
    assert_unchanged(model, before)


# ---- what a write replaces, and a full disk -----------------------------------------------------

def test_save_weights_replaces_weights_but_not_a_checkpoint_unless_told(tmp_path):
    x, y = quadrant_data(32)
    path = tmp_path / "run.npz"
    model = compiled()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path)
    saved = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"run.npz holds a checkpoint of 2 epochs; save_weights would replace "
                                              r"it with the weights alone: choose another path, or pass "
                                              r"overwrite=True"):
        model.save_weights(path)
    assert path.read_bytes() == saved
    model.save_weights(path, overwrite=True)
    model.save_weights(path)                          # weights over weights: as Keras, no question
    assert load_npz(path)[1]["format"] == "minialex-weights"
    other = tmp_path / "notes.npz"
    other.write_text("not minialex's")
    with pytest.raises(FileExistsError, match="notes.npz holds a file that minialex did not write"):
        model.save_weights(other)
    assert other.read_text() == "not minialex's"


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    x, y = quadrant_data(32)
    path = tmp_path / "run.npz"
    compiled().fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=path)
    saved = path.read_bytes()

    def disk_full(file, **arrays):
        file.write(b"PK" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(serialization.numpy, "savez", disk_full)
    with pytest.raises(OSError, match=rf"\[Errno {errno.ENOSPC}\] cannot write {path}: No space left on device; "
                                      r"the file there is as it was"):
        compiled().fit(x, y, epochs=2, batch_size=16, verbose=0, checkpoint=path, resume_from=path)
    assert path.read_bytes() == saved and temporaries(tmp_path) == []
    monkeypatch.setattr(train_mnist, "run", lambda args: save_npz(args.save, {"a": np.ones(3)}))
    assert train_mnist.main(["--save", str(path), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: [Errno {errno.ENOSPC}] cannot write {path}: No space left on device; the file there is "
                   f"as it was"]
    assert path.read_bytes() == saved and temporaries(tmp_path) == []
