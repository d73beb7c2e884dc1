"""The victims index: workers by load bucket, most loaded first, in O(1) per change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from teamster.core.scheduler.entities import WorkerInfo
from teamster.core.scheduler.load_index import NOT_INDEXED, LoadIndex, bucket_of

N_WORKERS = 6
loads = st.sampled_from([0.0, 0.0004, 0.001, 0.0015, 0.003, 0.01, 0.5, 3.0, 1e9])
ops = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, N_WORKERS - 1), loads),
    st.tuples(st.just("discard"), st.integers(0, N_WORKERS - 1), st.just(0.0)),
    st.tuples(st.just("highest"), st.integers(1, N_WORKERS + 1), st.just(0.0)),
), max_size=60)


def _workers() -> list[WorkerInfo]:
    return [WorkerInfo(f"tcp://w{i}", f"w{i}", 1, 0, {}, 0.0) for i in range(N_WORKERS)]


@given(ops)
def test_highest_gives_the_most_loaded_buckets_first(operations: list[tuple[str, int, float]]
                                                     ) -> None:
    workers, index = _workers(), LoadIndex()
    load: dict[WorkerInfo, float] = {}  # the model: indexed workers and their loads
    for op, i, value in operations:
        if op == "set":
            index.set(workers[i], value)
            load[workers[i]] = value
        elif op == "discard":
            index.discard(workers[i])
            load.pop(workers[i], None)
        else:
            top = index.highest(i)
            assert len(top) == min(i, len(load)) and len(set(top)) == len(top)
            buckets = [bucket_of(load[ws]) for ws in top]
            assert buckets == sorted(buckets, reverse=True), "not most loaded first"
            if top:
                left_out = [bucket_of(v) for ws, v in load.items() if ws not in top]
                assert all(b <= buckets[-1] for b in left_out), "skipped a more loaded worker"
        index.validate()
        assert len(index) == len(load)
        assert {ws for ws in workers if ws in index} == set(load)


def test_a_worker_whose_load_falls_moves_down_only_when_read() -> None:
    """Assigning a task raises a worker's load and finishing it lowers it
    again: an eager index moved it out of its bucket and back for each task."""
    a, b = _workers()[:2]
    index = LoadIndex()
    index.set(a, 0.02)
    index.set(b, 0.005)
    moved_up = a.load_bucket
    index.set(a, 0.004)  # (its task finished)
    assert a.load_bucket == moved_up, "moved down before anyone asked"
    index.set(a, 0.03)  # (assigned another: same bucket as before, no move)
    assert a.load_bucket == moved_up
    index.set(a, 0.001)
    assert index.highest(2) == [b, a]
    assert a.load_bucket == bucket_of(0.001)
    index.discard(a)
    assert a.load_bucket == NOT_INDEXED and index.highest(2) == [b]


def test_a_bucket_that_lost_most_of_its_workers_is_compacted_in_order() -> None:
    """A dict keeps a hole per deleted entry until it grows, and iteration
    steps over them all: a bucket that once held every worker would make
    each ``highest`` walk a thousand holes. It is rebuilt as it shrinks,
    keeping its order (the order victims are asked in)."""
    import sys

    workers = [WorkerInfo(f"tcp://w{i}", f"w{i}", 1, 0, {}, 0.0) for i in range(200)]
    index = LoadIndex()
    for ws in workers:
        index.set(ws, 0.01)
    low = bucket_of(0.01)
    for ws in workers[:190]:
        index.set(ws, 3.0)  # moves up: out of the low bucket
    survivors = workers[190:]
    bucket = index.buckets[low]
    assert list(bucket) == survivors
    # (At most 2 holes per entry, and 16, are kept.)
    bound = {ws: None for ws in workers[:3 * len(survivors) + 16]}
    assert sys.getsizeof(bucket) <= sys.getsizeof(bound) < sys.getsizeof(dict.fromkeys(workers))
    index.validate()
    assert index.highest(200)[190:] == survivors
