"""Keras 3 .weights.h5 files: the notebook's weights into alexnet_mnist() and back.

The fixture in tests/fixtures/keras/ was made once with real Keras (see its README.md); these tests
need h5py but not TensorFlow.
"""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from minialex.data import load_mnist, preprocess_images
from minialex.models import alexnet_mnist

h5py = pytest.importorskip("h5py")

from minialex import keras_weights  # noqa: E402
from minialex.keras_weights import (H5pyMissing, WeightsFileError, keras_keys, load_keras_weights,  # noqa: E402
                                    read_keras_weights, save_keras_weights)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"
WEIGHTS = FIXTURES / "alexnet_mnist.weights.h5"


def keras_predictions():
    return np.load(FIXTURES / "predictions.npy")


def fixture_images():
    return preprocess_images(np.load(FIXTURES / "images.npy"))


def scrambled_model(seed=1):
    """alexnet_mnist() with weights drawn here, unlike any other model's."""
    model = alexnet_mnist()
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def fixture_copy(tmp_path, name="edited.weights.h5"):
    path = tmp_path / name
    shutil.copy(WEIGHTS, path)
    return path


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def layout(path):
    """{HDF5 path: (shape, dtype) of a dataset, or the attributes of a group}, Keras's optimizer state left out."""
    out = {}

    def visit(name, obj):
        if name.split("/")[0] == "optimizer":
            return
        out[name] = (obj.shape, obj.dtype) if isinstance(obj, h5py.Dataset) else dict(obj.attrs)

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return out


# ---- the Keras fixture -----------------------------------------------------------------------
def test_keras_predictions_match_with_the_notebooks_weights(xp_backend):
    model = load_keras_weights(alexnet_mnist(), WEIGHTS)
    predictions = model.predict(fixture_images())
    expected = keras_predictions()
    assert predictions.shape == expected.shape == (50, 10)
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=1e-5)
    assert np.array_equal(predictions.argmax(axis=1), expected.argmax(axis=1))


def test_fixture_images_are_the_first_mnist_test_images(mnist_dir):
    (_, _), (x_test, y_test) = load_mnist(mnist_dir)
    np.testing.assert_array_equal(np.load(FIXTURES / "images.npy"), x_test[:50])
    np.testing.assert_array_equal(np.load(FIXTURES / "labels.npy"), y_test[:50])


def test_keys_are_the_groups_keras_wrote():
    keys = [key for _, key in keras_keys(alexnet_mnist())]
    assert keys == ["conv2d", "lambda", "max_pooling2d", "conv2d_1", "lambda_1", "max_pooling2d_1", "conv2d_2",
                    "conv2d_3", "conv2d_4", "flatten", "dense", "dropout", "dense_1", "dropout_1", "dense_2"]
    arrays = read_keras_weights(WEIGHTS)
    assert sorted(arrays) == sorted(keys)
    assert [w.shape for w in arrays["conv2d_1"]] == [(3, 3, 32, 64), (64,)]
    assert arrays["lambda"] == [] and arrays["dropout_1"] == []


def test_loaded_weights_are_the_files_arrays():
    model = load_keras_weights(alexnet_mnist(), WEIGHTS)
    arrays = read_keras_weights(WEIGHTS)
    expected = [w for _, key in keras_keys(model) for w in arrays[key]]
    assert_same_weights(model.get_weights(), expected)


# ---- writing ---------------------------------------------------------------------------------
def test_round_trip_gives_identical_weights(tmp_path, xp_backend):
    model = scrambled_model(seed=1)
    path = tmp_path / "minialex.weights.h5"
    save_keras_weights(model, path)
    again = load_keras_weights(scrambled_model(seed=2), path)
    assert_same_weights(again.get_weights(), model.get_weights())


def test_a_written_file_is_laid_out_as_keras_writes_it(tmp_path):
    model = load_keras_weights(alexnet_mnist(), WEIGHTS)
    path = tmp_path / "minialex.weights.h5"
    save_keras_weights(model, path)
    assert layout(path) == layout(WEIGHTS)
    written, original = read_keras_weights(path), read_keras_weights(WEIGHTS)
    assert sorted(written) == sorted(original)
    for key in original:
        assert_same_weights(written[key], original[key])
    again = load_keras_weights(alexnet_mnist(), path)
    np.testing.assert_array_equal(again.predict(fixture_images()), model.predict(fixture_images()))


