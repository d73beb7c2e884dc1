"""WorkerState, one exchange at a time: exact instruction lists.

Each test builds a validating ``WorkerState`` (invariants checked after every
event), feeds it scheduler messages (ComputeTask, FreeKeys) and shell events
(ExecuteSuccess, GatherDepSuccess, ...), and asserts the exact instructions
it returns: what to run, what to fetch from whom, what to tell the scheduler,
what to delete from the data store.
"""

from __future__ import annotations

import pytest

from teamster.core import messages as m
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import DeleteData, Execute, GatherDep, SendToScheduler
from teamster.core.worker.state import MAX_CONCURRENT_GATHERS

from .builders import EXC, RUN, TB

ME = "tcp://me:1"
P, Q, R = "tcp://p:1", "tcp://q:1", "tcp://r:1"


def worker(nthreads: int = 1, resources: dict[str, float] | None = None) -> WorkerState:
    return WorkerState(ME, nthreads, resources=resources, validate=True)


def compute(
    key: m.Key, *deps: tuple[m.Key, tuple[str, ...], int], priority: m.Priority = (0,),
    resources: tuple[tuple[str, float], ...] | None = None, sid: str = "", run_id: int = 1,
    run_spec: m.Serialized | None = RUN, announce: bool = False,
) -> m.ComputeTask:
    return m.ComputeTask(key, run_spec, tuple(deps), priority, resources, run_id, announce,
                         sid or f"compute-{key}")


def execute(key: m.Key, sid: str, *deps: m.Key, announce: bool = False) -> Execute:
    return Execute(key, RUN, tuple(deps), announce, sid)


def started(sid: str, *keys: m.Key) -> SendToScheduler:
    return SendToScheduler(m.TasksStarted(ME, keys, sid))


def success(key: m.Key, *, nbytes: int = 8, sid: str = "") -> ev.ExecuteSuccess:
    return ev.ExecuteSuccess(key, nbytes, "int", 0.5, 100.0, sid or f"ran-{key}")


def failure(key: m.Key, sid: str = "") -> ev.ExecuteFailure:
    return ev.ExecuteFailure(key, EXC, TB, "ValueError('x')", 0.5, sid or f"failed-{key}")


def finished(key: m.Key, sid: str, *, nbytes: int = 8, duration: float = 0.5,
             stop: float = 100.0, type_name: str = "int", run_id: int = 1,
             transfers: tuple[tuple[tuple[m.Key, ...], int], ...] = ()) -> SendToScheduler:
    return SendToScheduler(m.TaskFinished(ME, key, nbytes, type_name, duration, stop, run_id,
                                          transfers, sid))


def to_scheduler(msg: m.Message) -> SendToScheduler:
    return SendToScheduler(msg)


def states(w: WorkerState, *keys: m.Key) -> dict[m.Key, str]:
    return {k: w.tasks[k].state if k in w.tasks else "forgotten" for k in keys}


# ------------------------------------------------------------------ compute


def test_task_without_dependencies_executes_at_once() -> None:
    w = worker()
    assert w.handle(compute("x", sid="c1")) == [execute("x", "c1")]
    assert states(w, "x") == {"x": "executing"}


def test_execute_success_reports_task_finished() -> None:
    w = worker()
    w.handle(compute("x"))
    assert w.handle(success("x", nbytes=100, sid="ok")) == [
        finished("x", "ok", nbytes=100),
    ]
    assert states(w, "x") == {"x": "memory"}


def test_execute_failure_reports_task_erred_and_forgets() -> None:
    w = worker()
    w.handle(compute("x"))
    assert w.handle(failure("x", sid="bad")) == [
        to_scheduler(m.TaskErred(ME, "x", EXC, TB, "ValueError('x')", 0.5, 1, "bad")),
    ]
    assert w.tasks == {}


