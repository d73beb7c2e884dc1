"""SchedulerState under failures, one exchange at a time: exact instruction lists.

Task errors and retries, and workers lost with their queues and data (see
test_scheduler.py for the conventions).
"""

from __future__ import annotations

from teamster.core import messages as m
from teamster.core.scheduler.events import Tick
from teamster.core.scheduler.instructions import CloseWorker

from .builders import (
    EXC,
    TB,
    A,
    B,
    C,
    D,
    compute,
    erred,
    finished,
    free,
    graph,
    in_memory,
    key_erred,
    register_worker,
    scheduler,
    spec,
    states,
)

# ------------------------------------------------------------------ errors


def test_error_is_reported_and_dependents_err_with_blame() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), spec("z", "y"), wanted=("x", "z"),
                   sid="g1"))
    out = s.handle(erred(s, A, "x", text="ValueError('bad')", sid="e-x"))
    # x's own error, then z's: it failed because x did (y is wanted by nobody).
    assert out == [
        key_erred("c", "x", "e-x", text="ValueError('bad')"),
        key_erred("c", "z", "e-x", text="ValueError('bad')"),
    ]
    assert states(s, "x", "y", "z") == {"x": "erred", "y": "erred", "z": "erred"}
    assert s.tasks["z"].exception_blame is s.tasks["x"]
    assert s.tasks["y"].exception_blame is s.tasks["x"]
    assert s.tasks["z"].exception == EXC and s.tasks["z"].traceback == TB


def test_submitting_on_top_of_an_erred_key_errs_at_once() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(erred(s, A, "x", sid="e-x"))
    assert s.handle(graph("c", spec("y", "x"), wanted=("y",), sid="g2")) == [
        key_erred("c", "y", "g2"),
    ]


def test_dependency_on_an_unknown_key_errs() -> None:
    s = scheduler(register_worker(A))
    text = ("Task 'y' depends on 'gone', which the scheduler does not hold "
            "(was its future released or cancelled?)")
    assert s.handle(graph("c", spec("y", "gone"), sid="g1")) == [
        key_erred("c", "y", "g1", text=text, exception=None, traceback=None),
    ]


def test_retries_resend_then_err() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x", retries=1), sid="g1")) == [
        compute(A, "x", (0, 1, 0), "g1"),
    ]
    # First failure: the task is released (the worker is told to drop it) and sent again.
    assert s.handle(erred(s, A, "x", sid="e1")) == [
        free(A, "e1", "x"),
        compute(A, "x", (0, 1, 0), "e1"),
    ]
    assert s.handle(erred(s, A, "x", sid="e2")) == [key_erred("c", "x", "e2")]
    assert states(s, "x") == {"x": "erred"}


def test_erred_key_released_by_its_client_is_forgotten() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1"))
    s.handle(erred(s, A, "x", sid="e"))
    assert states(s, "x", "y") == {"x": "erred", "y": "erred"}
    assert s.handle(m.ReleaseKeys("c", ("y",), "rel")) == []
    assert s.tasks == {}


def test_error_from_a_worker_not_running_the_task_is_ignored() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    assert s.tasks["x"].processing_on is s.workers[A]
    assert s.handle(erred(s, B, "x", sid="stale")) == []
    assert states(s, "x") == {"x": "processing"}


# ------------------------------------------------------------ worker loss


def test_processing_tasks_of_a_lost_worker_go_to_another() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(m.Heartbeat(A, 1.0, (), (("x", 0.5),), "hb")) == []
    # It was running there: its start is announced where it runs next.
    assert s.handle(m.RemoveWorker(A, "connection closed", 5.0, "rm-a")) == [
        compute(B, "x", (0, 1, 0), "rm-a", announce=True),
    ]
    assert s.tasks["x"].suspicious == 1
    assert s.handle(finished(s, B, "x", sid="f")) == [in_memory("c", "x", (B,), "f")]


