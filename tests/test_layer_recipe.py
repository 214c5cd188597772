"""The recipe for a new layer (docs/adding_a_layer.md), enforced.

Every public layer of ``minialex.layers`` has each part the recipe asks for: its row in the layer
contract's table, its plain twin, a gradient check of the layer and one of its twin, its Keras mapping
(or an explicit None: no Keras counterpart), a GPU path that gives the CPU's results, and a launch
budget. ``missing_parts`` names what a layer lacks, and where it goes; a made-up layer shows that each
part's absence is caught.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import minialex.layers
from minialex import backend, gradcheck, keras_weights, naive, random, stand_in
from minialex.layers import Layer
from minialex.layers import base as layer_base

from . import layer_budgets
from .test_layers import documented_saved_state

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_a_layer.md"


def public_layers():
    """The layer classes ``minialex.layers`` exports (Layer itself aside)."""
    exported = [getattr(minialex.layers, name) for name in minialex.layers.__all__]
    return [cls for cls in exported if isinstance(cls, type) and issubclass(cls, Layer) and cls is not Layer]


def gpu_path_problem(make_layer, shape):
    """None if the layer's GPU path (run through the launch counter's stand-in, which takes every
    branch a GPU takes) gives its CPU path's training forward, backward and inference forward; else
    what went wrong."""
    x = np.random.default_rng(0).standard_normal(shape)
    dout = np.random.default_rng(1).standard_normal(make_layer().forward(backend.to_device(x)).shape)

    def run(x, dout):
        random.set_seed(5)
        layer = make_layer()
        y = layer.forward(x, training=True)
        return y, layer.backward(dout), layer.forward(x)

    cpu = run(x, dout)
    try:
        with stand_in.counting():
            gpu = [np.asarray(a).copy() for a in run(backend.to_device(x), backend.to_device(dout))]
    except Exception as exc:            # noqa: BLE001  (any failure is the answer)
        return f"it fails: {type(exc).__name__}: {exc}"
    for what, expected, got in zip(("training forward", "backward", "inference"), cpu, gpu):
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-10, atol=1e-12):
            return f"its {what} differs from the CPU's"
    return None


def missing_parts(cls):
    """[what the recipe asks of layer class ``cls`` that it lacks, and where it goes]."""
    name, missing = cls.__name__, []
    if name not in documented_saved_state():
        missing.append("its row in the layer contract's table (what a training forward keeps): "
                       "minialex/layers/base.py")
    twin = naive.TWINS.get(name)
    if twin is None or not all(callable(getattr(naive, f"{twin}_{way}", None)) for way in ("forward", "backward")):
        missing.append("its plain twin: NAME_forward and NAME_backward in minialex/naive.py, NAME in naive.TWINS")
    cases = [(make_layer, shape) for _, make_layer, shape in gradcheck.layer_cases() if type(make_layer()) is cls]
    if not cases:
        missing.append("its gradient check: a case in layer_cases() in minialex/gradcheck.py")
    if twin is None or twin not in {case[1] for case in gradcheck.twin_cases()}:
        missing.append("its twin's gradient check: a case in twin_cases() in minialex/gradcheck.py")
    if name not in keras_weights.KERAS_CLASSES:
        missing.append("its Keras mapping: KERAS_CLASSES in minialex/keras_weights.py (None: no Keras counterpart)")
    problems = [gpu_path_problem(*case) for case in cases]
    if any(problems):
        missing.append(f"its GPU path ({next(p for p in problems if p)}): a kernel in minialex/kernels.py, "
                       "backend.fuse, or array code that takes xp from its arrays")
    if name not in layer_budgets.LAYER_BUDGETS:
        missing.append("its launch budget: LAYER_BUDGETS in tests/layer_budgets.py")
    return missing


@pytest.mark.parametrize("cls", public_layers(), ids=lambda cls: cls.__name__)
def test_every_public_layer_has_every_part(cls):
    assert missing_parts(cls) == [], f"{cls.__name__} lacks:\n  " + "\n  ".join(missing_parts(cls))


def test_the_walk_finds_every_layer_file():
    """A layer module that minialex.layers does not export would escape the walk."""
    defined = {name for path in Path(minialex.layers.__file__).parent.glob("*.py")
               for name in re.findall(r"^class (\w+)\(", path.read_text(), re.MULTILINE)}
    helpers = {"WithActivation"}                      # a base class, not a layer of its own
    assert defined - helpers - {"Layer"} == {cls.__name__ for cls in public_layers()}


def test_the_recipe_page_names_every_place_the_test_checks():
    text = DOC.read_text(encoding="utf-8")
    for place in ("minialex/layers/base.py", "minialex/naive.py", "naive.TWINS", "layer_cases()", "twin_cases()",
                  "KERAS_CLASSES", "minialex/kernels.py", "backend.fuse", "LAYER_BUDGETS",
                  "tests/test_layer_recipe.py"):
        assert place in text, place


# ---- a made-up layer: complete, then with each part taken away ------------------------------------

class Scale(Layer):
    """y = 3 x: a layer with nothing to it, to be added by the recipe."""

    def forward(self, x, training=False):
        x = self._prepare(x)
        return x * 3.0

    def backward(self, dout, input_grad=True):
        return dout * 3.0


class CpuOnlyScale(Scale):
    """Scale, with a GPU branch that was never written."""

    def forward(self, x, training=False):
        if not backend.on_cpu(x):
            raise NotImplementedError("no GPU path yet")
        return super().forward(x, training)


def scale_forward(x):
    return x * 3.0


def scale_backward(dout, x):
    return dout * 3.0


PARTS = ("table row", "twin", "gradient check", "twin's gradient check", "Keras", "launch budget")


@pytest.fixture
def register(monkeypatch):
    """register(cls, without=()): puts layer class ``cls`` (a Scale) in every table the recipe names, as
    its page says, except the parts named in ``without`` (names from PARTS); undone after the test."""
    def register(cls, without=()):
        name = cls.__name__
        if "table row" not in without:
            row = f"    {name}{' ' * (22 - len(name))}(nothing)\n"
            monkeypatch.setattr(layer_base, "__doc__", layer_base.__doc__.replace("    Flatten ", row + "    Flatten "))
        if "twin" not in without:
            monkeypatch.setattr(naive, "scale_forward", scale_forward, raising=False)
            monkeypatch.setattr(naive, "scale_backward", scale_backward, raising=False)
        monkeypatch.setitem(naive.TWINS, name, "scale")
        if "gradient check" not in without:
            layer_cases = gradcheck.layer_cases
            monkeypatch.setattr(gradcheck, "layer_cases", lambda: layer_cases() + [(f"{name}, 2x3", cls, (2, 3))])
        if "twin's gradient check" not in without:
            twin_cases = gradcheck.twin_cases
            monkeypatch.setattr(gradcheck, "twin_cases", lambda seed=0: twin_cases(seed) + [
                ("naive scale, 2x3", "scale", scale_forward, lambda d, x: {"x": scale_backward(d, x)},
                 {"x": gradcheck.tie_free((2, 3))})])
        if "Keras" not in without:
            monkeypatch.setitem(keras_weights.KERAS_CLASSES, name, None)
        if "launch budget" not in without:
            monkeypatch.setitem(layer_budgets.LAYER_BUDGETS, name, (cls, (2, 3), (1, 1, 1)))

    return register


def test_a_layer_with_every_part_passes(register):
    register(Scale)
    assert missing_parts(Scale) == []


def test_a_layer_added_without_its_parts_fails_naming_each_one(monkeypatch):
    monkeypatch.setattr(minialex.layers, "Scale", Scale, raising=False)
    monkeypatch.setattr(minialex.layers, "__all__", minialex.layers.__all__ + ["Scale"])
    assert Scale in public_layers()                         # the walk finds it
    missing = missing_parts(Scale)
    assert [part.split(":")[0] for part in missing] == [
        "its row in the layer contract's table (what a training forward keeps)", "its plain twin",
        "its gradient check", "its twin's gradient check", "its Keras mapping", "its launch budget"]


@pytest.mark.parametrize("part,named", list(zip(PARTS, ["row in the layer contract's table", "plain twin",
                                                   "its gradient check", "twin's gradient check", "Keras mapping",
                                                   "launch budget"])))
def test_each_part_left_out_is_named(register, part, named):
    register(Scale, without={part})
    missing = missing_parts(Scale)
    assert len(missing) == 1 and named in missing[0], missing


def test_a_layer_without_a_gpu_path_is_named(register):
    register(CpuOnlyScale)
    (missing,) = missing_parts(CpuOnlyScale)
    assert missing.startswith("its GPU path (it fails: NotImplementedError: no GPU path yet)")
