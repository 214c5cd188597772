"""Each layer of the tutorial network at its real shapes (batch 64): forward, and forward + backward."""
import pytest

import common
from minialex import backend

LAYER_NAMES = [layer.name for layer in common.tutorial_model().layers]


@pytest.fixture
def layer_and_input(model, batch, request):
    pairs = dict((layer.name, (layer, x)) for layer, x in common.layer_inputs(model, batch[0]))
    layer, x = pairs[request.param]
    return layer, x, layer is not model.layers[0]     # as in training: no dx for the first layer


@pytest.mark.parametrize("layer_and_input", LAYER_NAMES, indirect=True)
def test_forward(run, benchmark, layer_and_input):
    layer, x, _ = layer_and_input
    run(lambda: layer.forward(x, training=True))
    benchmark.extra_info["gflop"] = common.layer_flops(layer, common.BATCH, backward=False) / 1e9


@pytest.mark.parametrize("layer_and_input", LAYER_NAMES, indirect=True)
def test_forward_backward(run, benchmark, layer_and_input):
    layer, x, input_grad = layer_and_input
    dout = backend.xp().ones_like(layer.forward(x, training=True))
    run(lambda: (layer.forward(x, training=True), layer.backward(dout, input_grad=input_grad)))
    benchmark.extra_info["gflop"] = common.layer_flops(layer, common.BATCH, input_grad=input_grad) / 1e9
