"""minialex.data: the IDX reader, the MNIST / Fashion-MNIST loaders and downloads, preprocessing.

No test touches the internet: downloads come from HTTP servers on 127.0.0.1 started here, a guard
refuses any other connection, and HOME and every cache variable point under pytest's tmp_path.
The real MNIST files are read from ../shared/mnist (or $MINIALEX_DATA_DIR); tests that need them
are skipped when they are absent.
"""
from __future__ import annotations

import contextlib
import gzip
import http.server
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from minialex.data import (DatasetUnavailableError, default_cache_dir, default_keras_dir, fetch,
                           format_idx, load_fashion_mnist, load_mnist, pad_images, parse_idx,
                           preprocess_images, read_idx, to_categorical)
from minialex.data import mnist as mnist_module
from minialex.data.mnist import FILES

SHARED = Path(os.environ.get("MINIALEX_DATA_DIR")
              or Path(__file__).resolve().parents[2] / "shared" / "mnist")
HAVE_MNIST = all((SHARED / f"{name}.gz").is_file() for name in FILES)
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"the real MNIST files are not in {SHARED}")

TEST_LABELS = "t10k-labels-idx1-ubyte"  # the smallest file (10 KB): the one the download tests move
FAST = dict(timeout=5.0, retry_delays=(), progress=False)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def shared_bytes(name: str) -> bytes:
    return (SHARED / f"{name}.gz").read_bytes()