def test_threads_bound_and_priority_order_of_execution() -> None:
    w = worker(nthreads=2)
    assert w.handle(compute("a", priority=(0, 3), sid="ca")) == [
        execute("a", "ca"),
    ]
    assert w.handle(compute("b", priority=(0, 1), sid="cb")) == [
        execute("b", "cb"),
    ]
    # Both threads busy: c and d wait, and run highest priority (lowest tuple) first.
    assert w.handle(compute("c", priority=(0, 2), sid="cc")) == []
    assert w.handle(compute("d", priority=(0, 0), sid="cd")) == []
    assert states(w, "c", "d") == {"c": "ready", "d": "ready"}
    assert w.handle(success("a", sid="ra")) == [
        finished("a", "ra"),
        execute("d", "ra"),
    ]
    assert w.handle(success("b", sid="rb")) == [
        finished("b", "rb"),
        execute("c", "rb"),
    ]
    assert w.handle(success("d", sid="rd")) == [finished("d", "rd")]


def test_resources_bound_concurrent_execution() -> None:
    w = worker(nthreads=4, resources={"GPU": 1})
    gpu = (("GPU", 1.0),)
    assert w.handle(compute("g1", priority=(0, 0), resources=gpu, sid="c1")) == [
        execute("g1", "c1"),
    ]
    assert w.available_resources == {"GPU": 0}
    # Threads are free, the GPU is not.
    assert w.handle(compute("g2", priority=(0, 1), resources=gpu, sid="c2")) == []
    # A task without resource needs and of higher priority still runs.
    assert w.handle(compute("cpu", priority=(-1,), sid="c3")) == [
        execute("cpu", "c3"),
    ]
    assert w.handle(success("g1", sid="r1")) == [
        finished("g1", "r1"),
        execute("g2", "r1"),
    ]
    assert w.handle(success("g2", sid="r2")) == [finished("g2", "r2")]
    assert w.available_resources == {"GPU": 1}


def test_compute_of_a_key_already_in_memory_reports_it_at_once() -> None:
    w = worker()
    w.handle(compute("x"))
    w.handle(success("x", nbytes=50))
    assert w.handle(compute("x", sid="again")) == [
        finished("x", "again", nbytes=50, duration=0.0, stop=0.0),
    ]


def test_an_announced_task_runs_once_its_start_notice_is_out() -> None:
    # It was on a worker that died: should it kill this one at once too, the
    # scheduler must already know it started (the shell runs it only once
    # what this event sends is written).
    w = worker(nthreads=2)
    assert w.handle(compute("x", sid="cx", announce=True)) == [
        execute("x", "cx", announce=True),
        started("cx", "x"),
    ]
    assert w.handle(compute("y", sid="cy")) == [execute("y", "cy")]


def test_duplicate_compute_is_ignored() -> None:
    w = worker()
    assert w.handle(compute("x", sid="c1")) == [execute("x", "c1")]
    assert w.handle(compute("x", sid="c2")) == []


# ----------------------------------------------------------- dependencies


def test_dependencies_on_peers_are_gathered_one_request_per_peer() -> None:
    w = worker()
    out = w.handle(compute("y", ("x1", (P,), 10), ("x2", (P, Q), 20), ("x3", (Q,), 30),
                           sid="cy"))
    # One request per peer, carrying every key filed under it.
    assert out == [GatherDep(P, ("x1", "x2"), 30, "cy"), GatherDep(Q, ("x3",), 30, "cy")]
    assert states(w, "y", "x1", "x3") == {"y": "waiting", "x1": "flight", "x3": "flight"}
    # The copies are reported with y's result, not one message per transfer.
    assert w.handle(ev.GatherDepSuccess(P, (("x1", 11), ("x2", 21)), (), 0.0, "got-p")) == []
    assert w.handle(ev.GatherDepSuccess(Q, (("x3", 31),), (), 0.0, "got-q")) == [
        execute("y", "got-q", "x1", "x2", "x3"),
    ]
    assert w.tasks["x1"].nbytes == 11  # the size measured on arrival
    assert w.handle(success("y", sid="done")) == [
        finished("y", "done", transfers=((("x1", "x2"), 32), (("x3",), 31))),
    ]


def test_small_inputs_wait_for_the_next_result_while_a_task_runs() -> None:
    w = worker(nthreads=1)
    w.handle(compute("z", sid="cz"))  # z runs; y waits for its inputs and a thread
    w.handle(compute("y", ("a", (P,), 10), ("b", (Q,), 20), sid="cy"))
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "got-a")) == []
    assert w.handle(ev.GatherDepSuccess(Q, (("b", 20),), (), 0.0, "got-b")) == []
    # Both transfers ride on z's result (one scheduler event, not three).
    assert w.handle(success("z", sid="rz")) == [
        finished("z", "rz", transfers=((("a",), 10), (("b",), 20))),
        execute("y", "rz", "a", "b"),
    ]
    assert w.unreported == []


