"""Argument and input checks shared by the model and the fit loop: one clear message, before any work.

Every check here raises before anything is trained, written or moved, and names what is wrong:
the argument, what it holds, what it should hold.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy

from . import backend

CHUNK_ROWS = 4096            # rows per pass when counting non-finite values (keeps the count's mask small)
TARGET_ROW_TOLERANCE = 1e-3  # a target row's sum may differ from 1 by this much (float32 one-hot, smoothing)
_warned = set()              # the one-time warnings already given in this process


def positive_int(name, value, minimum=1):
    """``value`` as an int if it is an integer (Python or NumPy, not a bool) of at least ``minimum``."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def fraction(name, value):
    """``value`` as a float in [0, 1) (a Python or NumPy number, not a bool or a string)."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, float, numpy.integer, numpy.floating)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def one_of(name, value, choices):
    if isinstance(value, (bool, numpy.bool_)) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def flag(name, value):
    if not isinstance(value, (bool, numpy.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def array_kind(name, array, images=True):
    """Refuse what cannot be pixels or targets: no array, strings, objects, booleans, complex numbers.

    Integer images (``images``) that were not scaled (values above 1) pass, with a one-time warning.
    """
    if not hasattr(array, "dtype") or not hasattr(array, "shape"):
        try:
            array = numpy.asarray(array)
        except Exception as exc:
            raise ValueError(f"{name} must be an array of numbers, got {type(array).__name__} ({exc})") from None
    kind = numpy.dtype(array.dtype).kind
    if kind == "b":
        raise ValueError(f"{name} holds booleans; convert them to numbers explicitly (e.g. {name}.astype('float32'))")
    if kind == "c":
        raise ValueError(f"{name} holds complex numbers ({array.dtype}); a network takes real numbers")
    if kind not in "iuf":
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    if images and kind in "iu" and array.size and name not in _warned and float(array.max()) > 1:
        _warned.add(name)
        warnings.warn(f"{name} holds integers up to {int(array.max())}, not scaled: images are usually divided "
                      f"by 255 first (minialex.data.preprocess_images does it); training goes on with them as "
                      f"they are", UserWarning, stacklevel=4)
    return array


def finite(name, array, original=None, samples=True):
    """Raise a ValueError saying how many values of ``array`` (on any backend) are NaN or infinite, and
    in which samples (rows) unless ``samples`` is false. ``original``: the array before its cast to
    ``array``'s dtype, where a finite value beyond the dtype's range (1e39 in float32) became infinity:
    said as such."""
    if array.size == 0 or array.dtype.kind != "f":
        return
    if bool(backend.get_array_module(array).isfinite(array.min() + array.max())):
        return   # min and max carry any NaN; min + max of finite float32 values stays finite or shows inf
    if original is not None and original is not array:
        finite(name, original, samples=samples)      # NaN or infinity before the cast: said as such
        xp = backend.get_array_module(original)
        largest = float(xp.abs(original[xp.isfinite(original)]).max())
        raise ValueError(f"bad input: {name} holds values beyond the range of {array.dtype} (up to {largest:.3g}): "
                         f"they would become infinity; scale them down")
    xp = backend.get_array_module(array)
    bad, rows = 0, []
    for start in range(0, array.shape[0], CHUNK_ROWS):
        chunk = array[start:start + CHUNK_ROWS]
        mask = ~xp.isfinite(chunk.reshape(chunk.shape[0], -1))
        bad += int(mask.sum())
        if len(rows) < 5:
            rows += (start + backend.to_numpy(xp.flatnonzero(mask.any(axis=1)))[:5]).tolist()
    if bad:
        where = f", in samples {rows[:5]}{' ...' if len(rows) > 5 else ''}" if samples else ""
        raise ValueError(f"bad input: {name} holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or "
                         f"infinity){where}; fix or drop them")


def representable(name, array, dtype):
    """``array`` cast to ``dtype`` (on its own backend), refused unless every value is finite there:
    a finite value beyond the dtype's range (1e300 in float32) becomes infinity in the cast."""
    xp = backend.get_array_module(array)
    with numpy.errstate(over="ignore"):          # the overflow is what is reported below
        cast = xp.asarray(array, dtype=dtype)
    finite(name, cast.reshape(1, -1), original=array.reshape(1, -1), samples=False)
    return cast


def targets(name, y):
    """One-hot (or soft) targets: no negative value, each row summing to 1 (one read-back when they are)."""
    if y.size == 0:
        return
    xp = backend.get_array_module(y)
    sums = y.sum(axis=1)
    bad = (xp.abs(sums - 1) > TARGET_ROW_TOLERANCE) | (y < 0).any(axis=1)
    if not bool(bad.any()):
        return
    rows = backend.to_numpy(xp.flatnonzero(bad)).tolist()
    zero, negative = int((sums == 0).sum()), int((y < 0).sum())
    detail = f"{len(rows)} rows are not (first: {rows[:5]}; {zero} are all zero"
    detail += f", {negative} values are negative)" if negative else ")"
    raise ValueError(f"bad input: {name} must be one-hot rows (or probabilities summing to 1): {detail}; "
                     f"convert labels with minialex.data.to_categorical")


def recordable_settings(settings):
    """``settings`` (a dict, or None) as a checkpoint records them and a resume compares them: in JSON's
    kinds (NumPy numbers become Python's, paths strings, tuples lists); a ValueError names any value
    JSON cannot hold or that never equals itself (NaN), before any work."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict, got {type(settings).__name__}")
    return _recordable("settings", settings)


def _recordable(name, value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numpy.bool_):
        return bool(value)
    if isinstance(value, (int, numpy.integer)):
        return int(value)
    if isinstance(value, (float, numpy.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{name} is {value}: a checkpoint's setting must equal itself when the run is resumed; "
                             f"give a finite number or a string")
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return [_recordable(f"{name}[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _recordable(f"{name}[{key!r}]", item) for key, item in value.items()}
    kind = type(value).__name__
    what = "a dict with keys that are not strings" if isinstance(value, dict) else \
        f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    raise ValueError(f"{name} is {what}, which a checkpoint cannot record: give numbers, strings, booleans, None, "
                     f"or lists and dicts (with string keys) of them")
