"""Graceful retirement, one exchange at a time: exact instructions.

Scheduler side (retire.py): the retiring worker's unique keys are copied
elsewhere with AcquireReplicas, its queued tasks are asked back, and
CloseWorker comes only once every key it held has another holder. Worker
side (WorkerState): AcquireReplicas fetches and keeps copies, reports them
with AddKeys, or says ReplicasNotAcquired.
"""

from __future__ import annotations

from typing import Any

from teamster.core import messages as m
from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.events import RetireWorkers, Tick
from teamster.core.scheduler.instructions import CloseWorker, RetirementDone, SendToWorker
from teamster.core.scheduler.retire import CLOSING, MAX_ATTEMPTS
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import GatherDep, SendToScheduler

from .builders import (
    A,
    B,
    C,
    D,
    compute,
    finished,
    graph,
    in_memory,
    register_worker,
    scheduler,
    spec,
    states,
)
from .test_stealing import answer, steal, two_workers_with_a_queue


def scatter(s: SchedulerState, key: m.Key, *holders: str, nbytes: int = 100) -> None:
    s.handle(m.ScatteredData("c", ((key, tuple(holders), nbytes),), f"scatter-{key}"))


def retire(*workers: str, close: bool = True, rid: str = "r1", sid: str = "retire",
           now: float = 5.0) -> RetireWorkers:
    return RetireWorkers(tuple(workers), close, rid, now, sid)


def acquire(worker: str, sid: str, *keys: tuple[m.Key, tuple[str, ...], int]) -> SendToWorker:
    return SendToWorker(worker, m.AcquireReplicas(tuple(keys), sid))


def add_keys(worker: str, source: str, *keys: m.Key, sid: str = "got") -> m.AddKeys:
    return m.AddKeys(worker, tuple(keys), source, 100 * len(keys), 0.01, sid)


def info(s_name: str, *, executed: int = 0, moved: int = 0, nbytes: int = 0,
         closed: bool = True) -> dict[str, Any]:
    return {"type": "Worker", "id": s_name, "name": s_name, "nthreads": 1,
            "memory_limit": 2**30, "resources": {}, "executed": executed,
            "keys_moved": moved, "bytes_moved": nbytes, "closed": closed}


def three_workers() -> SchedulerState:
    return scheduler(register_worker(A), register_worker(B), register_worker(C))


# ---------------------------------------------------------------- scheduler


def test_only_the_unique_key_moves_and_the_worker_closes_after_the_copy_arrived() -> None:
    s = three_workers()
    scatter(s, "unique", A)
    scatter(s, "shared", A, B)
    # C holds nothing: it receives the copy (fewest bytes among candidates).
    assert s.handle(retire(A)) == [acquire(C, "retire", ("unique", (A,), 100))]
    assert s.workers[A].status == CLOSING
    assert s.workers[A] not in s.idle
    # An unrelated event does not finish it: the copy is not there yet.
    assert s.handle(m.Heartbeat(A, 1.0, (), (), "hb")) == []
    assert A in s.workers
    assert s.handle(add_keys(C, A, "unique")) == [
        CloseWorker(A, "retired", "got"),
        RetirementDone("r1", ((A, info(A, moved=1, nbytes=100)),), (), "got"),
    ]
    assert A not in s.workers
    assert states(s, "unique", "shared") == {"unique": "memory", "shared": "memory"}
    assert [w.address for w in s.tasks["unique"].who_has] == [C]
    assert [w.address for w in s.tasks["shared"].who_has] == [B]


def test_a_worker_without_unique_data_or_tasks_retires_at_once() -> None:
    s = three_workers()
    scatter(s, "shared", A, B)
    assert s.handle(retire(A)) == [
        CloseWorker(A, "retired", "retire"),
        RetirementDone("r1", ((A, info(A)),), (), "retire"),
    ]
    assert states(s, "shared") == {"shared": "memory"}


def test_copies_are_spread_over_recipients_by_bytes() -> None:
    s = three_workers()
    scatter(s, "big", A, nbytes=1000)
    scatter(s, "small-1", A, nbytes=10)
    scatter(s, "small-2", A, nbytes=10)
    out = s.handle(retire(A))
    # The big key to one recipient, both small ones to the other.
    assert out == [acquire(B, "retire", ("big", (A,), 1000)),
                   acquire(C, "retire", ("small-1", (A,), 10), ("small-2", (A,), 10))]


