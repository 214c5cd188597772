"""The data-parallel CPU training step (minialex.parallel).

A batch is cut into shards by its size alone; the thread count only decides which shards run side
by side. So (1) the sharded step gives the unsharded step's results up to summation order, and
(2) 1, 2 or 4 threads give the same numbers bit for bit. Each test sets the thread count itself
(threadpoolctl), whatever the machine's core count. The models are float64 where results are
compared to rounding, so that what remains is summation order (~1e-15).
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minialex import random
from minialex.layers import Conv2D, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool2D
from minialex.models import Sequential, alexnet_mnist
from minialex.parallel import MIN_SHARD_ROWS, shard_plan


def small_model(seed=3, dtype="float64"):
    random.set_seed(seed)
    model = Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1), dtype=dtype),
        LocalResponseNorm(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75),
        MaxPool2D(2),
        Flatten(),
        Dense(16, activation="relu", dtype=dtype),
        Dropout(0.5),
        Dense(10, activation="softmax", dtype=dtype),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)), np.eye(10)[rng.integers(0, 10, n)]


def train(threads, steps, n, dtype="float64"):
    """Train a fresh small model ``steps`` steps on batches of ``n`` with BLAS on ``threads`` threads."""
    model = small_model(dtype=dtype)
    results = []
    with threadpool_limits(threads, user_api="blas"):
        for step in range(steps):
            results.append(model.train_on_batch(*batch(n, seed=step)))
    return model, results


def train_unsharded(steps, n, make_model=small_model, make_batch=batch):
    """The same steps without shards: forward_loss, backward and apply_gradients over whole batches
    (of a model and batches made by ``make_model`` and ``make_batch``); the model and the results."""
    model = make_model()
    results = []
    for step in range(steps):
        x, y = model.prepare_inputs(*make_batch(n, seed=step))
        loss, correct = model.forward_loss(x, y)
        model.backward()
        model.apply_gradients()
        results.append([float(loss), float(correct) / n])
    return model, results


@pytest.mark.parametrize("threads, n, shards", [(1, 32, 2), (2, 32, 2), (3, 41, 2), (2, 100, 3)])
def test_sharded_step_matches_the_unsharded_step(threads, n, shards):
    assert len(shard_plan(n)) == shards
    plain, plain_results = train_unsharded(steps=3, n=n)
    plain_rng = random.get_rng().get_state()
    sharded, sharded_results = train(threads, steps=3, n=n)
    assert random.get_rng().get_state() == plain_rng          # past the whole batches' draws
    replicas = sharded.replicas(shards - 1)
    np.testing.assert_allclose(sharded_results, plain_results, rtol=1e-12)
    np.testing.assert_allclose(sharded.flat_gradients, plain.flat_gradients, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sharded.flat_parameters, plain.flat_parameters, rtol=1e-10, atol=1e-14)
    # the shards' dropout masks, put together, are the whole batch's: same rows dropped
    sharded_masks = [sharded.layers[5]._mask] + [replica.layers[5]._mask for replica in replicas]
    np.testing.assert_array_equal(np.concatenate(sharded_masks), plain.layers[5]._mask)


@pytest.mark.parametrize("n", [64, 100])
def test_the_thread_count_changes_no_bit(n):
    runs = [train(threads, steps=3, n=n, dtype="float32") for threads in (1, 2, 4)]
    for model, results in runs[1:]:
        assert results == runs[0][1]
        assert np.array_equal(model.flat_parameters, runs[0][0].flat_parameters)


def test_batches_too_small_to_cut_change_no_bit_either():
    """Batches of 16 and a last batch of 8 run whole, as one shard: with a one-thread BLAS too. (The
    tutorial network: its products are large enough for BLAS to split them over its threads.)"""
    rng = np.random.default_rng(5)
    x = rng.random((40, 32, 32, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 40)]
    assert [len(shard_plan(n)) for n in (16, 8)] == [1, 1]
    runs = []
    for threads in (1, 2, 4):
        random.set_seed(0)
        model = alexnet_mnist()
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        with threadpool_limits(threads, user_api="blas"):
            model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        runs.append(model.flat_parameters.copy())
    for parameters in runs[1:]:
        assert np.array_equal(parameters, runs[0])


def test_fit_and_a_resume_on_another_thread_count_change_no_bit(tmp_path):
    x, y = batch(160, seed=7)
    x, y = x.astype("float32"), y.astype("float32")
    finals = []
    for first, second in ((1, 1), (2, 2), (2, 1), (1, 4)):
        model = small_model(dtype="float32")
        checkpoint = tmp_path / f"run-{first}-{second}.npz"
        with threadpool_limits(first, user_api="blas"):
            model.fit(x, y, epochs=1, batch_size=64, validation_split=0.25, verbose=0, checkpoint=checkpoint)
        model = small_model(dtype="float32")
        with threadpool_limits(second, user_api="blas"):
            history = model.fit(x, y, epochs=2, batch_size=64, validation_split=0.25, verbose=0,
                                resume_from=checkpoint)
        finals.append((history.history, model.get_weights(), random.get_rng().get_state()))
    for history, weights, rng in finals[1:]:
        assert history == finals[0][0] and rng == finals[0][2]
        assert all(np.array_equal(a, b) for a, b in zip(weights, finals[0][1]))


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_the_shard_plan_depends_on_the_batch_size_only(threads):
    with threadpool_limits(threads, user_api="blas"):
        assert shard_plan(33) == [slice(0, 16), slice(16, 33)]
        assert shard_plan(2 * MIN_SHARD_ROWS - 1) == [slice(0, 2 * MIN_SHARD_ROWS - 1)]
        assert shard_plan(64) == [slice(0, 32), slice(32, 64)]
        assert shard_plan(128) == [slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 128)]
        assert shard_plan(1) == [slice(0, 1)]


def test_replicas_share_the_weights_and_follow_a_rebuild():
    model = small_model()
    x, y = batch(32)
    with threadpool_limits(2, user_api="blas"):
        model.train_on_batch(x, y)
        (replica,) = model.replicas(1)
        for layer, replica_layer in zip(model.layers, replica.layers):
            for key in layer.params:
                assert replica_layer.params[key] is layer.params[key]
                assert replica_layer.grads[key] is not layer.grads[key]
        assert replica.layers[0].activation is not model.layers[0].activation   # ReLU keeps its own output
        model.add(Dense(10, activation="softmax", dtype="float64"))   # repacks the weights
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.train_on_batch(x, y)
        (rebuilt,) = model.replicas(1)
        assert rebuilt is not replica and len(rebuilt.layers) == len(model.layers)
        assert rebuilt.layers[-1].params["kernel"] is model.layers[-1].params["kernel"]


def test_row_sliced_generator_draws_the_whole_batch_rows():
    whole = random.Generator(11)
    whole.bits(5)
    expected = [whole.random((10, 7), "float64"), whole.random((10, 3), "float32")]
    parent = random.Generator(11)
    parent.bits(5)
    shards = [random.RowSliced(parent, 6, 4, 10), random.RowSliced(parent, 0, 6, 10)]  # any order
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