def test_save_replaces_a_file_whole_and_leaves_nothing_behind_on_error(tmp_path, monkeypatch):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"the previous file")

    def fail_halfway(file, layers):
        file.create_group("layers").create_group(layers[0][0])
        raise OSError("disk full")

    monkeypatch.setattr(keras_weights, "_write_layers", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_keras_weights(alexnet_mnist(), path)
    assert path.read_bytes() == b"the previous file"
    assert os.listdir(tmp_path) == ["model.weights.h5"]
    monkeypatch.undo()
    save_keras_weights(alexnet_mnist(), path)
    assert h5py.is_hdf5(path) and os.listdir(tmp_path) == ["model.weights.h5"]


def test_save_needs_a_name_keras_reads(tmp_path):
    with pytest.raises(ValueError, match=r"must end in '\.weights\.h5'"):
        save_keras_weights(alexnet_mnist(), tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_keras_weights(alexnet_mnist(), tmp_path / "no" / "model.weights.h5")
    assert os.listdir(tmp_path) == []


# ---- what does not fit: clear errors, and the model untouched ----------------------------------
def refused(path, *patterns, error=ValueError):
    """Loading ``path`` fails with every pattern in the message and leaves the model as it was."""
    model = scrambled_model()
    before = model.get_weights()
    with pytest.raises(error) as excinfo:
        load_keras_weights(model, path)
    for pattern in patterns:
        assert pattern in str(excinfo.value), str(excinfo.value)
    assert_same_weights(model.get_weights(), before)
    return str(excinfo.value)


def test_a_wrong_shape_names_the_layer_and_both_shapes(tmp_path):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        del file["layers/conv2d_1/vars/0"]
        file["layers/conv2d_1/vars/0"] = np.zeros((3, 3, 32, 32), np.float32)
    refused(path, "layer 'conv2d_1'", "kernel expected shape (3, 3, 32, 64), found (3, 3, 32, 32)",
            "layers/conv2d_1/vars/0")


def test_a_missing_layer_is_named(tmp_path):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        del file["layers/dense_1"]
    refused(path, "layer 'dense_1'", "not in the file")


def test_every_mismatch_is_listed_at_once(tmp_path):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        del file["layers/dense_2/vars/1"]
        file["layers/dense_2/vars/1"] = np.zeros(10, np.float64)
        file["layers/conv2d_4/vars/2"] = np.zeros(3, np.float32)
        file["layers/dense_3/vars/0"] = np.zeros((84, 10), np.float32)
        del file["layers/conv2d"]
    message = refused(path, "bias expected dtype float32, found float64", "conv2d_4': the file holds 3 arrays",
                      "layers/dense_3: in the file with 1 arrays, but the model has no such layer",
                      "layer 'conv2d': not in the file")
    assert len(message.splitlines()) == 5


def test_a_model_layer_with_another_name_is_found_by_its_keras_key(tmp_path):
    model = alexnet_mnist()
    model.layers[1].name = "lrn"        # keys follow the class and the position, as in Keras, not the name
    assert keras_keys(model)[1][1] == "lambda"
    load_keras_weights(model, WEIGHTS)
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        del file["layers/dense"]
    model.layers[10].name = "fc1"
    with pytest.raises(ValueError, match=r"layer 'fc1' \(Keras layers/dense\): not in the file"):
        load_keras_weights(model, path)


def test_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_text("not HDF5 at all")
    refused(path, "is not an HDF5 file")
    np.savez(tmp_path / "weights.npz", a=np.zeros(3))
    refused(tmp_path / "weights.npz", "is not an HDF5 file")


def test_a_missing_file(tmp_path):
    refused(tmp_path / "nowhere.weights.h5", "no such file", error=FileNotFoundError)


def test_an_hdf5_file_of_another_kind(tmp_path):
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as file:       # the layout of a Keras 2 / tf.keras save_weights('x.h5')
        file.attrs["layer_names"] = [b"conv2d"]
        file.create_group("conv2d")
    refused(path, "no group 'layers'", "Keras 2")


def test_a_link_in_place_of_an_array_is_refused(tmp_path):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        del file["layers/dense_2/vars/1"]
        file["layers/dense_2/vars/1"] = h5py.SoftLink("/layers/dense_1/vars/1")
    refused(path, "layers/dense_2/vars/1 is a link")


def data_offset(dataset):
    """Where the file holds the dataset's (first chunk of) data."""
    return dataset.id.get_offset() if dataset.chunks is None else dataset.id.get_chunk_info(0).byte_offset


def flip_a_bit(path, key, at=1000):
    with h5py.File(path, "r") as file:
        offset = data_offset(file[key]) + at
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_written_file_fails_its_checksum(tmp_path):
    path = tmp_path / "minialex.weights.h5"
    save_keras_weights(scrambled_model(), path)
    with h5py.File(path, "r") as file:
        arrays = [file[f"layers/{key}/vars/{i}"] for key, found in read_keras_weights(path).items()
                  for i in range(len(found))]
        assert len(arrays) == 16 and all(dataset.fletcher32 for dataset in arrays)
    flip_a_bit(path, "layers/dense/vars/0")
    refused(path, f"{path} is damaged: /layers/dense/vars/0 does not match its Fletcher-32 checksum")
    with pytest.raises(keras_weights.WeightsFileError, match="Fletcher-32"):
        read_keras_weights(path)


def test_files_keras_writes_carry_no_checksum_and_are_checked_for_finite_values(tmp_path):
    """What the README says of them: no checksum, so a changed bit shows only where it breaks the
    layout, a shape, a dtype or a value's finiteness."""
    with h5py.File(WEIGHTS, "r") as file:
        assert not any(file[f"layers/{key}/vars/{i}"].fletcher32 for key, arrays in read_keras_weights(WEIGHTS).items()
                       for i in range(len(arrays)))
    path = fixture_copy(tmp_path)
    flip_a_bit(path, "layers/dense/vars/0")      # a float32's lowest byte (little-endian): a small change
    assert not np.array_equal(read_keras_weights(path)["dense"][0], read_keras_weights(WEIGHTS)["dense"][0])
    load_keras_weights(alexnet_mnist(), path)                      # ...that nothing can see
    with h5py.File(path, "r+") as file:
        file["layers/dense/vars/1"][3] = np.inf
    refused(path, "weight dense/bias", "non-finite")


def test_a_corrupt_compressed_chunk_is_named_with_its_file(tmp_path):
    path = tmp_path / "compressed.weights.h5"
    with h5py.File(path, "w") as file:                  # the fixture's arrays, gzip-compressed by h5py
        for key, arrays in read_keras_weights(WEIGHTS).items():
            variables = file.create_group(f"layers/{key}/vars")
            for i, array in enumerate(arrays):
                variables.create_dataset(str(i), data=array, compression="gzip")
    with h5py.File(path, "r") as file:
        chunk = file["layers/dense/vars/0"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset + chunk.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(path, f"{path} is damaged: /layers/dense/vars/0 holds a gzip-compressed chunk that cannot be "
                  f"decompressed")
    with pytest.raises(keras_weights.WeightsFileError, match=f"{path} is damaged"):
        read_keras_weights(path)


def test_without_h5py_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(H5pyMissing, match=r"pip install 'minialex\[keras\]'"):
        load_keras_weights(alexnet_mnist(), WEIGHTS)
    with pytest.raises(H5pyMissing, match=r"pip install 'minialex\[keras\]'"):
        save_keras_weights(alexnet_mnist(), tmp_path / "model.weights.h5")
    assert os.listdir(tmp_path) == []


def test_the_install_hint_names_a_declared_extra():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert any(req.startswith("h5py") for req in extras["keras"])
    assert any(req.startswith("h5py") for req in extras["dev"])


# ---- issue 29: what a damaged or odd file gives is a WeightsFileError naming it ----------------------
@pytest.mark.parametrize("damage, message", [
    ("empty dataset", "layers/conv2d/vars/0 is an empty dataset (no array at all)"),
    ("scalar vars", "layers/conv2d/vars is not a group of arrays"),
    ("nan", "holds weights the model cannot take: bad input: weight conv2d/bias holds 1 non-finite value "
            "(NaN or infinity); fix or drop them"),
])
def test_odd_contents_are_a_weights_file_error_naming_the_file(tmp_path, damage, message):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        if damage == "empty dataset":
            del file["layers/conv2d/vars/0"]
            file.create_dataset("layers/conv2d/vars/0", data=h5py.Empty("f4"))
        elif damage == "scalar vars":
            del file["layers/conv2d/vars"]
            file.create_dataset("layers/conv2d/vars", data=3.0)
        else:
            bias = file["layers/conv2d/vars/1"][()]
            bias[0] = np.nan
            del file["layers/conv2d/vars/1"]
            file["layers/conv2d/vars/1"] = bias
    said = refused(path, message, error=WeightsFileError)
    assert said.startswith(str(path)) and "samples" not in said


def test_a_big_endian_kernel_is_float32_all_the_same(tmp_path):
    path = fixture_copy(tmp_path)
    with h5py.File(path, "r+") as file:
        kernel = file["layers/conv2d/vars/0"][()]
        del file["layers/conv2d/vars/0"]
        file["layers/conv2d/vars/0"] = kernel.astype(">f4")
    model = load_keras_weights(alexnet_mnist(), path)
    np.testing.assert_array_equal(model.layers[0].params["kernel"], kernel)


def test_a_folder_or_a_fifo_is_named_for_what_it_is(tmp_path):
    refused(tmp_path, "is a folder, not a Keras .weights.h5 file", error=IsADirectoryError)
    os.mkfifo(tmp_path / "pipe")
    refused(tmp_path / "pipe", "is not a regular file (a FIFO, a socket or a device)", error=WeightsFileError)


def test_paths_given_as_bytes(tmp_path):
    path = os.fsencode(tmp_path / "model.weights.h5")
    save_keras_weights(load_keras_weights(alexnet_mnist(), WEIGHTS), path)
    assert load_keras_weights(alexnet_mnist(), path).count_params() == 585_546