def test_queued_tasks_are_taken_back_and_placed_elsewhere_running_ones_finish() -> None:
    s = two_workers_with_a_queue()  # A holds slow-0, runs slow-2 and has slow-4 queued
    assert s.handle(retire(A, sid="retire")) == [
        steal(A, "slow-2", 1, "retire"),
        steal(A, "slow-4", 2, "retire"),
        acquire(B, "retire", ("slow-0", (A,), 8)),
    ]
    # B is busy (slow-1 running, slow-3 queued): slow-4 waits in the scheduler.
    assert s.handle(answer(A, "slow-4", 2, True, sid="back")) == []
    assert states(s, "slow-4") == {"slow-4": "queued"}
    assert s.handle(answer(A, "slow-2", 1, False, state="executing", sid="refused")) == []
    # The running task finishes on A; its result is unique there and moves to B.
    assert s.handle(finished(s, A, "slow-2", nbytes=100, duration=0.1, sid="f2")) == [
        in_memory("c", "slow-2", (A,), "f2", nbytes=100),
        acquire(B, "f2", ("slow-2", (A,), 100)),
    ]
    # B finishing slow-1 takes slow-4 from the queue; A gets nothing new.
    out = s.handle(finished(s, B, "slow-1", duration=0.1, sid="f1"))
    assert compute(B, "slow-4", s.tasks["slow-4"].priority, "f1") in out
    assert all(not (isinstance(i, SendToWorker) and i.worker == A) for i in out)
    assert s.handle(add_keys(B, A, "slow-0", sid="got-0")) == []  # slow-2 is still unique
    assert s.handle(add_keys(B, A, "slow-2")) == [
        CloseWorker(A, "retired", "got"),
        RetirementDone("r1", ((A, info(A, executed=2, moved=2, nbytes=108)),), (), "got"),
    ]
    assert s.tasks["slow-4"].processing_on is s.workers[B]


def test_a_recipient_that_cannot_fetch_is_replaced_and_retries_are_bounded() -> None:
    s = scheduler(*(register_worker(w) for w in (A, B, C, D)))
    scatter(s, "x", A)
    assert s.handle(retire(A)) == [acquire(B, "retire", ("x", (A,), 100))]
    tried = [B]
    for attempt in range(1, MAX_ATTEMPTS):
        out = s.handle(m.ReplicasNotAcquired(tried[-1], ("x",), f"no-{attempt}"))
        assert len(out) == 1 and isinstance(out[0], SendToWorker)
        assert out[0].worker not in tried
        tried.append(out[0].worker)
    out = s.handle(m.ReplicasNotAcquired(tried[-1], ("x",), "no-last"))
    assert len(out) == 1 and isinstance(out[0], RetirementDone)
    ((address, reason),) = out[0].refused
    assert address == A and "could not copy 'x'" in reason
    # Refused: A is back in service and still holds x.
    assert s.workers[A].status == "running" and s.workers[A] in s.idle
    assert [w.address for w in s.tasks["x"].who_has] == [A]


def test_a_recipient_leaving_is_replaced() -> None:
    s = three_workers()
    scatter(s, "x", A)
    assert s.handle(retire(A)) == [acquire(B, "retire", ("x", (A,), 100))]
    assert s.handle(m.RemoveWorker(B, "killed", 6.0, "gone")) == [
        acquire(C, "gone", ("x", (A,), 100)),
    ]


def test_retiring_the_only_worker_holding_data_is_refused() -> None:
    s = scheduler(register_worker(A))
    scatter(s, "x", A)
    out = s.handle(retire(A))
    assert len(out) == 1 and isinstance(out[0], RetirementDone)
    assert out[0].retired == ()
    ((address, reason),) = out[0].refused
    assert address == A
    assert reason.startswith("cannot retire the last worker holding data: ")
    assert "'x'" in reason and "start another worker first" in reason
    assert s.workers[A].status == "running" and s.workers[A] in s.idle


