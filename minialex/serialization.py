"""Saving and loading arrays as ``.npz``: atomically, without pickle, with clear errors.

A file is first written beside its destination under a temporary name and renamed over it only
once complete, so a crash or a full disk never leaves a half-written weights file or checkpoint.

A temporary file's name says who wrote it: ``.<name>.<host>.<pid>-<random>.tmp`` (downloads use
``.part``), where ``<host>`` also names the writer's PID namespace on Linux (``-ns<inode>``: a
container has its own, in which the same PID means another process). Its writer holds a lock on
it (``flock``) from its creation until it is renamed into place or removed. An interrupted write
removes its own; one that a kill -9 or a power cut left behind is removed by the next write or
load of the same destination, once its writer is known to be gone: nobody holds its lock, and its
process no longer runs here (same host, same PID namespace) or, written elsewhere (another host,
another container, or on Windows), it is untouched for ``STALE_SECONDS``.

A destination is checked before anything is written: its folder, and that every name the write
creates there (the temporary file's is the longest) fits the file system's name limit. A symbolic
link is written through: its target is replaced, the link stays a link.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import uuid
import zipfile
from contextlib import contextmanager

import numpy

try:
    import fcntl
except ImportError:     # Windows: no flock; the rules by name and age remain
    fcntl = None

from .backend import to_numpy

META_KEY = "__meta__"
WEIGHTS_FORMAT = "minialex-weights"          # the "format" in the metadata of each kind of file
CHECKPOINT_FORMAT = "minialex-checkpoint"
STALE_SECONDS = 600   # a temporary file from another host untouched this long is a dead writer's
NPY_MAGIC = b"\x93NUMPY"


def temporary_path(path, suffix=".tmp") -> str:
    """A fresh temporary name beside ``path``: hidden, and naming this host and process."""
    path = os.fsdecode(path)
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{WRITER_HOST}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def remove_stale_temporaries(path, suffix=".tmp", legacy=None) -> list[str]:
    """Remove the temporary files of ``path`` that writers now gone left behind; return their paths.

    ``legacy``: a regular expression for names older versions used (removed once ``STALE_SECONDS`` old).
    """
    folder, name = os.path.split(os.path.abspath(os.fsdecode(path)))
    pattern = re.compile(rf"\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)-[0-9a-f]+{re.escape(suffix)}")
    old = re.compile(legacy) if legacy else None
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match is None and not (old and old.fullmatch(entry)):
            continue
        full = os.path.join(folder, entry)
        try:
            if _held(full):
                continue   # its writer still runs, whatever its name says
            if match is not None and match["host"] == WRITER_HOST and sys.platform != "win32":
                stale = not _running(int(match["pid"]))
            else:
                stale = time.time() - os.stat(full).st_mtime > STALE_SECONDS
            if stale:
                os.unlink(full)
                removed.append(full)
        except OSError:
            continue   # gone already, or not ours to remove
    return removed


def _held(path) -> bool:
    """True when a process (in any PID namespace of this machine) holds the lock on the file at ``path``."""
    if fcntl is None:
        return False
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:       # no locks on this file system: the rules by name and age decide
        return False
    finally:
        os.close(descriptor)
    return False


@contextmanager
def held_temporary(path, suffix=".tmp"):
    """Create a new temporary file beside ``path`` (``temporary_path``) and yield its name; this
    process holds its lock (``flock``) until the block ends, so that no cleanup takes it for a dead
    writer's. Whatever is left under the name when the block ends is removed."""
    temporary = temporary_path(path, suffix)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:    # no locks here, or a cleanup looking at it this instant: the name rules protect it
                pass
        yield temporary
    finally:
        os.close(descriptor)
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:      # PermissionError: it runs, as another user
        return True
    return True


