"""What the scheduler learns (durations, bandwidth) and what it reports.

Exact instructions where the learning changes a decision; exact figures for
the balance report.
"""

from __future__ import annotations

import pytest

from teamster.core import messages as m
from teamster.core.scheduler.placement import DEFAULT_BANDWIDTH

from .builders import A, B, compute, finished, graph, register_worker, scheduler, spec


def heartbeat(worker: str, now: float, *executing: tuple[m.Key, float]) -> m.Heartbeat:
    return m.Heartbeat(worker, now, (), tuple(executing), f"hb-{now}")


def test_a_task_running_far_past_its_estimate_raises_it_before_it_ends() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("f-0"), sid="g0"))
    s.handle(finished(s, A, "f-0", duration=0.01, sid="f0"))
    s.handle(graph("c", *[spec(f"f-{i}", priority=(0, i)) for i in range(1, 4)], sid="g1"))
    ws = s.workers[A]
    assert s.prefixes["f"].duration_average == 0.01
    assert ws.n_processing == 2  # 10 ms tasks: one queued behind the running one
    # f-1 has run for 2 s: the worker's queue is 2 s deep, and so may every f be.
    s.handle(heartbeat(A, 2.0, ("f-1", 2.0)))
    assert s.prefixes["f"].duration_average == 2.0
    assert ws.occupancy == pytest.approx(2.0 + 0.01)
    # A task within its estimate changes nothing.
    s.handle(heartbeat(A, 2.5, ("f-1", 1.0)))
    assert ws.occupancy == pytest.approx(2.01)


def test_the_first_measurement_of_a_prefix_sets_its_estimate() -> None:
    s = scheduler(register_worker(A, nthreads=2))
    s.handle(graph("c", *[spec(f"new-{i}", priority=(0, i)) for i in range(4)], sid="g"))
    # Unknown: one per thread, spread, until something is learned.
    assert s.workers[A].n_processing == 2
    s.handle(heartbeat(A, 0.7, ("new-0", 0.7)))
    assert s.prefixes["new"].duration_average == 0.7


def test_bandwidth_is_learned_from_large_transfers_only() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    placement = s.placement
    assert placement.bandwidth == DEFAULT_BANDWIDTH
    s.handle(m.AddKeys(B, (), A, 1000, 0.001, "small"))  # latency, not bandwidth
    assert placement.bandwidth == DEFAULT_BANDWIDTH
    s.handle(m.AddKeys(B, (), A, 50_000_000, 0.05, "big"))  # 1 GB/s
    assert placement.bandwidth == pytest.approx(1e9)
    assert placement.pair_bandwidth == {(A, B): pytest.approx(1e9)}
    s.handle(m.AddKeys(B, (), A, 50_000_000, 0.1, "slower"))  # 500 MB/s
    assert placement.bandwidth == pytest.approx(1e9 + 0.25 * (5e8 - 1e9))


def test_learned_bandwidth_moves_a_task_to_an_idle_worker() -> None:
    """20 MB over the assumed 100 MB/s costs 0.2 s, more than A's 0.1 s queue:
    the task waits for A. Measured at 1 GB/s it costs 0.02 s: B takes it."""
    def setup(bandwidth_seconds: float | None) -> list[str]:
        s = scheduler(register_worker(A), register_worker(B))
        s.handle(m.ScatteredData("c", (("x", (A,), 20_000_000),), "sc"))
        if bandwidth_seconds is not None:
            s.handle(m.AddKeys(B, (), A, 20_000_000, bandwidth_seconds, "measured"))
        s.handle(graph("c", spec("use-0", "x"), wanted=("use-0",), sid="g0"))
        s.handle(finished(s, A, "use-0", duration=0.1, sid="f0"))
        out = s.handle(graph("c", spec("use-1", "x", priority=(0, 1)),
                             spec("use-2", "x", priority=(0, 2)), wanted=("use-1", "use-2"),
                             sid="g1"))
        return [o.worker for o in out]

    assert setup(None) == [A, A]
    assert setup(0.02) == [A, B]


def test_a_recomputed_result_counts_its_last_run_in_the_critical_path() -> None:
    """A result lost with its worker and run again counts the run that
    produced the copy its dependent read, not both runs."""
    s = scheduler(register_worker(A, now=0.0), register_worker(B, now=0.0))
    s.handle(graph("c", spec("a"), spec("b", "a"), now=10.0, sid="g"))
    first = s.tasks["a"].processing_on.address
    other = B if first == A else A
    s.handle(finished(s, first, "a", duration=1.0, stop=11.0))
    assert s.tasks["b"].processing_on.address == first
    s.handle(m.RemoveWorker(first, "lost", 11.5, "rm"))  # a's only copy, b's runner
    assert s.tasks["a"].processing_on.address == other
    s.handle(finished(s, other, "a", duration=2.0, stop=13.5))
    s.handle(finished(s, other, "b", duration=0.5, stop=14.0))
    assert s.report.as_dict(s)["critical_path"] == pytest.approx(2.5)  # a (again), then b


