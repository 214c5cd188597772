"""parallel.run_meeting, alone: shard programs that meet to add up sums over the whole batch.

Each test sets the thread count itself (threadpoolctl), whatever the machine's core count.
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minialex.parallel import run_meeting, sum_in_order


def mean_and_spread(parts):
    """Shard k's program over its rows ``parts[k]``: the whole batch's mean (one meeting), then its
    sum of squared deviations (a second), returned with the thread that finished it."""
    def start(k):
        rows = parts[k]
        total, count = yield rows.sum(axis=0), rows.shape[0]
        mean = total / count
        spread = yield ((rows - mean) ** 2).sum(axis=0)
        return mean, spread, threading.get_ident()
    return start


@pytest.mark.parametrize("threads, shards", [(1, 1), (1, 4), (2, 2), (2, 3), (4, 3), (2, 8)])
def test_every_shard_goes_on_with_the_whole_batch_s_sums(threads, shards):
    rng = np.random.default_rng(shards)
    batch = rng.random((10 * shards + 3, 5))
    parts = np.array_split(batch, shards)
    with threadpool_limits(threads, user_api="blas"):
        results = run_meeting(mean_and_spread(parts), shards)
    assert len(results) == shards
    for mean, spread, _ in results:
        np.testing.assert_allclose(mean, batch.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(spread, ((batch - batch.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)
    if threads > 1 and shards > 1:
        assert len({thread for _, _, thread in results}) > 1      # the shards did run on several threads


def test_the_parts_are_added_in_shard_order_whatever_the_thread_count():
    parts = [np.array([1.0]), np.array([1e16]), np.array([1.0]), np.array([-1e16])]
    in_order = ((parts[0] + parts[1]) + parts[2]) + parts[3]
    assert in_order[0] == 0.0 and sum(p[0] for p in reversed(parts)) == 1.0     # the order shows in the bits

    def start(k):
        total = yield parts[k]
        return total

    for threads in (1, 2, 4):
        with threadpool_limits(threads, user_api="blas"):
            results = run_meeting(start, len(parts))
        assert all(np.array_equal(total, in_order) for total in results)


def test_sum_in_order_adds_tuples_item_by_item():
    total = sum_in_order([(np.ones(2), 3), (np.full(2, 2.0), 4)])
    assert np.array_equal(total[0], [3.0, 3.0]) and total[1] == 7


def test_programs_that_never_meet_run_in_one_stage():
    calls = []

    def start(k):
        calls.append(k)
        return k * 10
        yield                                     # a generator that returns before any meeting

    with threadpool_limits(2, user_api="blas"):
        assert run_meeting(start, 3) == [0, 10, 20]
    assert sorted(calls) == [0, 1, 2]


def test_a_shard_that_meets_less_often_is_an_error_not_a_hang():
    def start(k):
        if k == 1:
            return None
        yield np.zeros(1)

    with threadpool_limits(2, user_api="blas"), pytest.raises(RuntimeError, match=r"shards \[1\] of 3 finished"):
        run_meeting(start, 3)
