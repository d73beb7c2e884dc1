"""Same seed, same event trace: the simulator and the cores are deterministic."""

from __future__ import annotations

import pytest

from teamster.sim import Simulation, WorkerSpec, build_workload, run_simulation


@pytest.mark.parametrize("name", ["random-dag", "late-join", "large-inputs", "shuffle"])
def test_same_seed_same_trace_hash(name: str) -> None:
    a = run_simulation(name, workers=5, threads=2, tasks=300, seed=4)
    b = run_simulation(name, workers=5, threads=2, tasks=300, seed=4)
    c = run_simulation(name, workers=5, threads=2, tasks=300, seed=5)
    assert a["trace_hash"] == b["trace_hash"]
    assert a["events"] == b["events"] and a["makespan"] == b["makespan"]
    assert a["trace_hash"] != c["trace_hash"]


def test_trace_covers_every_event_and_differs_with_the_network() -> None:
    def sim(latency: float) -> Simulation:
        s = Simulation(build_workload("random-dag", workers=3, tasks=100, seed=0),
                       latency=latency, keep_trace=True)
        s.run()
        return s

    a, b = sim(0.0005), sim(0.001)
    assert len(a.engine.trace_lines) == a.n_core_events + a.client.from_scheduler.messages
    assert a.engine.trace_hash() != b.engine.trace_hash()


def test_worker_departure_is_deterministic_too() -> None:
    def once() -> str:
        w = build_workload("random-dag", workers=4, tasks=200, seed=9)
        w.workers[2] = WorkerSpec(w.workers[2].name, 1, leave=0.3)
        return Simulation(w).run()["trace_hash"]

    assert once() == once()
