"""BatchNormalization: Keras's semantics, equal to its plain twin, its weights that are not trained,
its GPU path, and how a model holding it trains in shards (which meet: the layer mixes the samples of
a batch).

The data-parallel tests compare models in float64, so that only summation order could differ; the
thread-count test in float32, bit for bit.
"""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minialex import backend, naive, random, training
from minialex.gradcheck import TOLERANCE, check_layer, check_model, tie_free
from minialex.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from minialex.models import Sequential, alexnet_mnist
from minialex.optimizers import Adam
from minialex.parallel import shard_plan

from .test_data_parallel import train_unsharded
from .test_kernels import through_gpu_path
from .test_naive import assert_twins, host, inputs


def built(shape, seed=0, **kwargs):
    """A float64 layer built for ``shape`` with gamma and beta (those it has) drawn away from 1 and 0."""
    layer = BatchNormalization(input_shape=shape[1:], dtype="float64", **kwargs)
    for k, param in enumerate(layer.params.values()):
        param[...] = backend.to_device(inputs(param.shape, seed + k) * 0.5 + 1.0)
    return layer


def gamma_beta(layer, channels):
    """The layer's gamma and beta on the host, ones and zeros where scale=False or center=False."""
    return (host(layer.params["gamma"]) if "gamma" in layer.params else np.ones(channels),
            host(layer.params["beta"]) if "beta" in layer.params else np.zeros(channels))


# ---- Keras's semantics, against the plain twin --------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 5), (1, 1, 1, 3)])
@pytest.mark.parametrize("options", [{}, {"scale": False}, {"center": False, "momentum": 0.9, "epsilon": 0.1}])
def test_training_forward_and_backward_equal_the_twin(xp_backend, shape, options):
    layer = built(shape, **options)
    x, dout = inputs(shape, 1) * 3.0 + 1.0, inputs(shape, 2)
    y = layer.forward(backend.to_device(x), training=True)
    dx = layer.backward(backend.to_device(dout))
    gamma, beta = gamma_beta(layer, shape[-1])
    twin_dx, twin_dgamma, twin_dbeta = naive.batchnorm_backward(dout, x, gamma, layer.epsilon)
    assert_twins(y=(y, naive.batchnorm_forward(x, gamma, beta, layer.epsilon)), dx=(dx, twin_dx))
    for name, twin in (("gamma", twin_dgamma), ("beta", twin_dbeta)):
        if name in layer.grads:
            assert_twins(**{"d" + name: (layer.grads[name], twin)})