def test_retiring_all_workers_with_data_refuses_those_holding_data() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    scatter(s, "x", A)
    out = s.handle(retire(A, B))
    assert len(out) == 2
    assert out[0] == CloseWorker(B, "retired", "retire")  # B holds nothing
    done = out[1]
    assert isinstance(done, RetirementDone)
    assert [a for a, _ in done.retired] == [B]
    assert [a for a, _ in done.refused] == [A]


def test_unknown_workers_are_refused_and_names_resolve() -> None:
    s = scheduler(register_worker(A, name="alice"), register_worker(B))
    out = s.handle(retire("alice", "nobody"))
    assert out[0] == CloseWorker(A, "retired", "retire")
    done = out[1]
    assert isinstance(done, RetirementDone)
    assert [a for a, _ in done.retired] == [A]
    ((name, reason),) = done.refused
    assert name == "nobody" and reason.startswith("no worker 'nobody' is connected")


def test_without_close_the_drained_worker_stays_connected_and_gets_no_work() -> None:
    s = three_workers()
    scatter(s, "x", A)
    s.handle(retire(A, close=False))
    assert s.handle(add_keys(B, A, "x")) == [
        RetirementDone("r1", ((A, info(A, moved=1, nbytes=100, closed=False)),), (), "got"),
    ]
    assert s.workers[A].status == CLOSING
    # Resuming from a pause does not bring it back into service.
    s.handle(m.WorkerStatus(A, "paused", "p"))
    s.handle(m.WorkerStatus(A, "running", "r"))
    assert s.workers[A].status == CLOSING
    out = s.handle(graph("c", *(spec(f"t-{i}") for i in range(6)), sid="more"))
    assert all(i.worker != A for i in out if isinstance(i, SendToWorker))


def test_a_retiring_worker_that_dies_is_reported_not_retired() -> None:
    s = three_workers()
    scatter(s, "x", A)
    s.handle(retire(A))
    out = s.handle(m.RemoveWorker(A, "connection closed", 6.0, "died"))
    (done,) = [i for i in out if isinstance(i, RetirementDone)]
    assert isinstance(done, RetirementDone) and done.retired == ()
    assert "left before its retirement finished" in done.refused[0][1]


def test_a_late_release_of_the_last_unique_key_completes_at_the_next_tick() -> None:
    s = three_workers()
    scatter(s, "x", A)
    s.handle(retire(A))
    s.handle(m.ReleaseKeys("c", ("x",), "release"))
    assert s.handle(Tick(7.0, "tick")) == [
        CloseWorker(A, "retired", "tick"),
        RetirementDone("r1", ((A, info(A, moved=1, nbytes=100)),), (), "tick"),
    ]


def test_two_requests_for_one_worker_are_both_answered() -> None:
    s = three_workers()
    scatter(s, "x", A)
    s.handle(retire(A, rid="r1"))
    assert s.handle(retire(A, rid="r2", sid="again")) == []
    out = s.handle(add_keys(B, A, "x"))
    assert [type(i).__name__ for i in out] == ["CloseWorker", "RetirementDone", "RetirementDone"]
    assert {i.request_id for i in out if isinstance(i, RetirementDone)} == {"r1", "r2"}


# ---------------------------------------------------------------- worker

ME = "tcp://me:1"


def test_worker_fetches_and_keeps_acquired_replicas_then_reports_them() -> None:
    w = WorkerState(ME, 1, validate=True)
    assert w.handle(m.AcquireReplicas((("x", (A,), 10), ("y", (A,), 20)), "acq")) == [
        GatherDep(A, ("x", "y"), 30, "acq"),
    ]
    assert w.handle(ev.GatherDepSuccess(A, (("x", 10), ("y", 20)), (), 0.01, "got")) == [
        SendToScheduler(m.AddKeys(ME, ("x", "y"), A, 30, 0.01, "got")),
    ]
    # Kept: no local task reads them, but the scheduler now counts this copy.
    assert {k: w.tasks[k].state for k in ("x", "y")} == {"x": "memory", "y": "memory"}


def test_worker_that_cannot_fetch_a_replica_says_so() -> None:
    w = WorkerState(ME, 1, validate=True)
    w.handle(m.AcquireReplicas((("x", (A,), 10),), "acq"))
    assert w.handle(ev.GatherDepFailure(A, ("x",), "refused", "broke")) == [
        SendToScheduler(m.ReplicasNotAcquired(ME, ("x",), "broke")),
    ]
    assert "x" not in w.tasks