def test_queued_work_of_a_lost_worker_waits_for_room() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", *[spec(f"t-{i}", priority=(0, i)) for i in range(3)], sid="g1"))
    assert {k: ts.processing_on.address for k, ts in s.tasks.items()
            if ts.processing_on} == {"t-0": A, "t-1": B}
    # A dies; B is busy: t-0 goes back into the queue ahead of t-2.
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == []
    assert s.handle(finished(s, B, "t-1", duration=5.0, sid="f")) == [
        in_memory("c", "t-1", (B,), "f"),
        compute(B, "t-0", (0, 1, 0), "f", announce=True),
    ]


def test_result_lost_with_its_worker_is_recomputed_if_still_wanted() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), spec("y"), sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    s.handle(finished(s, B, "y", sid="fy"))
    # x's only copy was on A.
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == [compute(B, "x", (0, 1, 0), "rm")]
    assert states(s, "x", "y") == {"x": "processing", "y": "memory"}
    assert s.handle(finished(s, B, "x", sid="fx2")) == [in_memory("c", "x", (B,), "fx2")]


def test_lost_intermediate_is_recomputed_for_its_waiting_dependent() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), spec("w"), spec("y", "x", "w"), wanted=("y",), sid="g1"))
    assert {k: ts.processing_on.address for k, ts in s.tasks.items()
            if ts.processing_on} == {"x": A, "w": B}
    s.handle(finished(s, A, "x", sid="fx"))
    assert states(s, "x", "w", "y") == {"x": "memory", "w": "processing", "y": "waiting"}
    # x's only copy dies with A; B is busy, so x waits in the queue.
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == []
    assert states(s, "x", "w", "y") == {"x": "queued", "w": "processing", "y": "waiting"}
    assert s.handle(finished(s, B, "w", sid="fw")) == [compute(B, "x", (0, 1, 0), "fw")]
    assert s.handle(finished(s, B, "x", sid="fx2")) == [
        compute(B, "y", (0, 1, 0), "fx2", who_has=(("x", (B,), 8), ("w", (B,), 8))),
    ]


def test_replicated_result_survives_the_loss_of_one_holder() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    assert s.handle(m.AddKeys(B, ("x",), "", 0, 0.0, "add")) == []
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == []
    assert [w.address for w in s.tasks["x"].who_has] == [B]


def test_task_that_killed_three_workers_is_erred() -> None:
    s = scheduler(register_worker(A), register_worker(B), register_worker(C))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(m.TasksStarted(A, ("x",), "st-a")) == []
    # Idle workers are used in rotation, so C is tried before B.
    assert s.handle(m.RemoveWorker(A, "died", 1.0, "rm-a")) == [
        compute(C, "x", (0, 1, 0), "rm-a", announce=True),
    ]
    assert s.handle(m.TasksStarted(C, ("x",), "st-c")) == []
    assert s.handle(m.RemoveWorker(C, "died", 2.0, "rm-c")) == [
        compute(B, "x", (0, 1, 0), "rm-c", announce=True),
    ]
    assert s.tasks["x"].suspicious == 2
    # (Its start known from a heartbeat this time: notices can be lost.)
    assert s.handle(m.Heartbeat(B, 2.5, (), (("x", 0.1),), "hb")) == []
    text = (
        f"KilledWorker: 'x' was running on 3 workers that died (last {B}: segfault); "
        "it may be what kills them, so it was not retried."
    )
    assert s.handle(m.RemoveWorker(B, "segfault", 3.0, "rm-b")) == [
        key_erred("c", "x", "rm-b", text=text, exception=None, traceback=None),
    ]
    assert states(s, "x") == {"x": "erred"}
    # A new worker does not revive it.
    assert s.handle(register_worker(D, sid="rd")) == []