# --------------------------------------------------------------------------------------------
# Fixtures: isolation, servers, data


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Point HOME and the cache variables under tmp_path; refuse connections beyond 127.0.0.1."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("MINIALEX_DATA_DIR", "MINIALEX_CACHE_DIR", "XDG_CACHE_HOME", "KERAS_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    connect = socket.create_connection

    def local_only(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address}"
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> bytes, an HTTP status, or (bytes, a larger Content-Length)."""

    def do_GET(self):
        self.server.hits[self.path] += 1
        route = self.server.routes.get(self.path, 404)
        if isinstance(route, int):
            self.send_error(route)
            return
        body, length = route if isinstance(route, tuple) else (route, len(route))
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; ``server.url(mirror)`` is a base URL, ``server.routes`` what it serves."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.hits = {}, Counter()
    httpd.url = lambda mirror: f"http://127.0.0.1:{httpd.server_port}/{mirror}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.01), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url():
    """A base URL on a port where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def hanging_url():
    """A base URL whose server accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mnist/"


@pytest.fixture(scope="module")
def real_mnist():
    if not HAVE_MNIST:
        pytest.skip(f"the real MNIST files are not in {SHARED}")
    return load_mnist(data_dir=SHARED)


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory):
    """A folder ``fashion-mnist/`` of made-up, Fashion-MNIST-shaped plain IDX files; returns its parent."""
    root = tmp_path_factory.mktemp("fashion")
    folder = root / "fashion-mnist"
    folder.mkdir()
    for name, shape in FILES.items():
        array = numpy.resize(numpy.arange(10, dtype=numpy.uint8), shape)  # 0 1 2 ... 9 0 1 ...
        (folder / name).write_bytes(format_idx(array))
    return root


def serve_shared(server, mirror: str, names=FILES) -> str:
    for name in names:
        server.routes[f"/{mirror}/{name}.gz"] = shared_bytes(name)
    return server.url(mirror)


def corrupted_labels() -> bytes:
    """The real test labels with one label changed: valid IDX, valid gzip, wrong checksum."""
    labels = read_idx(SHARED / f"{TEST_LABELS}.gz")
    labels[0] = (labels[0] + 1) % 10
    return format_idx(labels)


# --------------------------------------------------------------------------------------------
# IDX


@needs_mnist
def test_read_idx_reads_the_real_labels():
    labels = read_idx(SHARED / f"{TEST_LABELS}.gz")
    assert labels.shape == (10000,) and labels.dtype == numpy.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = numpy.arange(24, dtype=numpy.uint8).reshape(2, 3, 4)
    (tmp_path / "plain.gz").write_bytes(format_idx(array))
    (tmp_path / "compressed.idx").write_bytes(gz(format_idx(array)))
    numpy.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)
    numpy.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), array)
    assert read_idx(tmp_path / "compressed.idx").flags.writeable


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(numpy.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
def test_format_then_parse_round_trips(array):
    numpy.testing.assert_array_equal(parse_idx(format_idx(array)), array)
    assert parse_idx(gz(format_idx(array))).shape == array.shape


def test_truncated_idx_names_the_file_and_the_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gz(format_idx(numpy.zeros((60000, 28, 28), numpy.uint8))[:16 + 1000]))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: truncated: "
                                         r"expected 47040000 bytes of data, found 1000"):
        read_idx(path)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "too short"),
    (b"\x1f\x00\x08\x01" + b"\x00" * 8, "bad magic number 0x1f000801"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\x00" * 4, r"unsupported IDX data type 0x0d \(float32\)"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header declares 3 dimensions"),
    (format_idx(numpy.zeros(4, numpy.uint8)) + b"\x00", "1 trailing bytes"),
])
def test_malformed_idx_is_a_value_error(data, message):
    with pytest.raises(ValueError, match=f"^labels.idx: .*{message}"):
        parse_idx(data, "labels.idx")


def test_truncated_gzip_is_a_value_error(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gz(bytes(range(256)) * 100)[:50])
    with pytest.raises(ValueError, match=r"cut\.gz: truncated gzip data"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# Loading from local files


def check_mnist(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {numpy.dtype(numpy.uint8)}
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_real_mnist_matches_keras_and_the_published_statistics(real_mnist):
    check_mnist(real_mnist)
    (x_train, _), _ = real_mnist
    # A histogram gives exact statistics without a float copy of x; chunks keep bincount's int64 copy small.
    counts = sum(numpy.bincount(chunk.ravel(), minlength=256) for chunk in numpy.array_split(x_train, 60))
    values = numpy.arange(256) / 255
    mean = counts @ values / counts.sum()
    std = numpy.sqrt(counts @ (values - mean) ** 2 / counts.sum())
    assert mean == pytest.approx(0.1306604762738429, rel=1e-12)
    assert std == pytest.approx(0.30810780385646264, rel=1e-12)


@needs_mnist
def test_the_environment_variable_names_the_data_folder(monkeypatch, server):
    monkeypatch.setenv("MINIALEX_DATA_DIR", str(SHARED))
    check_mnist(load_mnist(mirrors=[server.url("m")], **FAST))
    assert not server.hits


@pytest.mark.parametrize("via_env", [False, True])
def test_a_named_folder_lacking_files_is_an_error_not_a_download(tmp_path, monkeypatch, server, via_env):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"")
    if via_env:
        monkeypatch.setenv("MINIALEX_DATA_DIR", str(folder))
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(None if via_env else folder, mirrors=[server.url("m")], **FAST)
    message = str(error.value)
    assert str(folder) in message and ("MINIALEX_DATA_DIR" in message) == via_env
    assert "train-images-idx3-ubyte, t10k-images-idx3-ubyte (plain or .gz)" in message
    assert not server.hits


@needs_mnist
def test_a_local_file_with_the_wrong_content_fails_its_checksum(tmp_path):
    for name in FILES:
        shutil.copy(SHARED / f"{name}.gz", tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    (tmp_path / TEST_LABELS).write_bytes(corrupted_labels())  # plain, uncompressed
    with pytest.raises(ValueError, match=f"{TEST_LABELS}: checksum mismatch") as error:
        load_mnist(tmp_path)
    assert "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in str(error.value)


@needs_mnist
def test_keras_mnist_npz_in_the_home_folder(tmp_path, real_mnist):
    keras = tmp_path / "home" / ".keras" / "datasets"
    keras.mkdir(parents=True)
    (x_train, y_train), (x_test, y_test) = real_mnist
    numpy.savez(keras / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    loaded = load_mnist(mirrors=[], **FAST)
    check_mnist(loaded)
    numpy.testing.assert_array_equal(loaded[0][0], x_train)


def test_a_wrong_keras_npz_fails_its_checksum(tmp_path):
    arrays = {key: numpy.zeros(shape, numpy.uint8) for key, shape in
              zip(("x_train", "y_train", "x_test", "y_test"), FILES.values())}
    numpy.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DatasetUnavailableError, match=r"mnist\.npz \(unusable: .*mnist\.npz\[x_train\]: checksum "
                                                      r"mismatch"):
        load_mnist(keras_dir=tmp_path, mirrors=[], **FAST)


@needs_mnist
def test_a_damaged_keras_npz_is_passed_over_for_a_download(tmp_path, server):
    """Keras's copy is not ours to change, and a damaged one must not stand in the way of a mirror."""
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in FILES:
        if name != TEST_LABELS:
            shutil.copy(SHARED / f"{name}.gz", cache)
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "mnist.npz").write_bytes(b"PK\x03\x04 cut short")
    (_, _), (_, y_test) = load_mnist(cache_dir=tmp_path / "cache", keras_dir=tmp_path / "keras",
                                     mirrors=[serve_shared(server, "m", [TEST_LABELS])], **FAST)
    assert y_test[:3].tolist() == [7, 2, 1] and list(server.hits) == [f"/m/{TEST_LABELS}.gz"]
    assert (tmp_path / "keras" / "mnist.npz").read_bytes() == b"PK\x03\x04 cut short"


