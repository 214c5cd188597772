"""The recipe for a new layer (docs/adding_a_layer.md), enforced.

Every public layer of ``minialex.layers`` has each part the recipe asks for: its row in the layer
contract's table, its plain twin and how the layer calls it, a gradient check of the layer and one of
its twin, the layer equal to its twin (training forward, backward, inference) on every one of its
gradient-check cases, its Keras mapping (or an explicit None: no Keras counterpart), a GPU path that
gives the CPU's results, a launch budget, a launch count for every array function it calls, and
for a layer that mixes samples, shards that meet to give the whole batch's results.
``missing_parts`` names what a layer lacks or gets wrong, and where it goes; a made-up layer shows
that each part's absence is caught, and a planted wrong twin that a wrong twin is.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import minialex.layers
from minialex import backend, gradcheck, keras_weights, naive, random, stand_in
from minialex.layers import Layer
from minialex.layers import base as layer_base
from minialex.parallel import run_meeting

from . import layer_budgets, layer_twins
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


TWIN_TOLERANCE = 1e-12     # a layer against its twin, in float64: max |difference| / the largest entry


def twin_problem(make_layer, shape):
    """None if the layer (made by ``make_layer``, on a tie-free input of ``shape``) gives its twin's
    training forward, backward (dx and every weight's gradient) and inference; else what differs."""
    random.set_seed(7)
    layer = make_layer()
    x = gradcheck.tie_free(shape, seed=3)
    y = layer.forward(x, training=True)
    dout = gradcheck.tie_free(y.shape, seed=4)
    got = {"y": y, "dx": layer.backward(dout), **{f"d{name}": grad for name, grad in layer.grads.items()},
           "inference": layer.forward(x)}
    twin = layer_twins.TWIN_CALLS[type(layer).__name__](layer, backend.to_numpy(x), backend.to_numpy(dout))
    for what in got.keys() | twin.keys():
        if what not in got or what not in twin:
            return f"{what} is the layer's or the twin's alone"
        fast, slow = backend.to_numpy(got[what]), np.asarray(twin[what])
        scale = max(np.abs(fast).max(initial=0.0), np.abs(slow).max(initial=0.0))
        if fast.shape != slow.shape or (scale and np.abs(fast - slow).max() / scale > TWIN_TOLERANCE):
            return f"{what} differs"
    return None


def shards_problem(make_layer, shape):
    """None if the layer's shard programs (``forward_meeting``, ``backward_meeting``), the batch cut in
    two shards that meet (``parallel.run_meeting``), give its whole-batch training forward, dx, weight
    gradients and state; else what differs."""
    whole = make_layer()
    if not all(callable(getattr(whole, way, None)) for way in ("forward_meeting", "backward_meeting")):
        return "it has no forward_meeting and backward_meeting"
    x = gradcheck.tie_free(shape, seed=3)
    y = whole.forward(x, training=True)
    dout = gradcheck.tie_free(y.shape, seed=4)
    expected = {"y": y, "dx": whole.backward(dout), **{f"d{name}": grad for name, grad in whole.grads.items()},
                **whole.state}
    own = make_layer()
    shards = [own, own.replica()]
    shards[1].grads = {name: np.zeros_like(grad) for name, grad in own.grads.items()}     # as a model's replica
    rows = [slice(0, shape[0] // 2), slice(shape[0] // 2, shape[0])]
    ys = run_meeting(lambda k: shards[k].forward_meeting(x[rows[k]]), 2)
    dxs = run_meeting(lambda k: shards[k].backward_meeting(dout[rows[k]]), 2)
    got = {"y": np.concatenate(ys), "dx": np.concatenate(dxs),
           **{f"d{name}": grad + shards[1].grads[name] for name, grad in own.grads.items()}, **own.state}
    for what, value in expected.items():
        if not np.allclose(got[what], value, rtol=1e-12, atol=1e-14):
            return f"{what} differs"
    return None


def missing_parts(cls):
    """[what the recipe asks of layer class ``cls`` that it lacks or gets wrong, and where it goes]."""
    name, missing = cls.__name__, []
    if name not in documented_saved_state():
        missing.append("its row in the layer contract's table (what a training forward keeps): "
                       "minialex/layers/base.py")
    twin = naive.TWINS.get(name)
    has_twin = twin is not None and all(callable(getattr(naive, f"{twin}_{way}", None))
                                        for way in ("forward", "backward"))
    if not has_twin:
        missing.append("its plain twin: NAME_forward and NAME_backward in minialex/naive.py, NAME in naive.TWINS")
    if name not in layer_twins.TWIN_CALLS:
        missing.append("how it calls its twin (its settings, weights and results): TWIN_CALLS in tests/layer_twins.py")
    cases = [(what, make_layer, shape) for what, make_layer, shape in gradcheck.layer_cases()
             if type(make_layer()) is cls]
    if not cases:
        missing.append("its gradient check: a case in layer_cases() in minialex/gradcheck.py")
    if twin is None or twin not in {case[1] for case in gradcheck.twin_cases()}:
        missing.append("its twin's gradient check: a case in twin_cases() in minialex/gradcheck.py")
    if has_twin and name in layer_twins.TWIN_CALLS:
        differences = [f"{what}: {problem}" for what, make_layer, shape in cases
                       if (problem := twin_problem(make_layer, shape))]
        if differences:
            missing.append(f"{name} equal to its twin (on {'; '.join(differences)}): the layer, or its twin in "
                           "minialex/naive.py, is wrong")
    if cls.mixes_samples:
        problems = [f"{what}: {problem}" for what, make_layer, shape in cases
                    if (problem := shards_problem(make_layer, shape))]
        if problems:
            missing.append(f"its shards meeting (on {'; '.join(problems)}): forward_meeting and backward_meeting "
                           "that yield their sums (see mixes_samples in minialex/layers/base.py)")
    if name not in keras_weights.KERAS_CLASSES:
        missing.append("its Keras mapping: KERAS_CLASSES in minialex/keras_weights.py (None: no Keras counterpart)")
    problems = [gpu_path_problem(make_layer, shape) for _, make_layer, shape in cases]
    if any(problems):
        missing.append(f"its GPU path ({next(p for p in problems if p)}): a kernels.gpu function (its CUDA half "
                       "in minialex/kernels.py), backend.fuse, or array code that takes xp from its arrays")
    if name not in layer_budgets.LAYER_BUDGETS:
        missing.append("its launch budget: LAYER_BUDGETS in tests/layer_budgets.py")
    elif not any(problems):
        _, assumed = layer_budgets.layer_launches(*layer_budgets.LAYER_BUDGETS[name][:2])
        if assumed:
            missing.append(f"the launches of the array functions it calls ({', '.join(sorted(assumed))}): "
                           "FUNCTION_LAUNCHES in minialex/stand_in.py")
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
    for place in ("minialex/layers/base.py", "minialex/naive.py", "naive.TWINS", "TWIN_CALLS", "tests/layer_twins.py",
                  "layer_cases()", "twin_cases()", "KERAS_CLASSES", "minialex/kernels.py", "kernels.gpu",
                  "backend.fuse", "LAYER_BUDGETS", "FUNCTION_LAUNCHES", "minialex/stand_in.py",
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


def scale_twin_call(layer, x, dout):
    return {"y": naive.scale_forward(x), "dx": naive.scale_backward(dout, x), "inference": naive.scale_forward(x)}


PARTS = ("table row", "twin", "twin call", "gradient check", "twin's gradient check", "Keras", "launch budget")


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
        if "twin call" not in without:
            monkeypatch.setitem(layer_twins.TWIN_CALLS, name, scale_twin_call)
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
        "how it calls its twin (its settings, weights and results)", "its gradient check",
        "its twin's gradient check", "its Keras mapping", "its launch budget"]


@pytest.mark.parametrize("part,named", list(zip(PARTS, [
    "row in the layer contract's table", "plain twin", "how it calls its twin", "its gradient check",
    "twin's gradient check", "Keras mapping", "launch budget"])))
def test_each_part_left_out_is_named(register, part, named):
    register(Scale, without={part})
    missing = missing_parts(Scale)
    assert len(missing) == 1 and named in missing[0], missing


def test_a_layer_without_a_gpu_path_is_named(register):
    register(CpuOnlyScale)
    (missing,) = missing_parts(CpuOnlyScale)
    assert missing.startswith("its GPU path (it fails: NotImplementedError: no GPU path yet)")


# ---- a layer that is not its twin -------------------------------------------------------------------

class MirrorMean(Scale):
    """Average-pooling gone wrong in the way a review found, in small: a layer that averages each value
    with its mirror image across the row, whose twin sums them (with a backward to match its own sum),
    added by the recipe with every part there."""

    def forward(self, x, training=False):
        x = self._prepare(x)
        return (x + x[:, ::-1]) / 2.0

    def backward(self, dout, input_grad=True):
        return (dout + dout[:, ::-1]) / 2.0


def test_a_layer_that_differs_from_its_twin_is_named(register, monkeypatch):
    register(MirrorMean)
    monkeypatch.setattr(naive, "scale_forward", lambda x: x + x[:, ::-1])
    monkeypatch.setattr(naive, "scale_backward", lambda dout, x: dout + dout[:, ::-1])
    (missing,) = missing_parts(MirrorMean)
    assert missing.startswith("MirrorMean equal to its twin (on MirrorMean, 2x3: ") and "differs" in missing, missing


@pytest.mark.parametrize("layer,twin,wrong", [
    ("LocalResponseNorm", "lrn_backward",                   # dout / den^beta: the window's term forgotten
     lambda dout, x, *lrn: dout * naive.lrn_forward(x, *lrn) / x),
    ("MaxPool2D", "maxpool2d_forward", lambda x, *pool, max_pool=naive.maxpool2d_forward: -max_pool(-x, *pool)),
    ("BatchNormalization", "batchnorm_backward",            # dout * gamma / std: the statistics' terms forgotten
     lambda dout, x, gamma, epsilon, backward=naive.batchnorm_backward: (
         dout * gamma / (naive.batchnorm_statistics(x)[1] + epsilon) ** 0.5, *backward(dout, x, gamma, epsilon)[1:])),
])
def test_a_planted_wrong_twin_fails_naming_its_layer(monkeypatch, layer, twin, wrong):
    monkeypatch.setattr(naive, twin, wrong)
    (missing,) = missing_parts(getattr(minialex.layers, layer))
    assert missing.startswith(f"{layer} equal to its twin (on "), missing


# ---- a layer that mixes samples: its shards must meet -------------------------------------------------

class Centre(Scale):
    """y = x minus the batch's mean: a layer that mixes samples, its shards meeting as the recipe says."""

    mixes_samples = True

    def forward(self, x, training=False):
        return x - x.mean(axis=0)

    def backward(self, dout, input_grad=True):
        return dout - dout.mean(axis=0)

    def forward_meeting(self, x):
        total, count = yield x.sum(axis=0), x.shape[0]
        return x - total / count

    def backward_meeting(self, dout, input_grad=True):
        total, count = yield dout.sum(axis=0), dout.shape[0]
        return dout - total / count


class CentreByItsOwnRows(Centre):
    """Centre, its shards each taking their own rows' mean: they never meet."""

    def forward_meeting(self, x):
        return self.forward(x)
        yield                                  # noqa: a generator that never meets


def test_a_layer_that_mixes_samples_must_meet_the_other_shards():
    assert shards_problem(Centre, (6, 3)) is None
    assert shards_problem(CentreByItsOwnRows, (6, 3)) == "y differs"
    assert shards_problem(type("Unmet", (Scale,), {"mixes_samples": True}), (6, 3)) == \
        "it has no forward_meeting and backward_meeting"


class Rolled(Scale):
    """Scale through an array function the launch counter does not know (``roll``, by zero: a no-op)."""

    def forward(self, x, training=False):
        x = self._prepare(x)
        return backend.get_array_module(x).roll(x * 3.0, 0, axis=0)


def test_an_array_function_without_a_launch_count_is_named(register):
    register(Rolled)
    (missing,) = missing_parts(Rolled)
    assert missing == "the launches of the array functions it calls (roll): FUNCTION_LAUNCHES in minialex/stand_in.py"