def test_moving_statistics_follow_keras_s_rule_with_the_biased_variance(xp_backend):
    """moving = momentum * moving + (1 - momentum) * batch, from mean 0 and variance 1, step by step."""
    layer = built((6, 2, 3, 4), momentum=0.8)
    expected_mean, expected_variance = np.zeros(4), np.ones(4)
    for seed in range(3):
        x = inputs((6, 2, 3, 4), seed) * 2.0 + seed
        layer.forward(backend.to_device(x), training=True)
        mean, variance = naive.batchnorm_statistics(x)
        np.testing.assert_allclose(variance, x.reshape(-1, 4).var(axis=0, ddof=0))
        expected_mean = 0.8 * expected_mean + 0.2 * mean
        expected_variance = 0.8 * expected_variance + 0.2 * variance
    np.testing.assert_allclose(host(layer.state["moving_mean"]), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(host(layer.state["moving_variance"]), expected_variance, rtol=1e-12)


def test_inference_uses_the_moving_statistics_and_keeps_nothing(xp_backend):
    layer = built((5, 3, 3, 4))
    layer.state["moving_mean"][...] = backend.to_device(np.array([0.5, -1.0, 2.0, 0.0]))
    layer.state["moving_variance"][...] = backend.to_device(np.array([4.0, 0.25, 1.0, 9.0]))
    x = inputs((5, 3, 3, 4), 3)
    before = set(vars(layer))
    y = host(layer.forward(backend.to_device(x)))
    gamma, beta = gamma_beta(layer, 4)
    expected = gamma * (x - [0.5, -1.0, 2.0, 0.0]) / np.sqrt(np.array([4.0, 0.25, 1.0, 9.0]) + 1e-3) + beta
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert set(vars(layer)) == before


def test_keras_s_defaults_and_names():
    layer = BatchNormalization(input_shape=(5, 5, 3))
    assert (layer.momentum, layer.epsilon, layer.name) == (0.99, 1e-3, "batch_normalization")
    assert list(layer.params) == ["gamma", "beta"] and list(layer.state) == ["moving_mean", "moving_variance"]
    assert [host(w).tolist() for w in layer.trainable_weights + layer.non_trainable_weights] == [[1.0] * 3, [0.0] * 3,
                                                                                                [0.0] * 3, [1.0] * 3]
    assert layer.count_params() == 12 and set(layer.grads) == {"gamma", "beta"}
    assert BatchNormalization(scale=False, center=False, input_shape=(4,)).count_params() == 8


@pytest.mark.parametrize("make,message", [
    (lambda: BatchNormalization(momentum=1.5), "momentum"), (lambda: BatchNormalization(epsilon=0.0), "epsilon"),
    (lambda: BatchNormalization(input_shape=()), "channels axis"),
])
def test_bad_hyperparameters_get_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_backward_that_forgets_the_statistics_fails_the_gradient_check(xp_backend):
    """dx = dout * gamma / sqrt(var + epsilon) forgets what the mean and the variance send back."""
    class Forgetful(BatchNormalization):
        def backward(self, dout, input_grad=True):
            super().backward(dout)
            return dout * self.params["gamma"] / (self._variance + self.epsilon) ** 0.5

    x = tie_free((3, 2, 2, 4), seed=1)
    assert max(check_layer(built((3, 2, 2, 4)), x).values()) <= TOLERANCE
    layer = Forgetful(input_shape=(2, 2, 4), dtype="float64")
    assert check_layer(layer, x)["x"] > 1e-2


# ---- the GPU path, through the stand-in (the CUDA halves against the NumPy halves: test_kernels.py) ----

def test_the_gpu_path_gives_the_cpu_results():
    """Training forward, backward, moving statistics and inference, through the launch counter's stand-in."""
    x, dout = inputs((3, 4, 5, 6), 4) * 2.0, inputs((3, 4, 5, 6), 5)

    def run(x, dout):
        layer = built((3, 4, 5, 6), momentum=0.7)
        y = layer.forward(x, training=True)
        dx = layer.backward(dout)
        return y, dx, layer.grads["gamma"], layer.grads["beta"], *layer.state.values(), layer.forward(x)

    for got, expected in zip(through_gpu_path(run, x, dout), run(x, dout)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


# ---- weights that are not trained ----------------------------------------------------------------

def small_model(dtype="float64", seed=3):
    random.set_seed(seed)
    model = Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1), dtype=dtype),
        BatchNormalization(dtype=dtype),
        MaxPool2D(2),
        Flatten(),
        Dense(16, activation="relu", dtype=dtype),
        BatchNormalization(momentum=0.9, dtype=dtype),
        Dropout(0.5),
        Dense(10, activation="softmax", dtype=dtype),
    ])
    model.compile(optimizer=Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def batch(n, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)).astype(dtype), np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]


def test_the_moving_statistics_are_weights_that_adam_never_sees():
    model = small_model()
    trainable, frozen = 40 + 8 + 1040 + 32 + 170, 8 + 32
    assert model.count_params() == trainable + frozen
    assert model.flat_parameters.size == trainable and model.flat_state.size == frozen
    assert [name for name, _ in model.weight_items()][2:6] == [
        "batch_normalization/gamma", "batch_normalization/beta", "batch_normalization/moving_mean",
        "batch_normalization/moving_variance"]
    model.train_on_batch(*batch(32))
    assert [slot.size for slot in model.optimizer.slots["m"]] == [trainable]
    moving = model.layers[1].state["moving_mean"]
    assert np.shares_memory(moving, model.flat_state) and moving.any()      # moved by the forward, in place
    assert len(model.get_weights()) == 14


def test_summary_reports_trainable_and_non_trainable_as_keras():
    model = alexnet_mnist(norm="batchnorm")
    text = model.summary(print_fn=lambda text: None)
    assert "Total params: 585,930\nTrainable params: 585,738\nNon-trainable params: 192" in text
    assert " batch_normalization_1 (BatchNormalization)  (None, 15, 15, 64)" in text
    assert "Non-trainable params: 0" in alexnet_mnist().summary(print_fn=lambda text: None)
    with pytest.raises(ValueError, match="norm must be 'lrn'"):
        alexnet_mnist(norm="layernorm")


def test_moving_statistics_are_saved_loaded_and_checkpointed(tmp_path):
    x, y = batch(48)
    model = small_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, checkpoint=tmp_path / "run.npz")
    model.save_weights(tmp_path / "weights.npz")
    for load in (lambda m: m.load_weights(tmp_path / "weights.npz"),
                 lambda m: training.load_checkpoint(tmp_path / "run.npz", m)):
        fresh = small_model(seed=9)
        load(fresh)
        np.testing.assert_array_equal(fresh.flat_state, model.flat_state)
        np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_step_leaves_the_moving_statistics_as_they_were():
    model = small_model()
    model.train_on_batch(*batch(16))
    before = model.flat_state.copy()
    x, y = batch(16, seed=1)
    x[3, 2, 2, 0] = np.inf
    with pytest.raises(ValueError, match="x"):
        model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.flat_state, before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_the_guard_puts_back_the_moving_statistics_with_the_weights(monkeypatch):
    monkeypatch.setattr(training, "SNAPSHOT_SECONDS", 1e9)       # the only good copy: the one fit starts from
    model = small_model()
    model.train_on_batch(*batch(16))
    model.layers[7].params["kernel"][0, 0] = np.inf                # the loss is NaN; the statistics move first
    weights = model.get_weights()
    x, y = batch(32, seed=2)
    with pytest.raises(training.NonFiniteLossError):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for got, expected in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, expected)