def test_fashion_mnist_from_a_folder_its_subfolder_and_keras(fake_fashion, tmp_path):
    expected = read_idx(fake_fashion / "fashion-mnist" / TEST_LABELS)
    for splits in (load_fashion_mnist(fake_fashion / "fashion-mnist"),
                   load_fashion_mnist(fake_fashion),  # finds the fashion-mnist/ subfolder
                   load_fashion_mnist(keras_dir=fake_fashion, mirrors=[], **FAST)):
        (x_train, y_train), (x_test, y_test) = splits
        assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == tuple(FILES.values())
        numpy.testing.assert_array_equal(y_test, expected)


def test_fashion_mnist_labels_out_of_range_are_rejected(fake_fashion, tmp_path):
    for name in FILES:
        os.symlink(fake_fashion / "fashion-mnist" / name, tmp_path / name)
    (tmp_path / TEST_LABELS).unlink()
    (tmp_path / TEST_LABELS).write_bytes(format_idx(numpy.full(10000, 10, numpy.uint8)))
    with pytest.raises(ValueError, match=f"{TEST_LABELS}: labels must lie in 0..9, found 10"):
        load_fashion_mnist(tmp_path)


@needs_mnist
def test_mnist_files_are_not_taken_for_fashion_mnist():
    with pytest.raises(ValueError, match="this is MNIST's train-images-idx3-ubyte, not Fashion-MNIST's"):
        load_fashion_mnist(SHARED)


# --------------------------------------------------------------------------------------------
# Downloads


@needs_mnist
def test_download_lands_verified_in_the_cache(tmp_path, server):
    url = serve_shared(server, "good", [TEST_LABELS])
    path = fetch(TEST_LABELS, tmp_path / "cache", mirrors=[url], timeout=5.0, progress=True)
    assert path == tmp_path / "cache" / f"{TEST_LABELS}.gz"
    assert os.listdir(tmp_path / "cache") == [path.name]
    assert read_idx(path)[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


BAD_CONTENT = {  # case -> (the body a mirror serves, what the error must say)
    "checksum": (lambda: gz(corrupted_labels()), "checksum mismatch"),
    "truncated-gzip": (lambda: shared_bytes(TEST_LABELS)[:2000], "truncated gzip data"),
}


@needs_mnist
@pytest.mark.parametrize("case", BAD_CONTENT)
def test_bad_content_leaves_nothing_behind(tmp_path, server, case):
    make_body, reason = BAD_CONTENT[case]
    body = make_body()
    server.routes[f"/bad/{TEST_LABELS}.gz"] = body
    cache = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError) as error:
        fetch(TEST_LABELS, cache, mirrors=[server.url("bad")], **dict(FAST, retry_delays=(0,)))
    assert f"{server.url('bad')}{TEST_LABELS}.gz: " in str(error.value) and reason in str(error.value)
    assert os.listdir(cache) == []  # no file, no temporary file
    assert server.hits[f"/bad/{TEST_LABELS}.gz"] == 1  # bad content is not worth a retry


