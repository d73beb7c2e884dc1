"""Workers' numbers (``WorkerSlots``): a ``TaskFinished`` finds its worker by
the number it carries, and a wrong, stale or missing number changes nothing.

The number is a fast path only: every report below must give exactly the
instructions the same report without a number (-1) gives.
"""

from __future__ import annotations

import pytest

from teamster.core import messages as m
from teamster.core.story import InvariantError
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import SendToScheduler

from .builders import (
    A,
    B,
    C,
    compute,
    current_run,
    finished,
    free,
    graph,
    in_memory,
    register_worker,
    scheduler,
    spec,
    states,
)


def test_workers_are_numbered_from_zero_and_a_removed_workers_number_is_reused() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert [s.worker_slots.slot_of(w) for w in (A, B, C)] == [0, 1, -1]
    assert s.handle(m.RemoveWorker(A, "gone", 1.0, "rm")) == []
    assert s.worker_slots.slot_of(A) == -1 and s.worker_slots.get(0) is None
    assert s.handle(register_worker(C)) == []
    assert s.worker_slots.slot_of(C) == 0
    assert s.worker_slots.get(0) is s.workers[C]
    assert s.worker_slots.get(2) is None and s.worker_slots.get(-1) is None
    s.validate()


@pytest.mark.parametrize("slot", ["own", -1, 1, 7])
def test_a_result_is_its_senders_whatever_number_it_carries(slot: int | str) -> None:
    """Own number, none, another worker's, or one never given: the same result."""
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1")) == [
        compute(A, "x", (0, 1, 0), "g1"),
    ]
    number = s.worker_slots.slot_of(A) if slot == "own" else slot
    out = s.handle(finished(s, A, "x", nbytes=5, sid="f-x", worker_slot=int(number)))
    assert out == [compute(A, "y", (0, 1, 0), "f-x", who_has=(("x", (A,), 5),))]
    assert states(s, "x", "y") == {"x": "memory", "y": "processing"}
    out = s.handle(finished(s, A, "y", sid="f-y", worker_slot=int(number)))
    assert out == [in_memory("c", "y", (A,), "f-y"), free(A, "f-y", "x")]
    s.validate()


def test_a_stale_number_now_given_to_another_worker_does_not_credit_it() -> None:
    """A's result crosses A's removal; C takes A's number and runs the task
    again. A's late report names C's number but A's run: not C's result."""
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    old_run = current_run(s, "x")
    s.handle(m.RemoveWorker(A, "gone", 1.0, "rm"))
    assert s.handle(register_worker(C)) == [
        compute(C, "x", (0, 1, 0), "register-" + C, announce=True),  # (it was on a dead worker)
    ]
    assert s.worker_slots.slot_of(C) == 0
    late = finished(s, A, "x", sid="late", run_id=old_run, worker_slot=0)
    assert s.handle(late) == []
    assert states(s, "x") == {"x": "processing"}
    assert s.handle(finished(s, C, "x", sid="f-x")) == [in_memory("c", "x", (C,), "f-x")]
    s.validate()


def test_a_stale_run_reported_with_the_workers_own_number_is_freed_there() -> None:
    """The number finds A, but A's head runs another assignment: the report
    is looked up by key as before, and the stale result freed on A."""
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("z"), sid="g1"))
    stale = current_run(s, "x")
    s.handle(m.ReleaseKeys("c", ("x",), "release"))
    out = s.handle(finished(s, A, "x", sid="late", run_id=stale))
    assert out == [free(A, "late", "x", run_id=stale)]
    assert states(s, "x", "z") == {"x": "forgotten", "z": "processing"}


def test_validation_catches_a_report_crediting_another_workers_run() -> None:
    """Only a lying worker can name another's number with that worker's
    current run: validation says so rather than moving the result."""
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    forged = finished(s, B, "x", sid="forged", worker_slot=s.worker_slots.slot_of(A))
    with pytest.raises(InvariantError, match=r"as worker number 0, which is tcp://a"):
        s.handle(forged)


def test_a_worker_reports_the_number_its_registration_gave_it() -> None:
    w = WorkerState("tcp://me:1", 1, validate=True)
    assert w.handle(ev.Registered(3, "hello")) == []
    w.handle(m.ComputeTask("x", None, (), (0,), None, 9, False, "c"))
    out = w.handle(ev.ExecuteSuccess("x", 8, "int", 0.5, 100.0, "ran"))
    assert out == [SendToScheduler(m.TaskFinished("tcp://me:1", "x", 8, "int", 0.5, 100.0, 9,
                                                  (), "ran", 3))]
