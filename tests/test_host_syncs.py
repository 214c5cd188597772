"""No hidden host round-trips in fit's inner loop, checked on the CPU with a device double.

``DeviceArray`` is a NumPy array playing a GPU array: every read-back to the host (float(), int(),
bool(), .item(), .tolist(), .get(), backend.to_numpy) and every device synchronisation is counted. With the GPU's policy switched on,
fit must read back a fixed handful of values per epoch, however many steps the epoch has.
"""
import numpy as np
import pytest

from minialex import backend, random

from .test_models import quadrant_data, small_model


class DeviceArray(np.ndarray):
    reads = 0

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return np.asarray(array).view(type(self))      # results stay "on the device", 0-d ones too

    def _read(self):
        DeviceArray.reads += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._read())

    def __int__(self):
        return int(self._read())

    def __bool__(self):
        return bool(self._read())

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()

    def get(self):
        return self._read().copy()


@pytest.fixture
def gpu_policy(monkeypatch):
    """NumPy arrays, but fit behaves as on a GPU and data moved to the device is a DeviceArray."""
    monkeypatch.setattr(backend, "get_backend", lambda: "cupy")
    monkeypatch.setattr(backend, "to_device", lambda a, dtype=None: np.asarray(a, dtype=dtype).view(DeviceArray))
    real_to_numpy = backend.to_numpy

    def counting_to_numpy(array):
        DeviceArray.reads += isinstance(array, DeviceArray)
        return real_to_numpy(np.asarray(array))

    def counting_synchronize():
        DeviceArray.reads += 1

    monkeypatch.setattr(backend, "to_numpy", counting_to_numpy)
    monkeypatch.setattr(backend, "synchronize", counting_synchronize)
    DeviceArray.reads = 0


def reads_during_fit(samples, epochs=2):
    x, y = quadrant_data(samples)
    random.set_seed(0)
    model = small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    DeviceArray.reads = 0
    history = model.fit(x, y, epochs=epochs, batch_size=8, validation_split=0.2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    return DeviceArray.reads


def test_the_double_counts_read_backs(gpu_policy):
    value = backend.to_device(np.ones(3)).sum()
    assert isinstance(value, DeviceArray)
    float(value), bool(value > 0), value.item()
    assert DeviceArray.reads == 3


def test_fit_reads_back_per_epoch_not_per_step(gpu_policy):
    few, many = reads_during_fit(50), reads_during_fit(200)   # 5 and 20 steps per epoch
    assert few == many, f"read-backs grow with the step count: {few} for 5 steps, {many} for 20"
    per_epoch = many - reads_during_fit(200, epochs=1)
    assert per_epoch <= 6 and many - 2 * per_epoch <= 6   # a handful per epoch, and a handful checking the inputs
