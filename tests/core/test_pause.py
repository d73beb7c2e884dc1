"""Pause and resume under memory pressure, one exchange at a time.

A worker whose memory passes its pause fraction starts no new task (running
ones finish) and fetches nothing; it tells the scheduler, which stops
assigning to it until it reports "running" again. Exact instruction lists,
as in test_scheduler.py and test_worker.py.
"""

from __future__ import annotations

from teamster.core import messages as m
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import Execute, GatherDep, SendToScheduler

from .builders import (
    RUN,
    A,
    B,
    compute,
    finished,
    graph,
    in_memory,
    register_worker,
    scheduler,
    spec,
    states,
)

# ----------------------------------------------------------------- scheduler


def paused(address: str, sid: str) -> m.WorkerStatus:
    return m.WorkerStatus(address, "paused", sid)


def running(address: str, sid: str) -> m.WorkerStatus:
    return m.WorkerStatus(address, "running", sid)


def test_paused_worker_gets_no_task_and_gets_the_queued_one_on_resume() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(paused(A, "p")) == []
    assert s.tasks == {} and A not in {ws.address for ws in s.idle}
    assert s.handle(graph("c", spec("x"), sid="g1")) == []
    assert states(s, "x") == {"x": "queued"}
    assert s.handle(running(A, "r")) == [compute(A, "x", (0, 1, 0), "r")]
    assert states(s, "x") == {"x": "processing"}


def test_work_goes_to_the_running_worker_while_the_other_is_paused() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(paused(A, "p"))
    # Unknown prefix: one task per thread, so y waits for a free thread.
    assert s.handle(graph("c", spec("x"), spec("y"), sid="g1")) == [
        compute(B, "x", (0, 1, 0), "g1"),
    ]
    assert states(s, "y") == {"y": "queued"}
    assert s.handle(running(A, "r")) == [compute(A, "y", (0, 1, 0), "r")]


def test_tasks_running_on_a_paused_worker_finish_but_free_slots_stay_empty() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x"), spec("y"), sid="g1")) == [
        compute(A, "x", (0, 1, 0), "g1"),
    ]
    s.handle(paused(A, "p"))
    # x's result is accepted; its thread frees up, but y stays queued.
    assert s.handle(finished(s, A, "x", sid="f-x")) == [in_memory("c", "x", (A,), "f-x")]
    assert states(s, "x", "y") == {"x": "memory", "y": "queued"}
    assert s.handle(running(A, "r")) == [compute(A, "y", (0, 1, 0), "r")]


def test_restricted_task_waits_in_no_worker_while_its_worker_is_paused() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(paused(B, "p"))
    assert s.handle(graph("c", spec("x", workers=(B,)), sid="g1")) == []
    assert states(s, "x") == {"x": "no-worker"}
    assert s.handle(running(B, "r")) == [compute(B, "x", (0, 1, 0), "r")]
    assert not s.unrunnable


def test_status_repeats_and_unknown_workers_change_nothing() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(paused(A, "p1")) == []
    assert s.handle(paused(A, "p2")) == []
    assert s.handle(running(B, "r-unknown")) == []
    assert s.worker_info()[A]["status"] == "paused"
    assert s.handle(running(A, "r")) == []
    assert s.worker_info()[A]["status"] == "running"


# -------------------------------------------------------------------- worker

ME, P = "tcp://me:1", "tcp://p:1"


def worker(nthreads: int = 1) -> WorkerState:
    return WorkerState(ME, nthreads, validate=True)


def compute_task(key: m.Key, *deps: tuple[m.Key, tuple[str, ...], int],
                 sid: str = "") -> m.ComputeTask:
    return m.ComputeTask(key, RUN, tuple(deps), (0,), None, 1, False, sid or f"compute-{key}")


def status(value: str, sid: str) -> SendToScheduler:
    return SendToScheduler(m.WorkerStatus(ME, value, sid))


def test_paused_worker_starts_nothing_and_runs_the_ready_task_on_resume() -> None:
    w = worker()
    assert w.handle(ev.PauseChanged(True, "p")) == [status("paused", "p")]
    assert w.handle(compute_task("x", sid="cx")) == []
    assert w.tasks["x"].state == "ready"
    assert w.handle(ev.PauseChanged(False, "r")) == [
        status("running", "r"),
        Execute("x", RUN, (), False, "r"),
    ]


def test_running_task_finishes_while_paused_and_frees_no_slot_for_the_next() -> None:
    w = worker()
    assert w.handle(compute_task("x", sid="cx")) == [
        Execute("x", RUN, (), False, "cx"),
    ]
    w.handle(ev.PauseChanged(True, "p"))
    assert w.handle(compute_task("y", sid="cy")) == []
    assert w.handle(ev.ExecuteSuccess("x", 8, "int", 0.5, 100.0, "ran-x")) == [
        SendToScheduler(m.TaskFinished(ME, "x", 8, "int", 0.5, 100.0, 1, (), "ran-x")),
    ]
    assert w.tasks["y"].state == "ready"
    assert w.handle(ev.PauseChanged(False, "r")) == [
        status("running", "r"),
        Execute("y", RUN, (), False, "r"),
    ]


def test_paused_worker_fetches_no_input_until_it_resumes() -> None:
    w = worker()
    w.handle(ev.PauseChanged(True, "p"))
    assert w.handle(compute_task("y", ("x", (P,), 10), sid="cy")) == []
    assert {k: t.state for k, t in w.tasks.items()} == {"y": "waiting", "x": "fetch"}
    assert w.handle(ev.PauseChanged(False, "r")) == [
        status("running", "r"),
        GatherDep(P, ("x",), 10, "r"),
    ]


def test_repeated_pause_is_reported_once() -> None:
    w = worker()
    assert w.handle(ev.PauseChanged(True, "p1")) == [status("paused", "p1")]
    assert w.handle(ev.PauseChanged(True, "p2")) == []
    assert w.handle(ev.PauseChanged(False, "r1")) == [status("running", "r1")]
    assert w.handle(ev.PauseChanged(False, "r2")) == []


def test_a_paused_worker_with_nothing_running_reports_a_copy_as_it_lands() -> None:
    # y's input was on its way when the worker paused. Once it lands, y is
    # ready but will not start until the worker resumes, which may be
    # never: no result would carry the copy, so it is reported at once.
    w = worker()
    w.handle(compute_task("y", ("a", (P,), 10), sid="cy"))
    w.handle(ev.PauseChanged(True, "p"))
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "got-a")) == [
        SendToScheduler(m.AddKeys(ME, ("a",), P, 10, 0.0, "got-a")),
    ]
    assert w.tasks["y"].state == "ready"
