"""The Keras notebook's weights in minialex, and back: Keras 3's ``.weights.h5`` files.

    from minialex.keras_weights import load_keras_weights, save_keras_weights
    model = load_keras_weights(alexnet_mnist(), "alexnet.weights.h5")  # the notebook's model.save_weights(...)
    save_keras_weights(model, "minialex.weights.h5")                    # for the notebook's model.load_weights(...)

What Keras 3's ``model.save_weights("NAME.weights.h5")`` writes is an HDF5 file with one group per
layer of the model::

    layers/<key>/vars/0, 1, ...   the layer's variables in order: for Conv2D and Dense 0 = kernel, 1 = bias;
                                  for BatchNormalization gamma, beta, moving_mean, moving_variance
                                  (trained ones first; scale=False or center=False leaves gamma or beta out)
    optimizer/vars/...            the optimiser's state, once the model is compiled (minialex ignores it)
    vars                          the model's own variables (none for a Sequential)

``<key>`` is not the layer's name but its class's name in snake case, numbered in the order of the
layers: conv2d, conv2d_1, ..., lambda, lambda_1, max_pooling2d, ..., dense, dense_1, ... (so a
notebook whose cells ran twice, with layers named conv2d_5 and so on, still saves conv2d, ...).
A minialex layer takes the key of the Keras layer it stands for (``KERAS_CLASSES``: LocalResponseNorm
is the notebook's Lambda, MaxPool2D is MaxPooling2D), numbered the same way: ``keras_keys(model)``.
So any Sequential of minialex layers reads and writes the file Keras's Sequential of the same layers
does, the weights that are not trained (a layer's ``state``) included. The arrays need no transposing:
both keep Conv2D kernels as (height, width, in, out), Dense kernels as (in, out), and channels last.

Loading checks every layer before it writes anything into the model: each layer with weights must
be in the file with as many variables, each of the model's shape and dtype, and the file may hold
no variables the model lacks; one error lists every mismatch, naming the layer and the expected
and found shape. Layers without weights (pooling, LRN, dropout, ...) leave nothing to check, as in
Keras. Every value must be finite. Any failure to read the file is a WeightsFileError naming the
file and what is wrong.

Saving writes the same layout that Keras writes, atomically (to a temporary file beside the target,
renamed over it only once complete), each array with HDF5's Fletcher-32 checksum: Keras reads it
as usual (HDF5 checks it on every read), and a load refuses an array that no longer matches it.
Files Keras writes carry no checksum: in those, a changed bit shows only where it makes the
layout, a shape, a dtype or a value's finiteness wrong.

h5py is optional (pip install 'minialex[keras]'): it is imported by the first load or save, and
without it both raise H5pyMissing saying so; ``import minialex`` never needs it.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import numpy

from . import backend
from .serialization import atomic_write, check_readable

INSTALL_HINT = "pip install 'minialex[keras]'"
SUFFIX = ".weights.h5"      # Keras 3's load_weights reads a weights-only HDF5 file only under such a name

#: minialex layer class -> the Keras layer class it stands for, as Keras names it in a .weights.h5
#: file, or None for a layer with no Keras counterpart (a model holding one has no Keras file); a
#: class not listed (one of your own) takes its own name in snake case (Keras's rule).
KERAS_CLASSES = {
    "Conv2D": "conv2d",
    "Dense": "dense",
    "MaxPool2D": "max_pooling2d",       # keras.layers.MaxPooling2D (MaxPool2D is its alias)
    "LocalResponseNorm": "lambda",      # the notebook's Lambda(tf.nn.local_response_normalization ...)
    "BatchNormalization": "batch_normalization",
    "Flatten": "flatten",
    "Dropout": "dropout",
    "ReLU": "re_lu",
    "Softmax": "softmax",
}
#: the order of a layer's variables in the file: as Keras creates them, the trained ones first
VARIABLE_ORDER = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


class H5pyMissing(ImportError):
    """A .weights.h5 file was to be read or written, but h5py is not installed."""


class WeightsFileError(ValueError):
    """A .weights.h5 file cannot be read: not HDF5, damaged, or laid out otherwise; says which and where."""


def _h5py():
    try:
        import h5py
    except ImportError:
        raise H5pyMissing(f"reading and writing Keras .weights.h5 files needs h5py, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return h5py


def _snake_case(name):
    """Keras's ``to_snake_case``: 'MaxPooling2D' -> 'max_pooling2d', 'ReLU' -> 're_lu'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_keys(model):
    """[(layer, key)] for every layer of ``model``: the group ``layers/<key>`` Keras gives the same layer."""
    counts: dict[str, int] = {}
    keys = []
    for layer in model.layers:
        name = type(layer).__name__
        if name in KERAS_CLASSES and KERAS_CLASSES[name] is None:
            raise ValueError(f"layer {layer.name!r}: {name} has no Keras counterpart, so the model has no "
                             f"Keras weights file")
        base = KERAS_CLASSES.get(name) or _snake_case(name)
        number = counts.get(base, -1) + 1
        counts[base] = number
        keys.append((layer, base if number == 0 else f"{base}_{number}"))
    return keys