def test_unreported_inputs_go_out_as_add_keys_once_no_result_is_coming() -> None:
    w = worker(nthreads=1)
    w.handle(compute("z", sid="cz"))
    w.handle(compute("y", ("a", (P,), 10), sid="cy"))
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "got-a")) == []
    # z is cancelled (its end reports nothing) and y stolen: nothing would
    # carry a, and the scheduler would never free it. Reported at once.
    assert w.handle(m.FreeKeys(("z",), "free")) == []
    assert w.tasks["z"].state == "cancelled"
    assert w.handle(m.StealRequest("y", 1, "steal")) == [
        to_scheduler(m.StealResponse(ME, "y", 1, True, "ready", "steal")),
        to_scheduler(m.AddKeys(ME, ("a",), P, 10, 0.0, "steal")),
    ]


def test_unreported_inputs_go_out_when_the_task_that_waited_for_them_is_handed_back() -> None:
    w = worker()
    w.handle(compute("y", ("a", (P,), 10), ("b", (Q,), 10), sid="cy"))
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "got-a")) == []
    # b is gone everywhere: y goes back to the scheduler, and a is reported.
    assert w.handle(ev.GatherDepSuccess(Q, (), ("b",), 0.0, "miss")) == [
        to_scheduler(m.MissingData(ME, "b", Q, "miss")),
        to_scheduler(m.RescheduleTask(ME, "y", 1, "miss")),
        to_scheduler(m.AddKeys(ME, ("a",), P, 10, 0.0, "miss")),
    ]


def test_large_transfers_and_requested_copies_are_reported_as_they_land() -> None:
    w = worker(nthreads=1)
    w.handle(compute("z", sid="cz"))
    big = m.REPORT_AT_ONCE_BYTES
    w.handle(compute("y", ("a", (P,), big), sid="cy"))
    # The scheduler learns bandwidth from large transfers and places readers
    # of large data by its holders: no waiting for z.
    assert w.handle(ev.GatherDepSuccess(P, (("a", big),), (), 0.5, "got-a")) == [
        to_scheduler(m.AddKeys(ME, ("a",), P, big, 0.5, "got-a")),
    ]
    # A copy it asked for (a retiring worker's data) is awaited: no waiting either.
    assert w.handle(m.AcquireReplicas((("r", (Q,), 10),), "acq")) == [
        GatherDep(Q, ("r",), 10, "acq"),
    ]
    assert w.handle(ev.GatherDepSuccess(Q, (("r", 10),), (), 0.0, "got-r")) == [
        to_scheduler(m.AddKeys(ME, ("r",), Q, 10, 0.0, "got-r")),
    ]
    assert w.handle(success("z", sid="rz")) == [
        finished("z", "rz"),
        execute("y", "rz", "a"),
    ]


def test_a_free_for_an_earlier_run_spares_a_copy_acquired_since() -> None:
    w = worker()
    w.handle(compute("x", sid="cx", run_id=1))
    w.handle(success("x", sid="rx"))
    # Released, then asked to copy the scattered x of a retiring worker.
    assert w.handle(m.FreeKeys(("x",), "rel")) == [DeleteData(("x",), "rel")]
    assert w.handle(m.AcquireReplicas((("x", (Q,), 10),), "acq")) == [
        GatherDep(Q, ("x",), 10, "acq"),
    ]
    # The scheduler's answer to the stale result of run 1 arrives: not this copy.
    assert w.handle(m.FreeKeys(("x",), "stale", 1)) == []
    assert w.handle(ev.GatherDepSuccess(Q, (("x", 10),), (), 0.0, "got-x")) == [
        to_scheduler(m.AddKeys(ME, ("x",), Q, 10, 0.0, "got-x")),
    ]
    assert w.tasks["x"].state == "memory"


