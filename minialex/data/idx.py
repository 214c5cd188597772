"""Reading and writing IDX files, the format MNIST and Fashion-MNIST come in.

An IDX file is a header followed by the raw array, all big-endian::

    bytes 0-1   0x00 0x00                 (magic, part 1)
    byte  2     data type                 (0x08 = unsigned byte, the only one MNIST uses)
    byte  3     number of dimensions, d
    then        d sizes, 4-byte unsigned each
    then        prod(sizes) values, row-major

Files are often gzip-compressed; a gzip stream is recognised by its own magic bytes (1f 8b),
never by the file name. Every malformed or truncated input raises ``ValueError`` naming the
file and what is wrong with it.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy

__all__ = ["decompress", "format_idx", "parse_idx", "read_idx"]

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
# The other IDX data types, named only for the error message: this reader needs unsigned bytes.
OTHER_TYPES = {0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def decompress(data: bytes, name: str = "<bytes>") -> bytes:
    """``data`` gunzipped if it starts with the gzip magic bytes, else ``data`` unchanged."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ValueError(f"{name}: truncated gzip data (the stream ends before its end marker)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{name}: corrupt gzip data ({exc})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> numpy.ndarray:
    """The uint8 array held by the IDX bytes ``data`` (plain or gzip); ``name`` labels errors."""
    data = decompress(data, name)
    if len(data) < 4:
        raise ValueError(f"{name}: truncated: {len(data)} bytes, too short for an IDX header")
    if data[:2] != b"\x00\x00":
        raise ValueError(f"{name}: not an IDX file: bad magic number 0x{data[:4].hex()} "
                         "(an IDX file starts with two zero bytes, then type and rank)")
    dtype, ndim = data[2], data[3]
    if dtype != UBYTE:
        kind = OTHER_TYPES.get(dtype, "unknown")
        raise ValueError(f"{name}: unsupported IDX data type 0x{dtype:02x} ({kind}); "
                         "only 0x08 (unsigned byte) is supported")
    if ndim == 0:
        raise ValueError(f"{name}: malformed IDX header: zero dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{name}: truncated: the header declares {ndim} dimensions "
                         f"({header_size} bytes) but the file has only {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected, found = int(numpy.prod(shape, dtype=numpy.int64)), len(data) - header_size
    if found < expected:
        raise ValueError(f"{name}: truncated: expected {expected} bytes of data, found {found} "
                         f"(shape {shape})")
    if found > expected:
        raise ValueError(f"{name}: malformed: expected {expected} bytes of data, found {found} "
                         f"(shape {shape}; {found - expected} trailing bytes)")
    # frombuffer over immutable bytes is read-only; the copy makes an ordinary, writable array.
    return numpy.frombuffer(data, numpy.uint8, count=expected, offset=header_size).reshape(shape).copy()


def read_idx(path) -> numpy.ndarray:
    """The uint8 array stored in the IDX file at ``path`` (plain or gzip-compressed)."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        return parse_idx(file.read(), path)


def format_idx(array) -> bytes:
    """The (uncompressed) IDX bytes of a uint8 array: ``parse_idx(format_idx(a))`` equals ``a``."""
    array = numpy.asarray(array)
    if array.dtype != numpy.uint8:
        raise TypeError(f"IDX output supports uint8 arrays only, got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(f">2sBB{array.ndim}I", b"\x00\x00", UBYTE, array.ndim, *array.shape)
    return header + array.tobytes(order="C")
