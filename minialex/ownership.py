"""One writer per checkpoint: the run that holds its lock, and finds the file as it left it.

A run that saves checkpoints to PATH holds an exclusive lock (``flock``) on ``.NAME.lock`` beside
it (beside a link's target) from before its first step to its end. A second run on the same file
is refused before it trains, naming the process and host that hold it (the lock file says). The
lock goes with its process (a child it forks does not keep it): what a kill -9 leaves is taken
over by the next run, and removed when that run ends.

Where there are no locks (Windows) or they are not honoured (some network file systems), a second
rule still holds: before each save, the run checks that the file is still the one it last wrote
or resumed, and refuses to replace one that another writer changed since. The file is known by
its content (a SHA-256 digest), read again only when its device, inode, size or modification
time changed: a file only touched (``touch``, a backup tool setting times) is still the run's.
"""
from __future__ import annotations

import hashlib
import os
import socket
import stat
import weakref

try:
    import fcntl
except ImportError:     # Windows: no flock; the check before each save remains
    fcntl = None


class CheckpointInUseError(OSError):
    """Another run writes this checkpoint, or wrote it since this run last saved or resumed it."""


def lock_path(path) -> str:
    """The lock file of the checkpoint at ``path``: ``.NAME.lock`` beside it (beside a link's target)."""
    folder, name = os.path.split(os.path.realpath(os.fsdecode(path)))
    return os.path.join(folder, f".{name}.lock")


class CheckpointOwner:
    """Within the block, this process holds ``path``: ``check()`` before each save, ``saved()`` after."""

    def __init__(self, path):
        self.path, self.lock = os.fsdecode(path), lock_path(path)
        self.descriptor = None
        self.known = self.known_content = None

    def __enter__(self):
        if fcntl is not None:
            self.descriptor = self._lock()
            _held.add(self)
        self.saved()
        return self

    def __exit__(self, *exc_info):
        _held.discard(self)
        if self.descriptor is not None:
            try:
                os.unlink(self.lock)         # still locked: a run that opened it meanwhile sees it gone
            except FileNotFoundError:
                pass
            os.close(self.descriptor)
            self.descriptor = None
        return False

    def _lock(self):
        while True:
            descriptor = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:      # another process holds it
                holder = os.read(descriptor, 200).decode(errors="replace").split()
                os.close(descriptor)
                who = f"process {holder[0]} on {holder[1]}" if len(holder) == 2 else "its process id not yet written"
                raise CheckpointInUseError(f"{self.path} is being written by another run ({who}); wait for it "
                                           f"to end, or save this run's checkpoints elsewhere") from None
            except OSError:                  # no locks on this file system: the check before each save remains
                os.close(descriptor)
                return None
            try:
                if os.path.samestat(os.fstat(descriptor), os.stat(self.lock)):
                    break                    # else the run before removed it as it ended: lock the new one
            except FileNotFoundError:
                pass
            os.close(descriptor)
        try:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError as exc:               # a full disk: said before any work, naming the file
            os.unlink(self.lock)
            os.close(descriptor)
            raise OSError(exc.errno, f"cannot write {self.lock}, the lock of {self.path}: {exc.strerror}; "
                                     f"free some space there, or save elsewhere") from None
        return descriptor

    def check(self, epoch):
        """Raise before saving ``epoch`` unless the file is absent or holds what this run last wrote or resumed."""
        now = _identity(self.path)
        if now is None or now == self.known:
            return
        if self.known is not None and now[2] == self.known[2] and _content(self.path) == self.known_content:
            self.known = now         # touched, not changed
            return
        raise CheckpointInUseError(f"{self.path} was replaced by another writer since this run last saved or "
                                   f"resumed it; epoch {epoch} was not saved over it: save this run's "
                                   f"checkpoints elsewhere")

    def saved(self):
        self.known, self.known_content = _identity(self.path), _content(self.path)


def _release_in_child():
    """A forked child does not hold its parent's checkpoints: it closes its copies of their lock files'
    descriptors (the parent's stay locked), so that a lock never outlives the run that took it."""
    for owner in list(_held):
        os.close(owner.descriptor)
        owner.descriptor = None
    _held.clear()


_held: weakref.WeakSet = weakref.WeakSet()     # the owners whose locks this process holds
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_in_child)


def _identity(path):
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _content(path):
    """The SHA-256 digest of the regular file at ``path``, or None where there is none (a FIFO is never read)."""
    digest = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()
