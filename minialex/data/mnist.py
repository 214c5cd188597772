"""MNIST and Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays, as in Keras.

    (x_train, y_train), (x_test, y_test) = load_mnist()
    # x_train (60000, 28, 28), y_train (60000,), x_test (10000, 28, 28), y_test (10000,)

Each dataset is four standard files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or gzip (``.gz``).
The first of these sources that applies wins:

1. ``data_dir`` if given, else ``$MINIALEX_DATA_DIR``: a folder holding the four files, directly
   or in a subfolder named after the dataset (``mnist/``, ``fashion-mnist/``). A folder named
   this way must hold all four; a missing file is an error, never a reason to download.
2. The cache, ``default_cache_dir() / "mnist"`` (or ``/ "fashion-mnist"``), if complete.
3. Keras's own download, if complete and sound: ``mnist.npz`` or the folder ``fashion-mnist/`` in
   ``default_keras_dir()`` (``~/.keras/datasets``); a damaged one is left as it is and passed over.
4. A download into the cache of each file it lacks, from public mirrors tried in turn (``fetch``).

Every file is verified, whatever its source. MNIST: by the SHA-256 of its decompressed bytes
(mirrors re-compress, so the ``.gz`` bytes differ from mirror to mirror while the content does
not). Fashion-MNIST: by structure only, because no checksum of its decompressed files is known
to this module (its README publishes MD5s of the ``.gz`` files, which re-compression changes):
each file must be an IDX file of the expected shape with exactly that much data, labels must lie
in 0..9, and the files must not be MNIST's, copied into the wrong folder.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy
from tqdm import tqdm

from ..serialization import held_temporary, remove_stale_temporaries
from .idx import decompress, format_idx, parse_idx

__all__ = ["DatasetUnavailableError", "default_cache_dir", "default_keras_dir", "fetch",
           "load_fashion_mnist", "load_mnist"]

log = logging.getLogger(__name__)

FILES = {  # standard file name (without .gz) -> the shape of its array
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
NPZ_KEYS = dict(zip(("x_train", "y_train", "x_test", "y_test"), FILES))  # Keras key -> file
NUM_CLASSES = 10
DEFAULT_TIMEOUT = 30.0  # seconds per request
RETRY_DELAYS = (0.5, 1.0)  # pauses before the second and third try of a mirror
CHUNK_SIZE = 1 << 16
LOCAL_HINT = ("pass --data-dir (data_dir=...) or set MINIALEX_DATA_DIR to a folder holding the four files "
              + ", ".join(FILES) + " (plain or .gz)")
OFFLINE_HINT = "connect to the network, or " + LOCAL_HINT
CACHE_HINT = ("set MINIALEX_CACHE_DIR to a folder you can write, with room for the files (downloads go there), or "
              + LOCAL_HINT)


class DatasetUnavailableError(RuntimeError):
    """No local source holds the dataset and no mirror could supply it."""


class _DownloadError(Exception):
    """One failed try of one URL; ``transient`` when trying again may help."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class _Unwritable(Exception):
    """The download's file cannot be written (a full disk): ``error`` is the OSError, passed on as it is."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Dataset:
    """Where one dataset's files live and how they are checked."""

    name: str                  # "mnist": the cache subfolder, and the name fetch() takes
    title: str                 # "MNIST", for messages
    mirrors: tuple[str, ...]   # base URLs, each serving the four files as <file>.gz
    sha256: dict | None        # file -> SHA-256 of its decompressed bytes; None: structure only
    keras_name: str            # Keras's copy in its datasets folder: an .npz, or a folder of .gz


MNIST = Dataset(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",  # the original home; it answers 403 nowadays
    ),
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    keras_name="mnist.npz",
)
FASHION_MNIST = Dataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    sha256=None,  # see the module docstring: verified by structure only
    keras_name="fashion-mnist",
)
DATASETS = {dataset.name: dataset for dataset in (MNIST, FASHION_MNIST)}