@needs_mnist
def test_a_dropped_connection_is_retried_then_reported(tmp_path, server):
    body = shared_bytes(TEST_LABELS)
    server.routes[f"/short/{TEST_LABELS}.gz"] = (body[:1000], len(body))
    with pytest.raises(DatasetUnavailableError, match=f"truncated: received 1000 of {len(body)} bytes "
                                                      r"\(tried 3 times\)"):
        fetch(TEST_LABELS, tmp_path, mirrors=[server.url("short")], **dict(FAST, retry_delays=(0, 0)))
    assert server.hits[f"/short/{TEST_LABELS}.gz"] == 3
    assert os.listdir(tmp_path) == []


@needs_mnist
def test_failing_mirrors_are_reported_and_the_next_one_used(tmp_path, server, dead_url, caplog):
    server.routes[f"/broken/{TEST_LABELS}.gz"] = 500
    good = serve_shared(server, "good", [TEST_LABELS])
    mirrors = [dead_url, server.url("missing"), server.url("broken"), good]
    with caplog.at_level(logging.WARNING, logger="minialex.data"):
        path = fetch(TEST_LABELS, tmp_path, mirrors=mirrors, **dict(FAST, retry_delays=(0,)))
    assert read_idx(path).shape == (10000,)
    assert server.hits[f"/missing/{TEST_LABELS}.gz"] == 1  # a 404 is not retried...
    assert server.hits[f"/broken/{TEST_LABELS}.gz"] == 2   # ...a 500 is
    log = caplog.text
    assert f"{dead_url}{TEST_LABELS}.gz: ConnectionRefusedError" in log
    assert "HTTP 404" in log and "HTTP 500" in log


def test_a_server_that_never_answers_times_out(tmp_path, hanging_url):
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match=r"timed out after 0\.3 s"):
        fetch(TEST_LABELS, tmp_path, mirrors=[hanging_url], timeout=0.3, retry_delays=(), progress=False)
    assert time.monotonic() - start < 5
    assert os.listdir(tmp_path) == []


def test_fashion_mnist_downloads_are_checked_by_structure(tmp_path, server):
    server.routes[f"/f/{TEST_LABELS}.gz"] = gz(format_idx(numpy.arange(10000, dtype=numpy.uint8) % 10))
    server.routes[f"/short/{TEST_LABELS}.gz"] = gz(format_idx(numpy.zeros(5, numpy.uint8)))
    with pytest.raises(DatasetUnavailableError, match=r"shape \(5,\), expected \(10000,\)"):
        fetch(TEST_LABELS, tmp_path, dataset="fashion-mnist", mirrors=[server.url("short")], **FAST)
    path = fetch(TEST_LABELS, tmp_path, dataset="fashion-mnist", mirrors=[server.url("f")], **FAST)
    assert read_idx(path)[:3].tolist() == [0, 1, 2]


@needs_mnist
def test_load_mnist_downloads_what_the_cache_lacks_then_reads_the_cache(tmp_path, monkeypatch, server):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINIALEX_CACHE_DIR", str(cache))
    (cache / "mnist").mkdir(parents=True)
    shutil.copy(SHARED / "train-images-idx3-ubyte.gz", cache / "mnist")
    url = serve_shared(server, "m")
    check_mnist(load_mnist(mirrors=[url], **FAST))
    assert set(server.hits) == {f"/m/{name}.gz" for name in FILES if name != "train-images-idx3-ubyte"}
    assert sorted(os.listdir(cache / "mnist")) == sorted(f"{name}.gz" for name in FILES)
    hits = sum(server.hits.values())
    check_mnist(load_mnist(mirrors=[url], **FAST))
    assert sum(server.hits.values()) == hits  # the second load reads the cache only


def test_no_source_and_no_network_says_where_it_looked(tmp_path, dead_url):
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist(mirrors=[dead_url], **FAST)
    message = str(error.value)
    assert str(tmp_path / "home" / ".cache" / "minialex" / "mnist") in message
    assert str(tmp_path / "home" / ".keras" / "datasets" / "mnist.npz") in message
    assert f"{dead_url}train-images-idx3-ubyte.gz: ConnectionRefusedError" in message
    assert "--data-dir" in message and "MINIALEX_DATA_DIR" in message