def test_a_free_for_a_fetched_copy_spares_a_value_scattered_since() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 8), sid="cy"))
    assert w.handle(ev.GatherDepSuccess(P, (("x", 8),), (), 0.0, "got-x")) == [
        execute("y", "got-x", "x"),
    ]
    w.handle(success("y", sid="ry"))  # (x stays: the scheduler counts the copy)
    # The scheduler answers the copy's report (released meanwhile) with a
    # FreeKeys for that copy; a client scatters a new x here before it lands.
    w.handle(ev.DataPut((("x", 100),), "put"))
    assert w.handle(m.FreeKeys(("x",), "unwanted", m.FETCHED_COPY)) == []
    assert w.tasks["x"].state == "memory"
    # Without the scatter, the copy goes.
    w2 = worker()
    w2.handle(compute("y", ("x", (P,), 8), sid="cy"))
    w2.handle(ev.GatherDepSuccess(P, (("x", 8),), (), 0.0, "got-x"))
    w2.handle(success("y", sid="ry"))
    assert w2.handle(m.FreeKeys(("x",), "unwanted", m.FETCHED_COPY)) == [
        DeleteData(("x",), "unwanted"),
    ]


def test_a_free_for_a_run_drops_that_runs_result_only() -> None:
    w = worker()
    w.handle(compute("x", sid="cx", run_id=1))
    w.handle(success("x", sid="rx"))
    # Assigned again (run 2) while in memory: the result now answers run 2.
    assert w.handle(compute("x", sid="cx2", run_id=2)) == [
        finished("x", "cx2", duration=0.0, stop=0.0, run_id=2),
    ]
    assert w.handle(m.FreeKeys(("x",), "stale", 1)) == []
    assert w.handle(m.FreeKeys(("x",), "done", 2)) == [DeleteData(("x",), "done")]


def test_dependency_already_in_memory_is_not_fetched() -> None:
    w = worker()
    w.handle(compute("x", sid="cx"))
    w.handle(success("x"))
    assert w.handle(compute("y", ("x", (ME,), 8), sid="cy")) == [
        execute("y", "cy", "x"),
    ]


def test_large_dependencies_are_split_across_requests_to_one_peer() -> None:
    w = worker()
    big = 40_000_000
    out = w.handle(compute("y", ("a", (P,), big), ("b", (P,), big), sid="cy"))
    assert out == [GatherDep(P, ("a",), big, "cy")]  # 80 MB would exceed one request
    assert w.handle(ev.GatherDepSuccess(P, (("a", big),), (), 0.0, "got-a")) == [
        to_scheduler(m.AddKeys(ME, ("a",), P, big, 0.0, "got-a")),
        GatherDep(P, ("b",), big, "got-a"),
    ]


def test_concurrent_gathers_are_bounded() -> None:
    w = worker()
    peers = [f"tcp://peer{i}:1" for i in range(MAX_CONCURRENT_GATHERS + 1)]
    deps = [(f"d{i}", (p,), 10) for i, p in enumerate(peers)]
    out = w.handle(compute("y", *deps, sid="cy"))
    assert out == [GatherDep(p, (f"d{i}",), 10, "cy") for i, p in enumerate(peers[:-1])]
    assert w.handle(ev.GatherDepSuccess(peers[0], (("d0", 10),), (), 0.0, "got")) == [
        GatherDep(peers[-1], (f"d{len(peers) - 1}",), 10, "got"),
    ]


def test_missing_data_is_reported_and_fetched_from_another_holder() -> None:
    w = worker()
    assert w.handle(compute("y", ("x", (P, Q), 10), sid="cy")) == [
        GatherDep(P, ("x",), 10, "cy"),
    ]
    assert w.handle(ev.GatherDepSuccess(P, (), ("x",), 0.0, "miss")) == [
        to_scheduler(m.MissingData(ME, "x", P, "miss")),
        GatherDep(Q, ("x",), 10, "miss"),
    ]
    assert w.handle(ev.GatherDepSuccess(Q, (("x", 10),), (), 0.0, "got")) == [
        execute("y", "got", "x"),
    ]
    assert w.handle(success("y", sid="done")) == [
        finished("y", "done", transfers=((("x",), 10),)),
    ]