def test_balance_report_of_a_computation() -> None:
    s = scheduler(register_worker(A, now=0.0), register_worker(B, now=0.0))
    s.handle(graph("c", spec("a-0", priority=(0, 0)), spec("a-1", priority=(0, 1)),
                   spec("b", "a-0", "a-1", priority=(0, 2)), now=10.0, sid="g"))
    s.handle(finished(s, A, "a-0", duration=1.0, stop=11.0))
    s.handle(finished(s, B, "a-1", duration=2.0, stop=12.0))
    out = s.handle(finished(s, A, "a-1", duration=2.0, stop=12.0))  # stale: B ran it
    assert out == [] or all(o.worker == A for o in out)
    assert s.tasks["b"].state == "processing"
    s.handle(finished(s, s.tasks["b"].processing_on.address, "b", duration=0.5, stop=12.6))
    r = s.report.as_dict(s)
    assert r["tasks"] == 3
    assert r["makespan"] == pytest.approx(2.6)
    assert r["critical_path"] == pytest.approx(2.5)  # a-1 then b
    assert r["work"] == pytest.approx(3.5)
    assert r["work_bound"] == pytest.approx(1.75)  # 3.5 s of work on 2 threads
    assert r["lower_bound"] == pytest.approx(2.5)
    assert r["ratio"] == pytest.approx(2.6 / 2.5)
    assert r["workers"][A]["tasks"] + r["workers"][B]["tasks"] == 3


def test_balance_report_bound_counts_capacity_only_from_when_it_joined() -> None:
    s = scheduler(register_worker(A, now=0.0))
    s.handle(graph("c", *[spec(f"t-{i}", priority=(0, i)) for i in range(4)], now=0.0,
                   sid="g"))
    s.handle(register_worker(B, now=2.0, sid="late"))
    assert s.report.capacity == [(0.0, 1), (2.0, 2)]
    for i, stop in enumerate([1.0, 2.0, 3.0, 3.0]):
        key = f"t-{i}"
        s.handle(finished(s, s.tasks[key].processing_on.address, key, duration=1.0, stop=stop))
    r = s.report.as_dict(s)
    # 4 s of work: 2 s on A alone, then 2 threads for the other 2 s -> 3 s.
    assert r["work_bound"] == pytest.approx(3.0)
    assert r["makespan"] == pytest.approx(3.0)

def test_balance_report_rows_count_this_computation_and_keep_departed_workers() -> None:
    s = scheduler(register_worker(A, now=0.0), register_worker(B, now=0.0))
    # An earlier computation's work on A is not this one's.
    s.handle(graph("c", spec("old"), wanted=("old",), now=0.0, sid="g0"))
    s.handle(finished(s, A, "old", duration=5.0, stop=5.0))
    s.handle(graph("c", *[spec(f"t-{i}", priority=(0, i)) for i in range(3)],
                   wanted=("t-0", "t-1", "t-2"), now=10.0, sid="g1"))

    def running_on(worker: str) -> str:
        (key,) = [k for k, ts in s.tasks.items()
                  if ts.state == "processing" and ts.processing_on.address == worker]
        return key

    s.handle(finished(s, B, running_on(B), duration=1.0, stop=11.0))
    assert s.tasks["t-2"].processing_on is s.workers[B]
    # B leaves with t-2 and comes back under the same address: one row, both stints.
    s.handle(m.RemoveWorker(B, "lost", 11.2, "rm"))
    s.handle(register_worker(B, now=11.5, sid="back"))
    s.handle(finished(s, B, running_on(B), duration=0.5, stop=12.0))
    s.handle(finished(s, A, running_on(A), duration=2.0, stop=13.0))
    rows = s.report.as_dict(s)["workers"]
    assert {a: (r["tasks"], r["busy"]) for a, r in rows.items()} == {
        A: (1, pytest.approx(2.0)),  # "old" is not counted
        B: (2, pytest.approx(1.5)),
    }


def test_compute_task_names_a_replica_holder_after_placement() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("x", (A,), 8),), "sc"))
    assert s.handle(graph("c", spec("f", "x"), wanted=("f",), sid="g")) == [
        compute(A, "f", (0, 1, 0), "g", who_has=(("x", (A,), 8),)),
    ]