def load_mnist(data_dir=None, *, cache_dir=None, keras_dir=None, mirrors=None,
               timeout=DEFAULT_TIMEOUT, retry_delays=RETRY_DELAYS, progress=True):
    """MNIST digits as ``(x_train, y_train), (x_test, y_test)``: uint8, shaped as in Keras.

    ``data_dir`` names a folder holding the four files (else ``$MINIALEX_DATA_DIR``);
    ``cache_dir`` and ``keras_dir`` replace ``default_cache_dir()`` and ``default_keras_dir()``;
    ``mirrors``, ``timeout``, ``retry_delays`` and ``progress`` go to ``fetch`` for a download.
    The module docstring gives the order of the sources.
    """
    return _load(MNIST, data_dir, cache_dir, keras_dir, dict(
        mirrors=mirrors, timeout=timeout, retry_delays=retry_delays, progress=progress))


def load_fashion_mnist(data_dir=None, *, cache_dir=None, keras_dir=None, mirrors=None,
                       timeout=DEFAULT_TIMEOUT, retry_delays=RETRY_DELAYS, progress=True):
    """Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``; arguments as ``load_mnist``."""
    return _load(FASHION_MNIST, data_dir, cache_dir, keras_dir, dict(
        mirrors=mirrors, timeout=timeout, retry_delays=retry_delays, progress=progress))