def test_missing_data_with_no_other_holder_hands_the_task_back() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    assert w.handle(ev.GatherDepSuccess(P, (), ("x",), 0.0, "miss")) == [
        to_scheduler(m.MissingData(ME, "x", P, "miss")),
        to_scheduler(m.RescheduleTask(ME, "y", 1, "miss")),
    ]
    assert w.tasks == {}


def test_reply_without_a_requested_key_refetches_it() -> None:
    w = worker()
    w.handle(compute("y", ("a", (P,), 10), ("b", (P, Q), 10), sid="cy"))
    # P sent a but neither sent b nor said it was missing.
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "partial")) == [
        GatherDep(Q, ("b",), 10, "partial"),
    ]


def test_network_failure_refetches_from_another_holder() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P, Q), 10), sid="cy"))
    assert w.handle(ev.GatherDepFailure(P, ("x",), "connection reset", "down")) == [
        GatherDep(Q, ("x",), 10, "down"),
    ]
    assert w.tasks["x"].who_has == [Q]


def test_network_failure_without_other_holder_hands_the_task_back() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    assert w.handle(ev.GatherDepFailure(P, ("x",), "connection reset", "down")) == [
        to_scheduler(m.RescheduleTask(ME, "y", 1, "down")),
    ]
    assert w.tasks == {}


def test_dependency_listed_only_on_this_worker_but_absent_hands_the_task_back() -> None:
    w = worker()
    assert w.handle(compute("y", ("x", (ME,), 10), sid="cy")) == [
        to_scheduler(m.RescheduleTask(ME, "y", 1, "cy")),
    ]
    assert w.tasks == {}


# ---------------------------------------------------------------- freeing


def test_free_keys_while_executing_discards_the_result() -> None:
    w = worker()
    w.handle(compute("x"))
    assert w.handle(m.FreeKeys(("x",), "free")) == []
    assert states(w, "x") == {"x": "cancelled"}
    # The shell stored the value; it is deleted and nothing is reported.
    assert w.handle(success("x", sid="late")) == [DeleteData(("x",), "late")]
    assert w.tasks == {}


def test_free_keys_while_executing_then_failure_reports_nothing() -> None:
    w = worker()
    w.handle(compute("x"))
    w.handle(m.FreeKeys(("x",), "free"))
    assert w.handle(failure("x", sid="late")) == []
    assert w.tasks == {}


def test_free_keys_twice_while_executing_keeps_the_thread_accounted() -> None:
    w = worker(nthreads=1)
    w.handle(compute("x"))
    w.handle(m.FreeKeys(("x",), "free-1"))
    # A second FreeKeys (e.g. the answer to a crossing TaskFinished) must not
    # forget a task that still occupies the thread.
    assert w.handle(m.FreeKeys(("x",), "free-2")) == []
    assert states(w, "x") == {"x": "cancelled"}
    assert w.handle(compute("y", sid="cy")) == []  # the thread is still busy
    assert w.handle(success("x", sid="late")) == [
        DeleteData(("x",), "late"),
        execute("y", "late"),
    ]


def test_compute_again_after_cancel_resumes_without_a_second_execute() -> None:
    w = worker()
    w.handle(compute("x", sid="c1"))
    w.handle(m.FreeKeys(("x",), "free"))
    assert w.handle(compute("x", sid="c2", run_id=2)) == []
    assert states(w, "x") == {"x": "executing"}
    # The run still going answers the new assignment.
    assert w.handle(success("x", sid="done")) == [finished("x", "done", run_id=2)]


def test_free_keys_of_ready_task_forgets_it() -> None:
    w = worker()
    w.handle(compute("a", sid="ca"))
    w.handle(compute("b", sid="cb"))
    assert states(w, "b") == {"b": "ready"}
    assert w.handle(m.FreeKeys(("b",), "free")) == []
    assert w.handle(success("a", sid="ra")) == [finished("a", "ra")]
    assert "b" not in w.tasks


def test_free_keys_of_a_waiting_task_drops_its_fetches() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    assert w.handle(m.FreeKeys(("y",), "free")) == []
    assert states(w, "y", "x") == {"y": "forgotten", "x": "forgotten"}
    # The reply arrives anyway: the shell stored it; it is deleted.
    assert w.handle(ev.GatherDepSuccess(P, (("x", 10),), (), 0.0, "late")) == [
        DeleteData(("x",), "late"),
    ]


