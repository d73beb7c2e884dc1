"""Scenarios on the virtual clock: the production cores, driven by the simulator.

Every run here validates the cores after every event (TEAMSTER_VALIDATE=1,
set by tests/conftest.py), and every run ends with the simulator's own
checks: every wanted key arrived, no task was lost or run twice, and after
the client released its keys nothing is left in the scheduler or any worker.
"""

from __future__ import annotations

from typing import Any

import pytest

from teamster.sim import WORKLOADS, Simulation, WorkerSpec, Workload, build_workload
from teamster.sim.network import BATCH_INTERVAL, DEFAULT_LATENCY

RTT = 2 * DEFAULT_LATENCY


def run(w: Workload, **options: Any) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(w, **options)
    return sim, sim.run()


def independent(n: int, duration: float, workers: list[WorkerSpec]) -> Workload:
    w = Workload("independent-fixed", 0, workers=workers)
    for i in range(n):
        w.add(f"work-{i}", duration, 1000)
    w.wanted = list(range(n))
    return w


def first_compute(sim: Simulation, worker: str) -> float:
    return min(t for t, where, kind, _ in sim.engine.trace_lines
               if where == worker and kind == "ComputeTask")


@pytest.mark.parametrize("name", sorted(set(WORKLOADS) - {"million"}) + ["million"])
def test_every_workload_completes_nothing_lost_or_run_twice(name: str) -> None:
    w = build_workload(name, workers=6, threads=2, tasks=250, seed=5)
    sim, r = run(w)
    assert sim.validate_every == 1  # the cores validated after every event
    assert r["executions"] == w.n_tasks and r["reexecutions"] == 0
    assert list(sim.runs) == [0 if i in w.scattered else 1 for i in range(len(w.keys))]
    assert sim.client.n_done == len(w.wanted)
    assert r["makespan"] >= r["lower_bound"] > 0 and r["ratio"] >= 1.0


def test_late_joining_worker_receives_work_within_one_round_trip() -> None:
    workers = [WorkerSpec("w0", 1), WorkerSpec("w1", 1), WorkerSpec("late", 1, join=2.0)]
    sim, r = run(independent(30, 1.0, workers), keep_trace=True)
    assert 2.0 < first_compute(sim, "late") <= 2.0 + RTT + 1e-9
    assert sim.workers["sim://late"].executed >= 8


def test_library_late_joiners_all_get_work_within_one_round_trip() -> None:
    w = build_workload("late-join", workers=8, tasks=600, seed=2)
    sim, _ = run(w, keep_trace=True)
    for spec in w.workers:
        if spec.join > 0:
            assert first_compute(sim, spec.name) <= spec.join + RTT + 1e-9, spec


def test_makespan_of_a_serial_run_is_the_work_plus_round_trips() -> None:
    sim, r = run(independent(3, 1.0, [WorkerSpec("w0", 1)]))
    assert r["lower_bound"] == 3.0
    # Unknown durations are assumed long: one task at a time, one round trip
    # (plus at most a batching interval) between them.
    assert 3.0 < r["makespan"] <= 3.0 + 3 * (RTT + BATCH_INTERVAL)
    assert r["bytes_moved"] == 0 and r["peak_stored_bytes"] == 3000


@pytest.mark.parametrize("name", ["tree-reduce", "shuffle", "random-dag", "large-inputs"])
def test_bytes_moved_match_what_placement_implies(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each input crosses to each worker that ran a dependent of it, once.

    (Without stealing: a stolen task's inputs may already have reached its
    first worker, a cost the steal decision weighs but this count cannot see.)
    """
    from teamster.core.scheduler.stealing import Stealing

    monkeypatch.setattr(Stealing, "balance", lambda self, thief, stimulus_id: 0)
    w = build_workload(name, workers=5, threads=2, tasks=300, seed=1)
    sim, r = run(w)
    assert sim.ran_on is not None
    where = {i: ({f"sim://{w.workers[h].name}" for h in holders}) for i, holders in
             w.scattered.items()}
    for i, workers in sim.ran_on.items():
        (only,) = workers
        where[i] = {only}
    needed = set()
    for i in range(len(w.keys)):
        if i in w.scattered:
            continue
        (runner,) = sim.ran_on[i]
        for d in w.deps[i]:
            if runner not in where[d]:
                needed.add((d, runner))
    assert r["bytes_moved"] == sum(w.nbytes[d] for d, _ in needed) > 0


def test_peak_stored_bytes_per_worker() -> None:
    # A fan-in of 4 large leaves on one worker: all four are held at once.
    w = Workload("fan", 0, workers=[WorkerSpec("w0", 4)])
    leaves = tuple(w.add(f"leaf-{i}", 0.1, 10**8) for i in range(4))
    w.wanted = [w.add("total-0", 0.1, 10, leaves)]
    sim, r = run(w)
    # (The shell stores a result before the core hears of it, so the output
    # and its inputs coexist for a moment.)
    assert r["peak_stored_bytes"] == 4 * 10**8 + 10
    assert sim.workers["sim://w0"].stored_bytes == 0  # released at the end


def test_worker_leaving_mid_run_loses_nothing() -> None:
    w = build_workload("random-dag", workers=4, threads=1, tasks=300, seed=7)
    w.workers[1] = WorkerSpec(w.workers[1].name, 1, leave=0.5)
    sim, r = run(w)
    assert r["workers_lost"] == 1
    assert r["executions"] >= w.n_tasks  # results lost with it were recomputed
    assert not sim.workers["sim://w1"].alive


def test_heartbeats_keep_quiet_workers_alive() -> None:
    # Tasks far longer than the heartbeat timeout: only heartbeats say the
    # workers are alive, and none may be declared lost.
    sim, r = run(independent(4, 20.0, [WorkerSpec("w0", 1), WorkerSpec("w1", 1)]),
                 heartbeat_timeout=3.0)
    assert r["workers_lost"] == 0 and r["reexecutions"] == 0
    assert 40.0 < r["makespan"] < 40.1


def test_steals_count_steal_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter counts messages whose type starts with Steal (none exist yet)."""
    from teamster.core import messages as m
    from teamster.sim import scheduler as simsched

    monkeypatch.setattr(simsched, "STEAL_TYPES", frozenset({m.FreeKeys}))
    _, r = run(independent(5, 0.1, [WorkerSpec("w0", 1)]))
    assert r["steals"] == 5  # here: one FreeKeys per released result


def test_replay_relives_the_run_alone() -> None:
    """The recorded scheduler events, replayed into a fresh state, give the same decisions."""
    w = build_workload("random-dag", workers=4, tasks=200, seed=2)
    sim, r = run(w, replay=True)
    assert r["scheduler_cpu_per_task_us_isolated"] > 0
    assert sim.scheduler.recorded is None  # released after the replay