# ---- a layer that mixes samples and the data-parallel step ----------------------------------------

@pytest.mark.parametrize("threads, n, shards", [(1, 64, 2), (2, 64, 2), (2, 100, 3), (1, 128, 4), (2, 128, 4)])
def test_the_sharded_step_equals_the_unsharded_one(threads, n, shards):
    """The shards meet at each BatchNormalization and normalise by the whole batch's statistics, so
    the step is the unsharded one up to summation order, its moving statistics the whole batch's;
    with fewer threads than shards too (they run in turns)."""
    assert len(shard_plan(n)) == shards
    plain, plain_results = train_unsharded(3, n, small_model, batch)
    model = small_model()
    with threadpool_limits(threads, user_api="blas"):
        results = [model.train_on_batch(*batch(n, seed=step)) for step in range(3)]
    np.testing.assert_allclose(results, plain_results, rtol=1e-12)
    np.testing.assert_allclose(model.flat_gradients, plain.flat_gradients, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(model.flat_parameters, plain.flat_parameters, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.flat_state, plain.flat_state, rtol=1e-12)


def test_shards_that_did_not_meet_would_be_wrong(monkeypatch):
    """Why they meet: alone, each shard would normalise by its own rows' statistics, and the moving
    statistics would follow shard 0's."""
    plain = small_model()
    plain.train_on_batch(*batch(64))
    monkeypatch.setattr(BatchNormalization, "mixes_samples", False)   # as if it did not mix them
    sharded = small_model()
    sharded.train_on_batch(*batch(64))
    assert np.abs(sharded.flat_parameters - plain.flat_parameters).max() > 1e-6
    assert np.abs(sharded.flat_state - plain.flat_state).max() > 1e-3


def test_the_tutorial_network_changes_no_bit_with_the_thread_count():
    """The chapter's network, a batch of 64 (2 shards) and a last one of 32 (2 shards of 16)."""
    rng = np.random.default_rng(4)
    x = rng.random((96, 32, 32, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 96)]
    runs = []
    for threads in (1, 2, 4):
        random.set_seed(0)
        model = alexnet_mnist(norm="batchnorm")
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        with threadpool_limits(threads, user_api="blas"):
            history = model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
        runs.append((history.history, model.flat_parameters.copy(), model.flat_state.copy()))
    for history, params, state in runs[1:]:
        assert history == runs[0][0]
        assert np.array_equal(params, runs[0][1]) and np.array_equal(state, runs[0][2])


@pytest.mark.parametrize("n", [64, 100])
def test_the_thread_count_changes_no_bit(n):
    runs = []
    for threads in (1, 2, 4):
        model = small_model(dtype="float32")
        with threadpool_limits(threads, user_api="blas"):
            results = [model.train_on_batch(*batch(n, seed=step, dtype="float32")) for step in range(3)]
        runs.append((results, model.flat_parameters.copy(), model.flat_state.copy()))
    for results, params, state in runs[1:]:
        assert results == runs[0][0]
        assert np.array_equal(params, runs[0][1]) and np.array_equal(state, runs[0][2])


def test_the_moving_statistics_are_the_whole_batch_s():
    model = small_model()
    x, y = batch(64)
    features = host(model.layers[0].forward(x))                     # the first BatchNormalization's input
    model.train_on_batch(x, y)
    mean, variance = features.reshape(-1, 4).mean(axis=0), features.reshape(-1, 4).var(axis=0)
    np.testing.assert_allclose(host(model.layers[1].state["moving_mean"]), 0.01 * mean, rtol=1e-12)
    np.testing.assert_allclose(host(model.layers[1].state["moving_variance"]), 0.99 + 0.01 * variance, rtol=1e-12)


def test_a_model_with_it_passes_the_gradient_check_end_to_end(xp_backend):
    random.set_seed(0)
    model = alexnet_mnist(norm="batchnorm", dtype="float64")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    for layer in (model.layers[1], model.layers[4]):            # gamma away from 1, beta away from 0
        for k, param in enumerate(layer.params.values()):
            param[...] = tie_free(param.shape, seed=k, low=0.5, high=1.5)
    x = tie_free((2, 32, 32, 1), seed=1, low=0.0, high=1.0)
    errors = check_model(model, x, backend.to_device(np.eye(10)[[4, 9]]), samples=12)
    assert len(errors) == 1 + 20 and max(errors.values()) <= TOLERANCE, errors