def _variables(layer):
    """{name: array} of the layer's weights, trained (``params``) and not (``state``), in the order of
    the file's vars/0, vars/1, ..."""
    order = {name: i for i, name in enumerate(VARIABLE_ORDER)}
    weights = {**layer.params, **layer.state}
    return {name: weights[name] for name in sorted(weights, key=lambda name: order.get(name, len(order)))}


def _label(layer, key):
    return f"layer {layer.name!r}" + ("" if layer.name == key else f" (Keras layers/{key})")


# ---- reading ---------------------------------------------------------------------------------
@contextmanager
def _reading(path):
    """The file at ``path`` opened read-only with h5py; whatever fails inside, a WeightsFileError naming it."""
    h5py = _h5py()
    try:
        check_readable(path, f"a Keras {SUFFIX} file")
    except ValueError as exc:       # a FIFO or a device: refused unread
        raise WeightsFileError(str(exc)) from None
    if not h5py.is_hdf5(path):
        raise WeightsFileError(f"{path} is not an HDF5 file, so not a Keras .weights.h5 file "
                               f"(Keras 3 writes one with model.save_weights('NAME{SUFFIX}'))")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsFileError(f"{path} cannot be read as HDF5 ({exc})") from None
    try:
        with file:
            yield file
    except (OSError, RuntimeError, KeyError) as exc:    # what h5py raises for a damaged file's structure
        raise WeightsFileError(f"{path} is damaged: {exc}") from None


def _read(dataset, path):
    """A dataset's array, or a WeightsFileError saying which array of which file is damaged, and how."""
    try:
        return dataset[()]
    except (OSError, RuntimeError) as exc:
        if dataset.fletcher32:
            how = "does not match its Fletcher-32 checksum"
        elif dataset.compression:
            how = f"holds a {dataset.compression}-compressed chunk that cannot be decompressed"
        else:
            how = "cannot be read"
        raise WeightsFileError(f"{path} is damaged: {dataset.name} {how} ({exc})") from None


def _child(h5py, group, name, path):
    """group[name], refusing links that lead elsewhere (Keras refuses them too)."""
    link = group.get(name, getlink=True)
    if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
        raise WeightsFileError(f"{path}: {group.name.rstrip('/')}/{name} is a link; a .weights.h5 file holds its "
                               f"arrays itself")
    return group[name]


def _layer_variables(file, path):
    """{key: [h5py.Dataset, ...]} for every group under ``layers/``, data not yet read."""
    h5py = _h5py()
    if file.get("layers", getclass=True) is not h5py.Group:
        hint = ""
        if "layer_names" in file.attrs or "model_weights" in file:
            hint = (" (this looks like a Keras 2 / tf.keras HDF5 file; save the weights with Keras 3 as "
                    f"model.save_weights('NAME{SUFFIX}'))")
        raise WeightsFileError(f"{path} is not a Keras 3 {SUFFIX} file: it has no group 'layers'{hint}")
    layers = _child(h5py, file, "layers", path)
    found = {}
    for key in layers:
        group = _child(h5py, layers, key, path)
        if not isinstance(group, h5py.Group):
            raise WeightsFileError(f"{path}: layers/{key} is not a group")
        if "vars" not in group:
            found[key] = []
            continue
        variables = _child(h5py, group, "vars", path)
        if not isinstance(variables, h5py.Group):
            raise WeightsFileError(f"{path}: layers/{key}/vars is not a group of arrays")
        names = [str(i) for i in range(len(variables))]
        if set(variables) != set(names):
            raise WeightsFileError(f"{path}: layers/{key}/vars should hold arrays named 0, 1, ..., "
                                   f"found {sorted(variables)}")
        datasets = [_child(h5py, variables, name, path) for name in names]
        if not all(isinstance(dataset, h5py.Dataset) for dataset in datasets):
            raise WeightsFileError(f"{path}: layers/{key}/vars holds something other than arrays")
        empty = [dataset.name for dataset in datasets if dataset.shape is None]
        if empty:
            raise WeightsFileError(f"{path}: {empty[0]} is an empty dataset (no array at all)")
        found[key] = datasets
    return found