def test_only_tasks_a_dead_worker_was_running_are_suspected() -> None:
    # A worker holds a queue: dying, it ran at most one task per thread. The
    # rest never ran, and dying with three workers under churn must not fail them.
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", *(spec(k, workers=(A,)) for k in "xyz"), sid="g1"))
    assert sorted(ts.key for ts in s.workers[A].processing_tasks()) == ["x", "y", "z"]
    # Its last heartbeat says x runs (and a task it no longer has for us).
    s.handle(m.Heartbeat(A, 1.0, (), (("x", 0.2), ("gone", 3.0)), "hb"))
    s.handle(m.RemoveWorker(A, "died", 1.5, "rm"))
    assert [s.tasks[k].suspicious for k in "xyz"] == [1, 0, 0]
    # Each may kill the next worker at once, so each start is announced there.
    assert [s.tasks[k].lost_runs for k in "xyz"] == [1, 1, 1]
    assert s.handle(register_worker(A, sid="again")) == [
        compute(A, k, (0, 1, 0), "again", announce=True) for k in "xyz"
    ]


def test_announced_starts_are_kept_while_assigned_there() -> None:
    # A heartbeat sent before an announced task reached its thread does not
    # list it: the announcement must outlive that heartbeat.
    s = scheduler(register_worker(A, nthreads=1), register_worker(B, nthreads=1))
    s.handle(graph("c", spec("x", workers=(A,)), spec("y", workers=(A,)), sid="g1"))
    s.handle(m.TasksStarted(A, ("x", "gone"), "st"))
    s.handle(m.Heartbeat(A, 1.0, (), (), "hb-1"))
    assert s.workers[A].announced == {"x": None}  # ("gone" is not assigned there)
    s.handle(finished(s, A, "x", sid="fx"))
    s.handle(m.Heartbeat(A, 2.0, (), (("y", 0.1),), "hb-2"))
    assert s.workers[A].announced is None
    s.handle(m.RemoveWorker(A, "died", 3.0, "rm"))
    assert s.tasks["y"].suspicious == 1


def test_scattered_data_lost_with_its_worker_errs() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("d", (A,), 50),), "sc"))
    text = ("Data for 'd' was lost with its worker and cannot be recomputed "
            "(it was scattered, not computed); scatter it again.")
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == [
        key_erred("c", "d", "rm", text=text, exception=None, traceback=None),
    ]


def test_heartbeat_timeout_removes_a_silent_worker() -> None:
    s = scheduler(register_worker(A, now=0.0), register_worker(B, now=0.0), heartbeat_timeout=10.0)
    assert s.handle(graph("c", spec("x"), now=1.0, sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(m.Heartbeat(B, 8.0, (("cpu", 0.5),), (), "hb")) == []
    assert s.handle(Tick(9.0, "tick-1")) == []  # nobody silent for 10 s yet
    # A last spoke at t=0, B at t=8: at t=15 only A is past the deadline.
    assert s.handle(Tick(15.0, "tick-2")) == [
        CloseWorker(A, "missed heartbeats", "tick-2"),
        compute(B, "x", (0, 1, 0), "tick-2", announce=True),
    ]
    assert list(s.workers) == [B]
    assert s.workers[B].metrics == {"cpu": 0.5}


def test_message_from_a_removed_worker_is_ignored() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(m.RemoveWorker(A, "lost", 1.0, "rm"))
    assert s.handle(finished(s, A, "x", sid="late")) == []
    assert s.handle(erred(s, A, "x", sid="late2")) == []
    assert s.handle(m.AddKeys(A, ("x",), "", 0, 0.0, "late3")) == []
    assert states(s, "x") == {"x": "processing"}
    assert s.tasks["x"].processing_on is s.workers[B]


def test_reregistering_a_live_address_replaces_the_old_worker() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    # The old incarnation's work is lost; the new one gets it again.
    assert s.handle(register_worker(A, nthreads=2, sid="again")) == [
        compute(A, "x", (0, 1, 0), "again", announce=True),
    ]
    assert s.workers[A].nthreads == 2


def test_second_worker_with_a_taken_name_is_closed() -> None:
    s = scheduler(register_worker(A, name="w"))
    assert s.handle(register_worker(B, name="w", sid="dup")) == [
        CloseWorker(B, "a worker named 'w' is already connected", "dup"),
    ]
    assert list(s.workers) == [A]