def test_cache_and_keras_folders_follow_the_environment_and_platform(tmp_path, monkeypatch):
    home = tmp_path / "home"
    assert default_cache_dir() == home / ".cache" / "minialex"
    assert default_keras_dir() == home / ".keras" / "datasets"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_cache_dir() == home / "Library" / "Caches" / "minialex"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_cache_dir() == tmp_path / "local" / "minialex"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "minialex"
    monkeypatch.setenv("MINIALEX_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    assert default_keras_dir() == tmp_path / "k" / "datasets"


# --------------------------------------------------------------------------------------------
# Preprocessing


@pytest.fixture
def digits():
    return numpy.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=numpy.uint8)


def test_pad_images_adds_a_zero_border(digits):
    padded = pad_images(digits)
    assert padded.shape == (7, 32, 32) and padded.dtype == numpy.uint8
    numpy.testing.assert_array_equal(padded, numpy.pad(digits, ((0, 0), (2, 2), (2, 2))))
    assert pad_images(digits, pad=0).shape == (7, 28, 28)


def test_preprocess_images_equals_the_notebook_bit_for_bit(digits):
    out = preprocess_images(digits)
    assert out.shape == (7, 32, 32, 1) and out.dtype == numpy.float32
    notebook = (numpy.pad(digits, ((0, 0), (2, 2), (2, 2))).astype("float32") / 255).reshape(-1, 32, 32, 1)
    numpy.testing.assert_array_equal(out, notebook)
    assert out[0, 2, 2, 0] == numpy.float32(digits[0, 0, 0]) / numpy.float32(255)
    border = numpy.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not out[:, border].any()


def test_preprocess_images_allocates_little_beyond_its_output():
    import tracemalloc
    x = numpy.ones((2000, 28, 28), numpy.uint8)
    tracemalloc.start()
    try:
        out = preprocess_images(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * out.nbytes


@pytest.mark.parametrize("x, error", [
    (numpy.zeros((2, 28, 28), numpy.float32), TypeError),
    (numpy.zeros((28, 28), numpy.uint8), ValueError),
])
def test_preprocess_images_rejects_other_inputs(x, error):
    with pytest.raises(error):
        preprocess_images(x)


def test_to_categorical_matches_keras():
    out = to_categorical([0, 2, 1])
    assert out.dtype == numpy.float32
    numpy.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert to_categorical(numpy.array([[3], [1]]), 10).shape == (2, 10)  # (N, 1) -> (N, C)
    assert to_categorical(numpy.zeros((2, 3), int), 4).shape == (2, 3, 4)


@pytest.mark.parametrize("labels, num_classes, message", [
    ([0, -1, 3], 10, r"0\.\.9; found 1 outside: \[-1\]"),
    ([0, 10, 12, 10], 10, r"found 3 outside: \[10, 12\]"),
    ([], None, "empty"),
])
def test_to_categorical_rejects_labels_out_of_range(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        to_categorical(numpy.array(labels, dtype=int), num_classes)


@pytest.mark.parametrize("in_the_way", ["a folder where a file goes", "a file where the folder goes"])
def test_something_in_the_caches_way_is_named_not_a_hidden_part_file(tmp_path, server, in_the_way):
    cache = tmp_path / "cache"
    if in_the_way == "a folder where a file goes":
        first = next(iter(FILES))                      # the first file a download fetches
        (cache / "mnist" / f"{first}.gz").mkdir(parents=True)
        said = f"{cache / 'mnist' / first}.gz is a folder where the downloaded file goes; move it away"
    else:
        cache.mkdir()
        (cache / "mnist").write_bytes(b"")
        said = f"{cache / 'mnist'} is a file where the download's folder goes; move it away"
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist(cache_dir=cache, mirrors=[serve_shared(server, "m", [])], **FAST)
    assert f"The cache cannot take a download ({said})." in str(error.value) and ".part" not in str(error.value)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_under_a_download_is_said_to_be_the_disk_not_the_network(tmp_path, server, monkeypatch):
    @contextlib.contextmanager
    def onto_a_full_disk(target, suffix):        # every write fails as on a full disk: ENOSPC
        yield "/dev/full"

    monkeypatch.setattr(mnist_module, "held_temporary", onto_a_full_disk)
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist(cache_dir=tmp_path, mirrors=[serve_shared(server, "m"), serve_shared(server, "n")], **FAST)
    assert "The cache cannot take a download (No space left on device)." in str(error.value)
    assert list(server.hits) == [f"/m/{next(iter(FILES))}.gz"]       # no retry, no other mirror: no use
