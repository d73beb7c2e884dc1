"""A broken invariant, a stall or a leak stops the run with the seed and the story."""

from __future__ import annotations

import pytest

from teamster.core.scheduler import SchedulerState
from teamster.sim import Simulation, SimulationError, WorkerSpec, build_workload
from teamster.sim.run import SMALL_RUN


def corrupt_add_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted bug: the scheduler forgets to mirror who_has into has_what."""
    def add_replica(self: SchedulerState, ts: object, ws: object) -> None:
        ts.add_holder(ws)  # type: ignore[attr-defined]

    monkeypatch.setattr(SchedulerState, "add_replica", add_replica)


def test_invariant_failure_names_seed_event_and_story(monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_add_replica(monkeypatch)
    sim = Simulation(build_workload("random-dag", workers=3, tasks=50, seed=42))
    with pytest.raises(SimulationError) as info:
        sim.run()
    text = str(info.value)
    assert "who_has/has_what disagree" in text
    assert "seed=42" in text and "workload=random-dag" in text
    assert "while scheduler handled TaskFinished" in text
    assert "processing -> memory" in text  # the story of the key


def test_holders_kept_two_ways_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result's first two holders are kept in ``holder`` and ``holder2``;
    from a third on, ``more_holders`` holds them all. A holder put in
    ``more_holders`` beside the first instead of with it would lose the
    first from ``who_has``."""
    def add_replica(self: SchedulerState, ts: object, ws: object) -> None:
        if ts.holder is None:  # type: ignore[attr-defined]
            ts.holder = ws  # type: ignore[attr-defined]
        elif ts.holder is not ws:  # type: ignore[attr-defined]
            ts.more_holders = {ws: None}  # type: ignore[attr-defined]
        ws.has_what.add(ts)  # type: ignore[attr-defined]
        ws.nbytes += max(ts.nbytes, 0)  # type: ignore[attr-defined]

    monkeypatch.setattr(SchedulerState, "add_replica", add_replica)
    sim = Simulation(build_workload("random-dag", workers=3, tasks=50, seed=42))
    with pytest.raises(SimulationError, match="holders kept two ways"):
        sim.run()


def test_every_k_validation_catches_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_add_replica(monkeypatch)
    sim = Simulation(build_workload("random-dag", workers=3, tasks=200, seed=1),
                     validate_every=25)
    assert sim.validate_every == 25 and not sim.scheduler.state.validate_enabled
    with pytest.raises(SimulationError, match="seed=1"):
        sim.run()
    assert sim.n_core_events % 25 == 0  # caught at a validation point


def test_validation_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    small = build_workload("independent", workers=2, tasks=100)
    large = build_workload("independent", workers=2, tasks=SMALL_RUN + 1)
    assert Simulation(small).validate_every == 1
    k = Simulation(large).validate_every
    assert k >= 10_000 and not Simulation(large).scheduler.state.validate_enabled
    assert Simulation(small, validate=False).validate_every == 0
    monkeypatch.setenv("TEAMSTER_VALIDATE", "0")
    assert Simulation(small).validate_every == 0
    monkeypatch.delenv("TEAMSTER_VALIDATE")
    assert Simulation(small).validate_every == 1  # on unless switched off


def test_a_stall_is_reported_not_waited_out() -> None:
    w = build_workload("independent", workers=2, tasks=100, seed=3)
    w.workers[:] = [WorkerSpec(s.name, s.nthreads, leave=0.2) for s in w.workers]
    sim = Simulation(w, heartbeat_timeout=5.0)
    with pytest.raises(SimulationError) as info:
        sim.run()
    text = str(info.value)
    assert "stalled" in text and "seed=3" in text
    assert sim.engine.now < 0.2 + 5.0 + 3.0  # gave up after the timeout horizon


def test_a_leak_at_the_end_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from teamster.sim import workers as simworkers

    # A planted shell bug: DeleteData is ignored, so values outlive their keys.
    original = simworkers.SimWorker.handle

    def handle(self: simworkers.SimWorker, event: object) -> None:
        store = dict(self.store)
        original(self, event)
        for key, size in store.items():
            self.store.setdefault(key, size)

    monkeypatch.setattr(simworkers.SimWorker, "handle", handle)
    sim = Simulation(build_workload("independent", workers=2, tasks=20, seed=0))
    with pytest.raises(SimulationError, match="still holds"):
        sim.run()