def test_data_put_then_free_keys_deletes_it() -> None:
    w = worker()
    assert w.handle(ev.DataPut((("d", 100),), "put")) == []
    assert states(w, "d") == {"d": "memory"}
    assert w.handle(m.FreeKeys(("d",), "free")) == [DeleteData(("d",), "free")]
    assert w.tasks == {}


def test_free_keys_of_an_input_still_needed_keeps_it_until_the_task_finished() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    w.handle(ev.GatherDepSuccess(P, (("x", 10),), (), 0.0, "got"))
    assert states(w, "x", "y") == {"x": "memory", "y": "executing"}
    # The scheduler no longer counts this replica, but y still reads x.
    assert w.handle(m.FreeKeys(("x",), "free")) == []
    assert states(w, "x") == {"x": "memory"}
    # x's transfer is still counted (bytes moved), x itself no longer reported.
    assert w.handle(success("y", sid="done")) == [
        DeleteData(("x",), "done"),
        finished("y", "done", transfers=(((), 10),)),
    ]
    assert list(w.tasks) == ["y"]


def test_free_keys_of_an_input_also_held_for_the_scheduler_keeps_it_while_needed() -> None:
    w = worker()
    w.handle(ev.DataPut((("x", 10),), "put"))
    w.handle(compute("y", ("x", (ME,), 10), priority=(0,), sid="cy"))
    w.handle(success("y", sid="done"))
    # y finished; x is still counted by the scheduler (it was put here).
    assert states(w, "x") == {"x": "memory"}
    assert w.handle(m.FreeKeys(("x",), "free")) == [DeleteData(("x",), "free")]


def test_free_keys_of_unknown_key_is_harmless() -> None:
    w = worker()
    assert w.handle(m.FreeKeys(("nope",), "free")) == []


# ------------------------------------------------- crossings on the wire


def test_stale_gather_reply_does_not_delete_a_live_value() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    w.handle(m.FreeKeys(("y",), "free"))  # x forgotten while its request to P is in flight
    assert w.handle(compute("z", ("x", (Q,), 10), sid="cz")) == [GatherDep(Q, ("x",), 10, "cz")]
    w.handle(ev.GatherDepSuccess(Q, (("x", 10),), (), 0.0, "got-q"))
    assert states(w, "x", "z") == {"x": "memory", "z": "executing"}
    # P's late reply: the shell stored the (same) value again; keep it.
    assert w.handle(ev.GatherDepSuccess(P, (("x", 10),), (), 0.0, "late-p")) == []
    assert states(w, "x") == {"x": "memory"}


def test_compute_of_a_key_waiting_to_be_fetched_computes_it_here() -> None:
    w = worker(nthreads=1)
    assert w.handle(compute("y", ("a", (P,), 10), sid="cy")) == [GatherDep(P, ("a",), 10, "cy")]
    # P is busy with a request already: x waits in the fetch queue.
    assert w.handle(compute("z", ("x", (P,), 10), sid="cz")) == []
    assert states(w, "x") == {"x": "fetch"}
    # The scheduler asks this worker to compute x itself (P lost it, say).
    assert w.handle(compute("x", sid="cx")) == [execute("x", "cx")]
    assert w.handle(success("x", sid="rx")) == [
        finished("x", "rx"),
        execute("z", "rx", "x"),
    ]
    # z still runs: a is reported with z's result.
    assert w.handle(ev.GatherDepSuccess(P, (("a", 10),), (), 0.0, "got-a")) == []
    assert w.handle(success("z", sid="rz")) == [
        finished("z", "rz", transfers=((("a",), 10),)),
        execute("y", "rz", "a"),
    ]


def test_compute_of_a_fetched_key_in_flight_is_reported_when_it_lands() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    # The scheduler lost x's holders and asks this worker to compute it;
    # the copy on its way will do.
    assert w.handle(compute("x", sid="cx")) == []
    assert w.handle(ev.GatherDepSuccess(P, (("x", 10),), (), 0.0, "got")) == [
        finished("x", "got", nbytes=10, duration=0.0, stop=0.0, type_name=""),
        execute("y", "got", "x"),
    ]