def _pid_namespace() -> str:
    """'-ns<inode>' of this process's PID namespace where Linux says it, else ''."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except (AttributeError, OSError):
        return ""
    inode = re.fullmatch(r"pid:\[(\d+)\]", link)
    return f"-ns{inode[1]}" if inode else ""


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
WRITER_HOST = _HOST + _pid_namespace()     # a temporary file's <host>: a PID means a process only within it
LEGACY_TMP = r"\.{name}\.[0-9a-f]{{32}}\.tmp"   # before the names said who wrote them


def check_destination(path, what="save", also=None) -> str:
    """Raise a clear error unless ``path`` can be written: a path is given, its folder exists and is
    writable, it is no folder, and the names of the files written beside it fit the file system's
    limit on a name's length: the temporary file's, and ``also`` ({what it is: its name}) for other
    files the caller creates there."""
    path = os.fsdecode(path)      # a str, bytes or a pathlib.Path
    if not path:
        raise ValueError(f"cannot {what} to an empty path: name a file")
    if "\0" in path:
        raise ValueError(f"cannot {what} to {path!r}: a path cannot hold a NUL byte")
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"cannot {what} to {path}: {folder} is a file, not a folder")
        raise FileNotFoundError(f"cannot {what} to {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot {what} to {path}: it is a folder; name a file inside it")
    if os.path.exists(target) and not os.path.isfile(target):   # renaming over it would replace the node itself
        raise ValueError(f"cannot {what} to {path}: it is not a regular file (a FIFO, a socket or a device such "
                         f"as /dev/null); name a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot {what} to {path}: folder {folder} is not writable")
    limit = _name_limit(folder)
    names = {"its temporary file (.NAME.HOST.PID-RANDOM.tmp)": os.path.basename(temporary_path(target)), **(also or {})}
    for label, name in names.items():
        excess = len(os.fsencode(name)) - limit
        if excess > 0:
            raise ValueError(f"cannot {what} to {path}: the name is too long for this file system (at most {limit} "
                             f"bytes a name): {label} would take {limit + excess}; shorten the name by {excess} "
                             f"bytes or more")
    return path


def _name_limit(folder) -> int:
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):   # no pathconf (Windows): its usual limit
        return 255
    return limit if limit > 0 else sys.maxsize      # -1: the file system sets none


@contextmanager
def atomic_write(path):
    """Yield the name of a new, empty temporary file beside ``path`` (``held_temporary``) to write the
    whole file under (open it with "wb"); when the block ends without an error, the file is synced
    to disk and renamed over ``path`` (over a link's target: the link stays); on any error (Ctrl-C
    and SIGTERM included) it is removed, ``path`` stays as it was, and an OSError (a full disk)
    names ``path``."""
    path = check_destination(path)
    target = os.path.realpath(path)
    _clean(target)
    try:
        with held_temporary(target) as temporary:
            yield temporary
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
    except OSError as exc:
        message = f"cannot write {path}: {exc.strerror or exc}; the file there is as it was"
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc


def describe(path) -> tuple[str | None, str]:
    """(format, what it holds in words) of the existing file at ``path``, for a message about
    replacing it: ('minialex-checkpoint', 'a checkpoint of 3 epochs'), (None, 'a file that ...')."""
    try:
        _, meta = load_npz(path)
    except (OSError, ValueError):
        meta = None
    kind = (meta or {}).get("format")
    if kind == CHECKPOINT_FORMAT:
        return kind, f"a checkpoint of {meta.get('epoch')} epochs"
    if kind == WEIGHTS_FORMAT:
        return kind, "a minialex weights file"
    return None, "a file that minialex did not write"


def save_npz(path, arrays: dict, meta: dict | None = None) -> None:
    """Write ``arrays`` (name -> array on any backend) and optional JSON ``meta`` to ``path`` atomically."""
    payload = {name: to_numpy(array) for name, array in arrays.items()}
    if meta is not None:
        payload[META_KEY] = numpy.array(json.dumps(meta))
    with atomic_write(path) as temporary, open(temporary, "wb") as file:
        numpy.savez(file, **payload)


def load_npz(path) -> tuple[dict, dict | None]:
    """Read a file written by ``save_npz``: (name -> NumPy array, meta or None)."""
    path = check_readable(path, "a .npz file")
    _clean(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            kind = "a .npy file (one array)" if file.read(len(NPY_MAGIC)) == NPY_MAGIC else "not a zip archive"
        raise ValueError(f"{path} is not a readable .npz file ({kind})")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None
    meta = arrays.pop(META_KEY, None)
    if meta is None:
        return arrays, None
    try:
        meta = json.loads(str(meta))
    except ValueError as exc:
        raise ValueError(f"{path} has unreadable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has unreadable metadata (not a JSON object)")
    return arrays, meta


def check_readable(path, what="a file") -> str:
    """``path`` as a str, once known to name a regular file that can be read; else an error saying what
    is there instead (``what``: what was expected, for the message). A FIFO or a device is refused
    unread: reading one may never end."""
    path = os.fsdecode(path)
    if not path:
        raise FileNotFoundError("no file named: the path is empty")
    if "\0" in path:
        raise ValueError(f"{path!r} cannot name a file: a path cannot hold a NUL byte")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not {what}")
    if not os.path.exists(path):
        if os.path.islink(path):
            raise FileNotFoundError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist")
        raise FileNotFoundError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a regular file (a FIFO, a socket or a device), so not {what}; "
                         f"give the file itself")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path} cannot be read (permission denied)")
    return path


def _clean(path):
    name = re.escape(os.path.basename(os.path.abspath(path)))
    remove_stale_temporaries(path, ".tmp", legacy=LEGACY_TMP.format(name=name))