def test_worker_asked_for_a_replica_it_holds_reports_it_again() -> None:
    w = WorkerState(ME, 1, validate=True)
    w.handle(ev.DataPut((("x", 10),), "put"))
    assert w.handle(m.AcquireReplicas((("x", (A,), 10),), "acq")) == [
        SendToScheduler(m.AddKeys(ME, ("x",), "", 0, 0.0, "acq")),
    ]


def test_worker_freed_while_acquiring_drops_the_replica() -> None:
    w = WorkerState(ME, 1, validate=True)
    w.handle(m.AcquireReplicas((("x", (A,), 10),), "acq"))
    assert w.handle(m.FreeKeys(("x",), "free")) == []
    # The transfer lands after all: deleted, nothing reported.
    out = w.handle(ev.GatherDepSuccess(A, (("x", 10),), (), 0.01, "late"))
    assert all(not isinstance(i, SendToScheduler) for i in out)
    assert "x" not in w.tasks


def test_no_message_follows_a_worker_closed_by_the_same_event() -> None:
    """Found by test_properties: the result of a released task freed the
    retiring worker and was freed *on* it in one event; the FreeKeys went to
    a worker already removed."""
    s = three_workers()
    s.handle(graph("c", spec("t"), sid="g"))
    assert s.tasks["t"].processing_on is s.workers[A]
    s.handle(retire(A))
    s.handle(m.ReleaseKeys("c", ("t",), "release"))
    assert s.handle(finished(s, A, "t", sid="late")) == [
        CloseWorker(A, "retired", "late"),
        RetirementDone("r1", ((A, info(A)),), (), "late"),
    ]


def test_a_refused_retirement_gives_back_the_tasks_only_that_worker_may_run() -> None:
    # Found by test_scheduler_random_events: a GPU task taken back from the
    # only GPU worker for its retirement waited in no-worker; when the
    # retirement was refused the worker took work again, but not that task.
    s = scheduler(register_worker(A, resources={"GPU": 1}), register_worker(B))
    scatter(s, "x", A)
    gpu = {"GPU": 1.0}
    s.handle(graph("c", spec("g-0", resources=gpu), spec("g-1", resources=gpu), sid="g"))
    assert states(s, "g-0", "g-1") == {"g-0": "processing", "g-1": "processing"}
    assert s.handle(retire(A, sid="retire")) == [
        steal(A, "g-0", 1, "retire"),
        steal(A, "g-1", 2, "retire"),
        acquire(B, "retire", ("x", (A,), 100)),
    ]
    assert s.handle(answer(A, "g-1", 2, True, sid="back")) == []
    assert states(s, "g-1") == {"g-1": "no-worker"}  # A is closing: nowhere to run
    # The only recipient leaves: nobody else can hold x, so A stays, and runs g-1 again.
    out = s.handle(m.RemoveWorker(B, "killed", 6.0, "gone"))
    assert isinstance(out[0], RetirementDone) and [a for a, _ in out[0].refused] == [A]
    assert out[1:] == [compute(A, "g-1", s.tasks["g-1"].priority, "gone",
                               resources=(("GPU", 1.0),))]
    assert states(s, "g-1") == {"g-1": "processing"}


def test_a_stale_result_frees_only_its_own_run_not_the_copy_being_acquired() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g"))  # x runs on A (run 1)...
    s.handle(m.ReleaseKeys("c", ("x",), "rel"))  # ... and is released: FreeKeys to A
    # The client scatters a new x to B, and B is retired: A is asked to copy it.
    s.handle(m.ScatteredData("c", (("x", (B,), 100),), "sc"))
    assert s.handle(retire(B, close=False, sid="rt")) == [
        SendToWorker(A, m.AcquireReplicas((("x", (B,), 100),), "rt")),
    ]
    # A's result of run 1 crosses the FreeKeys. A plain FreeKeys in answer
    # would delete the copy A is fetching (found by test_properties): this
    # one frees only run 1's result, and A's copy is not that (test_worker).
    assert s.handle(finished(s, A, "x", run_id=1, sid="stale")) == [
        SendToWorker(A, m.FreeKeys(("x",), "stale", 1)),
    ]
