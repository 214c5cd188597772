"""The data-parallel CPU training step (minialex.parallel): shards on threads give the one-thread step's results.

The step uses as many shards as BLAS has threads, so each test sets the thread count itself
(threadpoolctl): one thread for the plain step, two or three for the sharded one, whatever the
machine's core count. The models are float64, so that what remains is summation order (~1e-15).
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minialex import random
from minialex.layers import Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D
from minialex.models import Sequential
from minialex.parallel import MIN_SHARD_ROWS, RowSlicedGenerator, replicas_of, shard_plan


def small_model(seed=3):
    random.set_seed(seed)
    model = Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1), dtype="float64"),
        LocalResponseNorm(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75),
        MaxPool2D(2),
        Flatten(),
        Dense(16, activation="relu", dtype="float64"),
        Dropout(0.5),
        Dense(10, activation="softmax", dtype="float64"),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)), np.eye(10)[rng.integers(0, 10, n)]


def train(threads, steps, n):
    """Train a fresh small model ``steps`` steps on batches of ``n`` with BLAS on ``threads`` threads."""
    model = small_model()
    results = []
    with threadpool_limits(threads, user_api="blas"):
        for step in range(steps):
            results.append(model.train_on_batch(*batch(n, seed=step)))
    return model, results


@pytest.mark.parametrize("threads, n", [(2, 32), (3, 41)])
def test_sharded_step_matches_the_one_thread_step(threads, n):
    plain, plain_results = train(1, steps=3, n=n)
    sharded, sharded_results = train(threads, steps=3, n=n)
    replicas = replicas_of(sharded, threads - 1)
    np.testing.assert_allclose(sharded_results, plain_results, rtol=1e-12)
    np.testing.assert_allclose(sharded.flat_gradients, plain.flat_gradients, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sharded.flat_parameters, plain.flat_parameters, rtol=1e-10, atol=1e-14)
    assert random.get_rng().position > 0
    # the shards' dropout masks, put together, are the one-thread step's: same rows dropped
    plain_mask = plain.layers[5]._mask
    sharded_masks = [sharded.layers[5]._mask] + [replica.layers[5]._mask for replica in replicas]
    np.testing.assert_array_equal(np.concatenate(sharded_masks), plain_mask)


def test_sharded_fit_matches_the_one_thread_fit():
    x, y = batch(96, seed=7)
    histories = []
    for threads in (1, 2):
        model = small_model()
        with threadpool_limits(threads, user_api="blas"):
            history = model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
        histories.append((history.history, model.get_weights(), random.get_rng().get_state()))
    (one, weights_one, rng_one), (two, weights_two, rng_two) = histories
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-10)
    for a, b in zip(weights_one, weights_two):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-14)
    assert rng_one == rng_two


def test_shards_cover_the_batch_and_small_batches_stay_whole():
    model = small_model()
    with threadpool_limits(2, user_api="blas"):
        assert shard_plan(33) == [slice(0, 16), slice(16, 33)]
        assert shard_plan(2 * MIN_SHARD_ROWS - 1) == [slice(0, 2 * MIN_SHARD_ROWS - 1)]
    with threadpool_limits(1, user_api="blas"):
        assert shard_plan(64) == [slice(0, 64)]


def test_replicas_share_the_weights_and_follow_a_rebuild():
    model = small_model()
    x, y = batch(32)
    with threadpool_limits(2, user_api="blas"):
        model.train_on_batch(x, y)
        (replica,) = replicas_of(model, 1)
        for layer, replica_layer in zip(model.layers, replica.layers):
            for key in layer.params:
                assert replica_layer.params[key] is layer.params[key]
                assert replica_layer.grads[key] is not layer.grads[key]
        assert replica.layers[0].activation is not model.layers[0].activation   # ReLU keeps its own output
        model.add(Dense(10, activation="softmax", dtype="float64"))   # repacks the weights
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.train_on_batch(x, y)
        (rebuilt,) = replicas_of(model, 1)
        assert rebuilt is not replica and len(rebuilt.layers) == len(model.layers)
        assert rebuilt.layers[-1].params["kernel"] is model.layers[-1].params["kernel"]


def test_row_sliced_generator_draws_the_whole_batch_rows():
    whole = random.Generator(11)
    whole.bits(5)
    expected = [whole.random((10, 7), "float64"), whole.random((10, 3), "float32")]
    parent = random.Generator(11)
    parent.bits(5)
    shards = [RowSlicedGenerator(parent, 6, 4, 10), RowSlicedGenerator(parent, 0, 6, 10)]  # any order
    drawn = [[shard.random((shard.rows, 7), "float64"), shard.random((shard.rows, 3), "float32")]
             for shard in shards]
    for i in range(2):
        np.testing.assert_array_equal(np.concatenate([drawn[1][i], drawn[0][i]]), expected[i])
    assert shards[0].position == shards[1].position == whole.position
    with pytest.raises(ValueError, match=r"rows 6\.\.9 of a batch draw arrays of shape \(4, \.\.\.\)"):
        shards[0].random((10, 7))


def test_using_rng_holds_for_its_own_thread_only():
    run_rng, shard = random.get_rng(), random.Generator(99)
    seen = {}
    with random.using_rng(shard):
        assert random.get_rng() is shard
        worker = threading.Thread(target=lambda: seen.setdefault("other", random.get_rng()))
        worker.start()
        worker.join()
    assert seen["other"] is run_rng
    assert random.get_rng() is run_rng