def test_compute_of_a_key_in_flight_is_handed_back_if_the_transfer_fails() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy"))
    w.handle(compute("x", sid="cx"))
    # Neither the copy nor any holder: give both back, nothing may stay stuck.
    assert w.handle(ev.GatherDepFailure(P, ("x",), "reset", "down")) == [
        to_scheduler(m.RescheduleTask(ME, "x", 1, "down")),
        to_scheduler(m.RescheduleTask(ME, "y", 1, "down")),
    ]
    assert w.tasks == {}


def test_compute_of_a_key_in_flight_is_handed_back_and_refetched_elsewhere() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P, Q), 10), sid="cy"))
    w.handle(compute("x", sid="cx"))
    assert w.handle(ev.GatherDepFailure(P, ("x",), "reset", "down")) == [
        to_scheduler(m.RescheduleTask(ME, "x", 1, "down")),
        GatherDep(Q, ("x",), 10, "down"),
    ]
    assert w.handle(ev.GatherDepSuccess(Q, (("x", 10),), (), 0.0, "got")) == [
        execute("y", "got", "x"),
    ]


def test_cancelled_task_finishing_feeds_a_dependent_placed_here_meanwhile() -> None:
    w = worker(nthreads=1)
    w.handle(compute("x", sid="cx"))
    w.handle(m.FreeKeys(("x",), "free"))  # released; then resubmitted and run on P
    assert w.handle(compute("y", ("x", (P,), 8), sid="cy")) == []
    assert states(w, "x", "y") == {"x": "cancelled", "y": "waiting"}
    # The local run finishes first: its value serves y (no fetch, no report).
    assert w.handle(success("x", sid="ran-x")) == [
        execute("y", "ran-x", "x"),
    ]
    assert w.handle(success("y", sid="ran-y")) == [
        DeleteData(("x",), "ran-y"),
        finished("y", "ran-y"),
    ]


def test_cancelled_task_failing_hands_back_a_dependent_placed_here_meanwhile() -> None:
    w = worker(nthreads=1)
    w.handle(compute("x", sid="cx"))
    w.handle(m.FreeKeys(("x",), "free"))
    w.handle(compute("y", ("x", (P,), 8), sid="cy"))
    assert w.handle(failure("x", sid="failed-x")) == [
        to_scheduler(m.RescheduleTask(ME, "y", 1, "failed-x")),
    ]
    assert w.tasks == {}


def test_data_put_for_a_key_being_computed_is_dropped_from_the_store() -> None:
    w = worker()
    w.handle(compute("x", sid="cx"))
    assert w.handle(ev.DataPut((("x", 8),), "put")) == [DeleteData(("x",), "put")]
    assert states(w, "x") == {"x": "executing"}
    assert w.handle(success("x", sid="ran")) == [finished("x", "ran")]


def test_data_put_for_a_key_waiting_to_be_fetched_makes_it_local() -> None:
    w = worker(nthreads=2)
    w.handle(compute("y", ("a", (P,), 10), sid="cy"))
    w.handle(compute("z", ("x", (P,), 10), sid="cz"))
    assert states(w, "x") == {"x": "fetch"}
    assert w.handle(ev.DataPut((("x", 10),), "put")) == [
        execute("z", "put", "x"),
    ]
    assert states(w, "x") == {"x": "memory"}


# ------------------------------------------------------------------ misc


def test_story_and_invalid_transition() -> None:
    from teamster.core.story import InvalidTransition

    w = worker()
    w.handle(compute("x", sid="cx"))
    w.handle(success("x", sid="rx"))
    assert [(e.start, e.finish, e.stimulus_id) for e in w.story("x")] == [
        ("released", "ready", "cx"),
        ("ready", "executing", "cx"),
        ("executing", "memory", "rx"),
    ]
    with pytest.raises(InvalidTransition, match="'memory' -> 'executing'"):
        w.transition(w.tasks["x"], "executing")


def test_unknown_event_type_raises() -> None:
    w = worker()
    with pytest.raises(TypeError, match="cannot handle"):
        w.handle(m.TaskFinished(ME, "x", 1, "int", 0.1, 1.0, 1, (), "wrong-direction"))
    with pytest.raises(TypeError, match="cannot handle object"):
        w.handle(object())  # (no stimulus_id either: still the TypeError)