def default_cache_dir() -> Path:
    """``$MINIALEX_CACHE_DIR``, else ``$XDG_CACHE_HOME/minialex``, else the user's cache folder.

    That is ``~/.cache/minialex`` on Linux, ``~/Library/Caches/minialex`` on macOS and
    ``%LOCALAPPDATA%\\minialex`` on Windows.
    """
    if os.environ.get("MINIALEX_CACHE_DIR"):
        return Path(os.environ["MINIALEX_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "minialex"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return Path(base) / "minialex"


def default_keras_dir() -> Path:
    """Where Keras keeps its datasets: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "datasets"


def fetch(filename: str, folder, *, dataset: str = "mnist", mirrors=None,
          timeout: float = DEFAULT_TIMEOUT, retry_delays=RETRY_DELAYS, progress: bool = True) -> Path:
    """Download one standard file of ``dataset`` into ``folder``; return its path there.

    ``filename`` is a standard name without ``.gz``; the file lands as ``<filename>.gz``. Mirrors
    are tried in turn (``mirrors``, a list of base URLs, replaces the dataset's own). A mirror is
    tried again after each pause in ``retry_delays`` while its failure may pass (a timeout, a lost
    connection, a truncated body, an HTTP 5xx); an HTTP 4xx, a host name that does not resolve
    and bad content move on at once. Each request waits at most ``timeout`` seconds. A progress
    bar shows on a terminal unless ``progress`` is false. The data go to a temporary file in
    ``folder``, renamed into place only once verified, so a failed download leaves nothing
    behind. When every mirror fails, raises ``DatasetUnavailableError`` saying why each failed.
    """
    spec = _dataset(dataset)
    if filename not in FILES:
        raise ValueError(f"unknown file {filename!r}; choose one of {', '.join(FILES)}")
    target = Path(folder) / f"{filename}.gz"
    if target.parent.exists() and not target.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{target.parent} is a file where the download's folder goes; "
                                                f"move it away")
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{target} is a folder where the downloaded file goes; move it away")
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in spec.mirrors if mirrors is None else mirrors:
        url = f"{mirror.rstrip('/')}/{filename}.gz"
        try:
            _download_with_retries(spec, filename, url, target, timeout, retry_delays, progress)
            return target
        except (_DownloadError, ValueError) as exc:  # ValueError: the content failed verification
            failures.append(str(exc))
            log.warning("download failed: %s", exc)
    tried = "\n  ".join(failures) if failures else "(no mirrors to try)"
    raise DatasetUnavailableError(f"could not download {spec.title} {filename}:\n  {tried}")


# --------------------------------------------------------------------------------------------
# Sources


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _load(dataset: Dataset, data_dir, cache_dir, keras_dir, download: dict):
    """Try the sources in the module docstring's order; ``download`` holds fetch's options."""
    if data_dir is not None:     # "~/mnist" in quotes reaches here unexpanded: expanded as the shell would
        return _load_local(dataset, Path(data_dir).expanduser(), "data_dir")
    if os.environ.get("MINIALEX_DATA_DIR"):
        return _load_local(dataset, Path(os.environ["MINIALEX_DATA_DIR"]).expanduser(), "$MINIALEX_DATA_DIR")

    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()) / dataset.name
    for filename in FILES:
        _remove_stale_parts(cache / f"{filename}.gz", filename)
    found, missing = _find_files(cache)
    arrays, damaged = {}, {}     # a cached file that fails verification is fetched again, not fatal
    for filename, path in found.items():
        try:
            arrays[filename] = _verified(dataset, filename, path.read_bytes(), str(path))
        except ValueError as exc:
            damaged[filename] = (path, str(exc))
    if not missing and not damaged:
        return _splits([arrays[name] for name in FILES])
    keras = Path(keras_dir if keras_dir is not None else default_keras_dir()) / dataset.keras_name
    keras_state = "incomplete or absent"
    try:
        from_keras = _load_keras(dataset, keras)
    except ValueError as exc:     # Keras's copy is damaged: not ours to change; a download may still work
        from_keras, keras_state = None, f"unusable: {exc}"
    if from_keras is not None:
        return from_keras
    try:
        for filename in [name for name in FILES if name in missing or name in damaged]:
            target = fetch(filename, cache, dataset=dataset.name, **download)
            arrays[filename] = _verified(dataset, filename, target.read_bytes(), str(target))
            if filename in damaged and damaged[filename][0] != target:
                damaged[filename][0].unlink()     # the bad plain copy would be found before the good .gz
    except (DatasetUnavailableError, OSError) as exc:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [reason for _, reason in damaged.values()]
        fix = OFFLINE_HINT
        if isinstance(exc, OSError):   # the cache cannot take the files: not writable, full, in the way
            where = f": {exc.filename}" if exc.filename else ""
            exc, fix = f"The cache cannot take a download ({exc.strerror or exc}{where}).", CACHE_HINT
        raise DatasetUnavailableError(
            f"{dataset.title} is not on this machine and could not be downloaded. Looked in the cache "
            f"{cache} ({'; '.join(problems)}) and for Keras's copy {keras} ({keras_state}).\n"
            f"{exc}\nTo fix: {fix}.") from None
    return _splits([arrays[name] for name in FILES])


def _load_local(dataset: Dataset, root: Path, origin: str):
    """The dataset from a folder the user named (``origin`` says how); all four files must be there."""
    folder = root / dataset.name if (root / dataset.name).is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"{origin} {folder} is not a folder")
    found, missing = _find_files(folder)
    if missing:
        raise FileNotFoundError(
            f"{origin} {folder} lacks {dataset.title} files: {', '.join(missing)} (plain or .gz); "
            f"it must hold all four of {', '.join(FILES)}")
    return _read_files(dataset, found)


def _load_keras(dataset: Dataset, location: Path):
    """The dataset from Keras's copy at ``location`` (an .npz or a folder), or None if incomplete."""
    if location.suffix == ".npz":
        return _read_npz(dataset, location) if location.is_file() else None
    found, missing = _find_files(location)
    return None if missing else _read_files(dataset, found)


def _find_files(folder: Path) -> tuple[dict, list]:
    """(standard name -> path of its plain or .gz file in ``folder``, names with no file there)."""
    found, missing = {}, []
    for filename in FILES:
        present = [path for path in (folder / filename, folder / f"{filename}.gz") if path.is_file()]
        if present:
            found[filename] = present[0]
        else:
            missing.append(filename)
    return found, missing


def _read_files(dataset: Dataset, paths: dict):
    """Read and verify the four files in ``paths`` (standard name -> path)."""
    return _splits([_verified(dataset, name, paths[name].read_bytes(), str(paths[name])) for name in FILES])


def _read_npz(dataset: Dataset, path: Path):
    """The four arrays of a Keras ``mnist.npz``, each verified as the IDX file it came from."""
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in NPZ_KEYS if key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None
    if len(stored) < len(NPZ_KEYS):
        absent = [key for key in NPZ_KEYS if key not in stored]
        raise ValueError(f"{path} lacks the arrays {', '.join(absent)}")
    arrays = []
    for key, filename in NPZ_KEYS.items():
        if stored[key].dtype != numpy.uint8:
            raise ValueError(f"{path}: {key} has dtype {stored[key].dtype}, expected uint8")
        arrays.append(_verified(dataset, filename, format_idx(stored[key]), f"{path}[{key}]"))
    return _splits(arrays)


def _splits(arrays: list):
    """[x_train, y_train, x_test, y_test] -> ((x_train, y_train), (x_test, y_test))."""
    x_train, y_train, x_test, y_test = arrays
    return (x_train, y_train), (x_test, y_test)


def _verified(dataset: Dataset, filename: str, data: bytes, source: str) -> numpy.ndarray:
    """The array in ``data`` (``filename``'s IDX bytes, plain or gzip) once verified; else ValueError."""
    data = decompress(data, source)
    digest = hashlib.sha256(data).hexdigest()
    if dataset.sha256 is not None and digest != dataset.sha256[filename]:
        raise ValueError(f"{source}: checksum mismatch for {filename}: the SHA-256 of the decompressed "
                         f"data is {digest}, expected {dataset.sha256[filename]}")
    if dataset.sha256 is None and digest == MNIST.sha256[filename]:
        raise ValueError(f"{source}: this is MNIST's {filename}, not {dataset.title}'s")
    array = parse_idx(data, source)
    if array.shape != FILES[filename]:
        raise ValueError(f"{source}: shape {array.shape}, expected {FILES[filename]} for {filename}")
    if "labels" in filename and array.max() >= NUM_CLASSES:
        raise ValueError(f"{source}: labels must lie in 0..{NUM_CLASSES - 1}, found {array.max()}")
    return array


# --------------------------------------------------------------------------------------------
# Downloads


def _download_with_retries(dataset, filename, url, target, timeout, retry_delays, progress):
    """``_download``, tried again after each pause in ``retry_delays`` while the failure is transient."""
    attempts = 1 + len(retry_delays)
    for delay in (*retry_delays, None):
        try:
            return _download(dataset, filename, url, target, timeout, progress)
        except _DownloadError as exc:
            if not exc.transient or attempts == 1:
                raise
            if delay is None:
                raise _DownloadError(f"{exc} (tried {attempts} times)", transient=True) from None
            log.info("%s; trying again in %g s", exc, delay)
            time.sleep(delay)


def _remove_stale_parts(target: Path, filename: str):
    """Remove what downloads to ``target`` that were killed left behind (their writers are gone)."""
    remove_stale_temporaries(target, ".part", legacy=rf"\.{re.escape(filename)}-[A-Za-z0-9_]{{8}}\.part")


def _download(dataset, filename, url, target: Path, timeout, progress):
    """One try: ``url`` -> a temporary file beside ``target`` -> verified -> renamed to ``target``."""
    _remove_stale_parts(target, filename)
    with held_temporary(target, ".part") as temporary:
        with open(temporary, "wb") as file:
            _copy_url(url, file, timeout, progress, label=filename)
        _verified(dataset, filename, Path(temporary).read_bytes(), url)
        os.replace(temporary, target)


def _copy_url(url, file, timeout, progress, label):
    """Stream ``url`` into ``file``; raise _DownloadError saying what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                      leave=False, disable=None if progress else True) as bar:
                while chunk := response.read(CHUNK_SIZE):
                    try:
                        file.write(chunk)
                    except OSError as exc:        # this machine's disk, not the network
                        raise _Unwritable(exc) from None
                    received += len(chunk)
                    bar.update(len(chunk))
    except _Unwritable as exc:
        raise exc.error from None       # a full disk: no mirror can help
    except urllib.error.HTTPError as exc:
        raise _DownloadError(f"{url}: HTTP {exc.code} {exc.reason}",
                             transient=exc.code >= 500 or exc.code == 429) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            message = f"timed out after {timeout:g} s"
        elif isinstance(reason, BaseException):
            message = f"{type(reason).__name__}: {reason}"
        else:
            message = str(reason)
        # A name that does not resolve means no network or a wrong URL: not worth waiting for.
        raise _DownloadError(f"{url}: {message}", transient=not isinstance(reason, socket.gaierror)) from None
    if total is not None and received < total:
        raise _DownloadError(f"{url}: truncated: received {received} of {total} bytes", transient=True)