def read_keras_weights(path) -> dict[str, list[numpy.ndarray]]:
    """Every layer's variables in a Keras 3 .weights.h5 file: {key: [vars/0, vars/1, ...]} as NumPy
    arrays, layers without variables included (with []). No model needed: a look inside the file."""
    path = os.fsdecode(path)
    with _reading(path) as file:
        return {key: [_read(dataset, path) for dataset in datasets]
                for key, datasets in _layer_variables(file, path).items()}


def _mismatches(model, found):
    """Every way the file's variables (h5py datasets by key) differ from the model's parameters."""
    problems = []
    expected_keys = set()
    for layer, key in keras_keys(model):
        expected_keys.add(key)
        variables = _variables(layer)
        names = list(variables)
        if key not in found:
            if names:
                problems.append(f"{_label(layer, key)}: not in the file (no group layers/{key})")
            continue
        datasets = found[key]
        if len(datasets) != len(names):
            problems.append(f"{_label(layer, key)}: the file holds {len(datasets)} arrays in layers/{key}/vars, "
                            f"the model's layer has {len(names)} ({', '.join(names) or 'none'})")
            continue
        for i, (name, dataset) in enumerate(zip(names, datasets)):
            param = variables[name]
            where = f"layers/{key}/vars/{i}"
            if tuple(dataset.shape) != tuple(param.shape):
                problems.append(f"{_label(layer, key)}: {name} expected shape {tuple(param.shape)}, "
                                f"found {tuple(dataset.shape)} ({where})")
            elif numpy.dtype(dataset.dtype).newbyteorder("=") != numpy.dtype(param.dtype).newbyteorder("="):
                problems.append(f"{_label(layer, key)}: {name} expected dtype {numpy.dtype(param.dtype)}, "
                                f"found {numpy.dtype(dataset.dtype)} ({where})")
    for key in sorted(set(found) - expected_keys):
        if found[key]:
            problems.append(f"layers/{key}: in the file with {len(found[key])} arrays, but the model has no "
                            f"such layer (its layers: {', '.join(key for _, key in keras_keys(model))})")
    return problems


def load_keras_weights(model, path):
    """Load the weights in a Keras 3 .weights.h5 file into ``model`` (a minialex Sequential); returns it.

    Every layer is checked first (key, number of arrays, shape, dtype) and nothing is written into
    the model unless all of them fit: a ValueError lists every mismatch. The optimiser's state that
    Keras may have saved with the weights is ignored.
    """
    if not model.built:
        model.build()
    path = os.fsdecode(path)
    with _reading(path) as file:
        found = _layer_variables(file, path)
        problems = _mismatches(model, found)
        if problems:
            raise ValueError(f"{path} does not fit the model:\n  " + "\n  ".join(problems))
        arrays = {key: [_read(dataset, path) for dataset in datasets] for key, datasets in found.items()}
    weights = {}
    for layer, key in keras_keys(model):
        weights.update({f"{layer.name}/{name}": array for name, array in zip(_variables(layer), arrays.get(key, []))})
    try:
        model.assign_weights(weights)
    except ValueError as exc:       # values the model cannot take: NaN, infinity, beyond its dtype's range
        raise WeightsFileError(f"{path} holds weights the model cannot take: {exc}") from None
    return model


# ---- writing ---------------------------------------------------------------------------------
def save_keras_weights(model, path):
    """Write ``model``'s weights as Keras 3's ``model.save_weights`` does, for Keras's ``load_weights``.

    ``path`` must end in '.weights.h5' (Keras reads no other name). The file appears complete or not
    at all: it is written beside ``path`` under a temporary name, then renamed over it.
    """
    h5py = _h5py()
    path = os.fsdecode(path)
    if not path.endswith(SUFFIX):
        raise ValueError(f"{path}: the name must end in '{SUFFIX}', the only name Keras 3's load_weights reads")
    if not model.built:
        raise ValueError("the model is not built yet: there are no weights to save")
    layers = [(key, [backend.to_numpy(array) for array in _variables(layer).values()])
              for layer, key in keras_keys(model)]
    # locking=False: HDF5's own lock would clash with the one atomic_write holds on its temporary file
    with atomic_write(path) as temporary, h5py.File(temporary, "w", locking=False) as file:
        _write_layers(file, layers)
        file.create_group("vars").attrs["name"] = model.name


def _write_layers(file, layers):
    """layers/<key>/vars/<i> for every (key, arrays), each vars group named as Keras names it."""
    group = file.create_group("layers")
    for key, arrays in layers:
        variables = group.create_group(key).create_group("vars")
        variables.attrs["name"] = key
        for i, array in enumerate(arrays):
            variables.create_dataset(str(i), data=array, fletcher32=True)


__all__ = ["H5pyMissing", "KERAS_CLASSES", "WeightsFileError", "keras_keys", "load_keras_weights", "read_keras_weights",
           "save_keras_weights"]
