"""Saving and loading arrays as ``.npz``: atomically, without pickle, with clear errors.

A file is first written beside its destination under a temporary name and renamed over it only
once complete, so a crash or a full disk never leaves a half-written weights file or checkpoint.
"""
from __future__ import annotations

import json
import os
import uuid
import zipfile

import numpy

META_KEY = "__meta__"


def save_npz(path, arrays: dict, meta: dict | None = None) -> None:
    """Write ``arrays`` (name -> array on any backend) and optional JSON ``meta`` to ``path`` atomically."""
    from .backend import to_numpy

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path}: folder {folder} does not exist")
    payload = {name: to_numpy(array) for name, array in arrays.items()}
    if meta is not None:
        payload[META_KEY] = numpy.array(json.dumps(meta))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            numpy.savez(file, **payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_npz(path) -> tuple[dict, dict | None]:
    """Read a file written by ``save_npz``: (name -> NumPy array, meta or None)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None
    meta = arrays.pop(META_KEY, None)
    return arrays, (json.loads(str(meta)) if meta is not None else None)