# ------------------------------------------------------------------ run_id

RUN2 = m.Serialized(b"another computation")


def test_reports_echo_the_run_id_of_the_assignment() -> None:
    w = worker(nthreads=2)
    w.handle(compute("x", run_id=7))
    w.handle(compute("y", run_id=8))
    assert w.handle(success("x", sid="rx")) == [finished("x", "rx", run_id=7)]
    assert w.handle(failure("y", sid="fy")) == [
        to_scheduler(m.TaskErred(ME, "y", EXC, TB, "ValueError('x')", 0.5, 8, "fy")),
    ]
    # Already in memory: answered at once, for the new assignment.
    assert w.handle(compute("x", sid="again", run_id=9)) == [
        finished("x", "again", duration=0.0, stop=0.0, run_id=9),
    ]


def test_give_up_echoes_the_run_id() -> None:
    w = worker()
    w.handle(compute("y", ("x", (P,), 10), sid="cy", run_id=4))
    assert w.handle(ev.GatherDepFailure(P, ("x",), "reset", "down")) == [
        to_scheduler(m.RescheduleTask(ME, "y", 4, "down")),
    ]


def test_resubmitted_different_computation_waits_for_the_cancelled_run() -> None:
    """A key released while running and resubmitted as another computation:
    the old run's result must not answer the new assignment."""
    w = worker(nthreads=1)
    assert w.handle(compute("x", sid="c1", run_id=1)) == [execute("x", "c1")]
    w.handle(m.FreeKeys(("x",), "free"))
    assert w.handle(compute("x", sid="c2", run_id=2, run_spec=RUN2)) == []
    assert states(w, "x") == {"x": "cancelled"}
    # The old run ends: its value is dropped, the new computation starts.
    assert w.handle(success("x", sid="old")) == [
        DeleteData(("x",), "old"),
        Execute("x", RUN2, (), False, "old"),
    ]
    assert w.handle(success("x", sid="new")) == [finished("x", "new", run_id=2)]


def test_resubmitted_different_computation_starts_after_the_old_run_fails() -> None:
    w = worker(nthreads=1)
    w.handle(compute("x", sid="c1", run_id=1))
    w.handle(m.FreeKeys(("x",), "free"))
    w.handle(compute("x", sid="c2", run_id=2, run_spec=RUN2))
    assert w.handle(failure("x", sid="old")) == [
        Execute("x", RUN2, (), False, "old"),
    ]


def test_free_keys_drops_a_pending_resubmission() -> None:
    w = worker(nthreads=1)
    w.handle(compute("x", sid="c1", run_id=1))
    w.handle(m.FreeKeys(("x",), "free"))
    w.handle(compute("x", sid="c2", run_id=2, run_spec=RUN2))
    w.handle(m.FreeKeys(("x",), "free-again"))
    assert w.handle(success("x", sid="old")) == [DeleteData(("x",), "old")]
    assert w.tasks == {}


# ------------------------------------------------- shared empty containers


def test_tasks_get_their_own_containers_only_when_they_need_them() -> None:
    from teamster.core.worker import entities

    w = worker()
    w.handle(compute("y", ("x", (P,), 8), sid="c1"))
    y, x = w.tasks["y"], w.tasks["x"]
    # (The shared empties: identity, not equality.)
    assert y.resources is entities.NO_RESOURCES and y.who_has is entities.NO_PEERS
    assert y.dependents is entities.NO_TASKS and x.dependencies is entities.NO_TASKS
    assert list(y.dependencies) == [x] and list(x.dependents) == [y] and x.who_has == [P]
    assert not (entities.NO_TASKS or entities.NO_PEERS or entities.NO_RESOURCES)


def test_validation_catches_a_write_to_a_shared_empty_container() -> None:
    from teamster.core.story import InvariantError
    from teamster.core.worker import entities

    w = worker()
    w.handle(compute("x", sid="c1"))
    entities.NO_PEERS.append(P)
    try:
        with pytest.raises(InvariantError, match="shared empty"):
            w.validate()
    finally:
        entities.NO_PEERS.clear()
