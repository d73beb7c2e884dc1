"""The workload library: every workload builds, is well formed, and is a pure
function of its seed; the lower bound is the arithmetic it claims to be."""

from __future__ import annotations

import pytest

from teamster.sim import WORKLOADS, WorkerSpec, Workload, build_workload


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_builds_well_formed(name: str) -> None:
    w = build_workload(name, workers=8, threads=2, tasks=500, seed=3)
    w.validate()
    assert w.name == name and w.seed == 3
    assert 0.9 * 500 <= w.n_tasks <= 1.1 * 500 + 2
    assert len(w.workers) == 8 and all(s.nthreads == 2 for s in w.workers)
    assert w.lower_bound() >= w.critical_path() > 0
    assert w.lower_bound() >= w.total_work() / 16


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_same_seed_same_workload(name: str) -> None:
    a = build_workload(name, workers=5, tasks=300, seed=11)
    b = build_workload(name, workers=5, tasks=300, seed=11)
    c = build_workload(name, workers=5, tasks=300, seed=12)
    assert (a.keys, a.durations, a.nbytes, a.deps, a.wanted, a.workers) == (
        b.keys, b.durations, b.nbytes, b.deps, b.wanted, b.workers)
    assert list(a.durations) != list(c.durations)


def test_unknown_workload_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="random-dag"):
        build_workload("nope", workers=2)


def test_misestimated_prefix_starts_short() -> None:
    w = build_workload("misestimated", workers=4, tasks=1000, seed=0)
    first, rest = list(w.durations[:50]), list(w.durations[50:])
    assert max(first) < 0.01 < min(rest)


def test_late_join_workers_join_during_the_run() -> None:
    w = build_workload("late-join", workers=8, tasks=400, seed=0)
    joins = [s.join for s in w.workers]
    assert joins[:2] == [0.0, 0.0] and all(0 < t < w.work_bound() for t in joins[2:])


def test_tree_reduce_has_one_root_over_all_leaves() -> None:
    w = build_workload("tree-reduce", workers=4, tasks=600, seed=0)
    (root,) = w.wanted
    seen, todo = set(), [root]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(w.deps[i])
    assert seen == set(range(len(w.keys)))
    assert all(len(d) <= 8 for d in w.deps)


def test_shuffle_is_all_to_all() -> None:
    w = build_workload("shuffle", workers=4, tasks=120, seed=0)
    p = len(w.wanted)
    assert p * p + 2 * p == w.n_tasks
    for i in w.wanted:
        assert len(w.deps[i]) == p


def _chain(durations: list[float], workers: list[WorkerSpec]) -> Workload:
    w = Workload("t", 0, workers=workers)
    prev: tuple[int, ...] = ()
    for i, d in enumerate(durations):
        prev = (w.add(f"t-{i}", d, 10, prev),)
    w.wanted = [len(durations) - 1]
    return w


def test_lower_bound_is_critical_path_for_a_chain() -> None:
    w = _chain([1.0, 2.0, 3.0], [WorkerSpec("a", 4)])
    assert w.critical_path() == 6.0
    assert w.work_bound() == 1.5
    assert w.lower_bound() == 6.0


def test_work_bound_counts_only_threads_that_were_there() -> None:
    w = Workload("t", 0, workers=[WorkerSpec("a", 1), WorkerSpec("b", 1, join=2.0),
                                  WorkerSpec("c", 2, leave=1.0)])
    for i in range(10):
        w.add(f"x-{i}", 1.0, 1)
    # [0,1): 3 threads -> 3; [1,2): 1 thread -> 4; then 2 threads: 6 more take 3 s.
    assert w.work_bound() == pytest.approx(5.0)
