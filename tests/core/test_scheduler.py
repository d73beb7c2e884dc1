"""SchedulerState, one exchange at a time: exact instruction lists.

Each test builds a validating ``SchedulerState`` (invariants are checked after
every event), feeds wire events, and asserts the exact list of instructions
that comes back, so a change in what the scheduler says, to whom, or in which
order, is a visible diff here.

Priorities in expected ComputeTasks are the scheduler's own:
``(-user_priority, graph generation, *rest of the client's priority)``.
"""

from __future__ import annotations

import pytest

from teamster.core import messages as m
from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.instructions import SendToClient
from teamster.core.scheduler.placement import UNKNOWN_DURATION
from teamster.core.story import InvalidTransition

from .builders import (
    A,
    B,
    C,
    D,
    cancelled,
    compute,
    current_run,
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

# ----------------------------------------------------------------- basics


def test_single_task_is_assigned_and_reported_to_the_client() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(finished(s, A, "x", nbytes=100, type_name="float", sid="f1")) == [
        in_memory("c", "x", (A,), "f1", nbytes=100, type_name="float"),
    ]
    assert states(s, "x") == {"x": "memory"}
    s.validate()


def test_chain_dependent_is_assigned_only_after_its_input_with_who_has() -> None:
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    out = s.handle(finished(s, A, "x", nbytes=123, sid="f-x"))
    assert out == [compute(A, "y", (0, 1, 0), "f-x", who_has=(("x", (A,), 123),))]
    # y finished: the client hears about y, and x (wanted by nobody now) is freed.
    assert s.handle(finished(s, A, "y", sid="f-y")) == [
        in_memory("c", "y", (A,), "f-y"),
        free(A, "f-y", "x"),
    ]
    # x's record stays (released) as lineage: y could need recomputing.
    assert states(s, "x", "y") == {"x": "released", "y": "memory"}


def test_intermediate_is_freed_only_when_its_last_dependent_finished() -> None:
    s = scheduler(register_worker(A, nthreads=2))
    out = s.handle(graph("c", spec("x"), spec("y", "x"), spec("z", "x"), wanted=("y", "z"),
                         sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    out = s.handle(finished(s, A, "x", sid="f-x"))
    who_has = (("x", (A,), 8),)
    assert out == [
        compute(A, "y", (0, 1, 0), "f-x", who_has=who_has),
        compute(A, "z", (0, 1, 0), "f-x", who_has=who_has),
    ]
    assert s.handle(finished(s, A, "y", sid="f-y")) == [in_memory("c", "y", (A,), "f-y")]
    assert states(s, "x") == {"x": "memory"}  # z still reads it
    assert s.handle(finished(s, A, "z", sid="f-z")) == [
        in_memory("c", "z", (A,), "f-z"),
        free(A, "f-z", "x"),
    ]
    assert states(s, "x") == {"x": "released"}


def test_wanted_intermediate_is_kept_after_its_dependents_finish() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f-x"))
    assert s.handle(finished(s, A, "y", sid="f-y")) == [in_memory("c", "y", (A,), "f-y")]
    assert states(s, "x", "y") == {"x": "memory", "y": "memory"}


def test_key_already_in_memory_is_reported_at_once_to_a_new_client() -> None:
    s = scheduler(register_worker(A), clients=("c", "d"))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f-x"))
    # Another client submits the same (content-addressed) key.
    assert s.handle(graph("d", spec("x"), sid="g2")) == [in_memory("d", "x", (A,), "g2")]
    # Both clients want it; one releasing it keeps it for the other.
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == []
    assert s.handle(m.ReleaseKeys("d", ("x",), "rel2")) == [free(A, "rel2", "x")]


def test_two_clients_wanting_one_key_both_hear_once() -> None:
    s = scheduler(register_worker(A), clients=("c", "d"))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(graph("d", spec("x"), sid="g2")) == []
    assert s.handle(finished(s, A, "x", sid="f")) == [
        in_memory("c", "x", (A,), "f"),
        in_memory("d", "x", (A,), "f"),
    ]


# ------------------------------------------------------------ late binding


def test_unknown_prefix_gets_one_task_per_thread_then_deep_prefetch_for_tiny_tasks() -> None:
    s = scheduler(register_worker(A, nthreads=1))
    tasks = [spec(f"inc-{i}", priority=(0, i)) for i in range(10)]
    # Nobody has measured "inc" yet: one task per thread, the highest priority first.
    assert s.handle(graph("c", *tasks, sid="g1")) == [compute(A, "inc-0", (0, 1, 0), "g1")]
    assert s.counts() == {"processing": 1, "queued": 9}
    # It ran in 100 microseconds: a round trip is worth many such tasks, so the
    # worker gets a deep queue, in priority order.
    assert s.handle(finished(s, A, "inc-0", duration=1e-4, sid="f0")) == [
        in_memory("c", "inc-0", (A,), "f0"),
        *[compute(A, f"inc-{i}", (0, 1, i), "f0") for i in range(1, 10)],
    ]
    assert s.counts() == {"memory": 1, "processing": 9}


def test_long_tasks_get_no_deep_queue() -> None:
    s = scheduler(register_worker(A, nthreads=2))
    tasks = [spec(f"slow-{i}", priority=(0, i)) for i in range(6)]
    assert s.handle(graph("c", *tasks, sid="g1")) == [
        compute(A, "slow-0", (0, 1, 0), "g1"),
        compute(A, "slow-1", (0, 1, 1), "g1"),
    ]
    # A measured 2-second task: one more per finished one, nothing queued ahead.
    assert s.handle(finished(s, A, "slow-0", duration=2.0, sid="f0")) == [
        in_memory("c", "slow-0", (A,), "f0"),
        compute(A, "slow-2", (0, 1, 2), "f0"),
    ]
    assert s.counts() == {"memory": 1, "processing": 2, "queued": 3}


def test_a_200ms_task_gets_nothing_queued_behind_it_unless_it_reads_a_large_input() -> None:
    s = scheduler(register_worker(A, nthreads=1))
    s.handle(graph("c", spec("slow-0"), sid="g0"))
    s.handle(finished(s, A, "slow-0", duration=0.2, sid="f0"))
    # The round trip a queued task would hide is 5% of a 200 ms run, and it
    # would wait the whole run while other workers start later tasks: none.
    out = s.handle(graph("c", *[spec(f"slow-{i}", priority=(0, i)) for i in (1, 2, 3)], sid="g1"))
    assert out == [compute(A, "slow-1", (0, 2, 1), "g1")]
    assert s.counts() == {"memory": 1, "processing": 1, "queued": 2}
    # 50 ms tasks: one queued behind the running one hides the round trip.
    s = scheduler(register_worker(A, nthreads=1))
    s.handle(graph("c", spec("mid-0"), sid="g0"))
    s.handle(finished(s, A, "mid-0", duration=0.05, sid="f0"))
    out = s.handle(graph("c", *[spec(f"mid-{i}", priority=(0, i)) for i in (1, 2, 3)], sid="g1"))
    assert out == [compute(A, "mid-1", (0, 2, 1), "g1"), compute(A, "mid-2", (0, 2, 2), "g1")]


def test_a_200ms_reader_of_a_large_input_gets_one_queued_behind_it() -> None:
    # A queued reader fetches its input while the running one runs: that
    # hides a transfer, not just a round trip.
    s = scheduler(register_worker(A, nthreads=1))
    s.handle(m.ScatteredData("c", (("big", (A,), 50_000_000),), "sc"))
    s.handle(graph("c", spec("read-0", "big"), wanted=("read-0",), sid="g0"))
    s.handle(finished(s, A, "read-0", duration=0.2, sid="f0"))
    keys = ("read-1", "read-2", "read-3")
    out = s.handle(graph("c", *[spec(k, "big", priority=(0, i)) for i, k in enumerate(keys)],
                         wanted=keys, sid="g1"))
    assert [(o.worker, o.msg.key) for o in out] == [(A, "read-1"), (A, "read-2")]
    assert s.workers[A].n_large_readers == 2
    assert s.tasks["read-1"].reads_large and s.tasks["read-2"].reads_large
    # Its readers done, the worker is an ordinary one again.
    s.handle(finished(s, A, "read-1", duration=0.2, sid="f1"))
    s.handle(finished(s, A, "read-2", duration=0.2, sid="f2"))
    s.handle(finished(s, A, "read-3", duration=0.2, sid="f3"))
    assert s.workers[A].n_large_readers == 0
    assert not any(s.tasks[k].reads_large for k in keys)


def test_occupancy_tracks_estimates_and_queue_drains_to_a_new_worker() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", *[spec(f"t-{i}", priority=(0, i)) for i in range(3)], sid="g1"))
    assert s.workers[A].occupancy == UNKNOWN_DURATION
    # A worker that joins takes queued work at once, highest priority first.
    assert s.handle(register_worker(B, nthreads=2, sid="rb")) == [
        compute(B, "t-1", (0, 1, 1), "rb"),
        compute(B, "t-2", (0, 1, 2), "rb"),
    ]
    assert s.counts() == {"processing": 3}


# ---------------------------------------------------------------- priority


def test_earlier_submitted_graph_runs_first() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("a-0"), spec("a-1"), sid="g1")) == [
        compute(A, "a-0", (0, 1, 0), "g1"),
    ]
    assert s.handle(graph("c", spec("b-0"), sid="g2")) == []
    # Queue order: the rest of graph 1, then graph 2.
    assert s.handle(finished(s, A, "a-0", duration=5.0, sid="f1")) == [
        in_memory("c", "a-0", (A,), "f1"),
        compute(A, "a-1", (0, 1, 0), "f1"),
    ]
    assert s.handle(finished(s, A, "a-1", duration=5.0, sid="f2")) == [
        in_memory("c", "a-1", (A,), "f2"),
        compute(A, "b-0", (0, 2, 0), "f2"),
    ]


def test_higher_user_priority_runs_first_even_if_submitted_later() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("blocker"), sid="g0"))
    s.handle(graph("c", spec("low-0", priority=(0,)), spec("low-1", priority=(-1,)), sid="g1"))
    s.handle(graph("c", spec("high-0", priority=(10,)), sid="g2"))
    s.handle(graph("c", spec("mid-0", priority=(1,)), sid="g3"))
    order = []
    for done in ["blocker", "high-0", "mid-0", "low-0"]:
        out = s.handle(finished(s, A, done, duration=5.0, sid=f"f-{done}"))
        order += [i.msg.key for i in out if isinstance(i.msg, m.ComputeTask)]
    assert order == ["high-0", "mid-0", "low-0", "low-1"]
    assert s.tasks["high-0"].priority == (-10, 3, 0)
    assert s.tasks["low-1"].priority == (1, 2, 0)


def test_fan_out_dependents_start_in_priority_order() -> None:
    s = scheduler(register_worker(A))
    tasks = [spec("x", priority=(0, 0))] + [
        spec(f"y-{i}", "x", priority=(0, i + 1)) for i in range(4)
    ]
    s.handle(graph("c", *tasks, wanted=tuple(f"y-{i}" for i in range(4)), sid="g1"))
    who_has = (("x", (A,), 8),)
    # "y" is an unknown prefix: one goes out, and it is the highest-priority one.
    assert s.handle(finished(s, A, "x", sid="f-x")) == [
        compute(A, "y-0", (0, 1, 1), "f-x", who_has=who_has),
    ]


def test_inputs_of_a_wanted_task_start_in_priority_order() -> None:
    s = scheduler(register_worker(A))
    # Only y is wanted: x and w become needed through it, in the order y lists them.
    out = s.handle(graph("c", spec("x", priority=(0, 0)), spec("w", priority=(0, 1)),
                         spec("y", "x", "w", priority=(0, 2)), wanted=("y",), sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]


# ------------------------------------------------------------ restrictions


def test_worker_restriction_sends_task_only_to_that_worker() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    out = s.handle(graph("c", spec("x", workers=(B,)), spec("y", workers=(B,)), sid="g1"))
    # Restricted tasks bypass the shared queue: both go to B even though
    # B has a single thread and A is idle.
    assert out == [compute(B, "x", (0, 1, 0), "g1"), compute(B, "y", (0, 1, 0), "g1")]


def test_worker_restriction_by_name() -> None:
    s = scheduler(register_worker(A, name="alice"), register_worker(B, name="bob"))
    assert s.handle(graph("c", spec("x", workers=("bob",)), sid="g1")) == [
        compute(B, "x", (0, 1, 0), "g1"),
    ]


def test_restriction_to_absent_worker_waits_in_no_worker_until_it_joins() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x", workers=(B,)), sid="g1")) == []
    assert states(s, "x") == {"x": "no-worker"}
    assert list(s.unrunnable) == [s.tasks["x"]]
    assert s.handle(register_worker(B, sid="rb")) == [compute(B, "x", (0, 1, 0), "rb")]
    assert states(s, "x") == {"x": "processing"}
    assert not s.unrunnable


def test_loose_restriction_prefers_the_named_worker_but_falls_back() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(
        graph("c", spec("x", workers=(B,), allow_other_workers=True), sid="g1")
    ) == [compute(B, "x", (0, 1, 0), "g1")]
    assert s.handle(
        graph("c", spec("y", workers=(D,), allow_other_workers=True), sid="g2")
    ) == [compute(A, "y", (0, 2, 0), "g2")]


def test_resource_restriction_only_goes_to_a_worker_with_the_resource() -> None:
    s = scheduler(register_worker(A), register_worker(B, resources={"GPU": 2.0}))
    out = s.handle(graph("c", spec("x", resources={"GPU": 1}), sid="g1"))
    assert out == [compute(B, "x", (0, 1, 0), "g1", resources=(("GPU", 1),))]


def test_resource_restriction_without_such_worker_waits_for_one() -> None:
    s = scheduler(register_worker(A, resources={"GPU": 0.5}))
    assert s.handle(graph("c", spec("x", resources={"GPU": 1}), sid="g1")) == []
    assert states(s, "x") == {"x": "no-worker"}
    assert s.handle(register_worker(B, resources={"GPU": 1.0}, sid="rb")) == [
        compute(B, "x", (0, 1, 0), "rb", resources=(("GPU", 1),)),
    ]


def test_restricted_task_whose_worker_leaves_goes_back_to_no_worker() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x", workers=(B,)), sid="g1"))
    assert s.handle(m.RemoveWorker(B, "lost", 1.0, "rm")) == []
    assert states(s, "x") == {"x": "no-worker"}
    assert s.handle(register_worker(B, sid="rb2")) == [
        compute(B, "x", (0, 1, 0), "rb2", announce=True),
    ]


# ----------------------------------------------------------- client release


def test_releasing_a_key_in_memory_frees_it_on_its_worker() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [free(A, "rel", "x")]
    assert s.tasks == {}
    assert s.workers[A].has_what == set() and s.workers[A].nbytes == 0


def test_releasing_a_processing_key_frees_it_and_late_result_is_refused() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [free(A, "rel", "x")]
    assert s.tasks == {}
    # The result crossed the FreeKeys on the wire: the worker is told again to drop it.
    assert s.handle(finished(s, A, "x", sid="late")) == [free(A, "late", "x")]


def test_task_finished_for_a_key_placed_elsewhere_is_refused() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    assert s.handle(finished(s, B, "x", sid="wrong")) == [free(B, "wrong", "x", run_id=1)]
    assert states(s, "x") == {"x": "processing"}


def test_remove_client_releases_everything_it_wanted() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    assert s.handle(m.RemoveClient("c", 2.0, "bye")) == [
        free(A, "bye", "y"),
        free(A, "bye", "x"),
    ]
    assert s.tasks == {} and s.clients == {}


def test_releasing_a_dependent_releases_its_pending_inputs() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1"))
    assert s.handle(m.ReleaseKeys("c", ("y",), "rel")) == [free(A, "rel", "x")]
    assert s.tasks == {}


def test_release_by_unknown_client_or_of_unknown_key_is_harmless() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(m.ReleaseKeys("nobody", ("x",), "r1")) == []
    assert s.handle(m.ReleaseKeys("c", ("x",), "r2")) == []
    assert s.handle(m.CancelKeys("nobody", ("x",), "r3")) == []


# ------------------------------------------------------------------ cancel


def test_cancel_notifies_the_client_and_cancels_its_dependent_chain() -> None:
    s = scheduler(register_worker(A), clients=("c", "d"))
    s.handle(graph("c", spec("x"), spec("y", "x"), spec("z", "y"), wanted=("x", "z"),
                   sid="g1"))
    # x and everything of c's downstream of it (z; y is not wanted) is
    # cancelled; nothing is left to run, so x's worker drops it.
    assert s.handle(m.CancelKeys("c", ("x",), "cancel")) == [
        cancelled("c", "x", "cancel"),
        cancelled("c", "z", "cancel"),
        free(A, "cancel", "x"),
    ]
    assert s.tasks == {}


def test_cancel_leaves_keys_another_client_wants() -> None:
    s = scheduler(register_worker(A), clients=("c", "d"))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(graph("d", spec("x"), spec("y", "x"), wanted=("y",), sid="g2"))
    assert s.handle(m.CancelKeys("c", ("x",), "cancel")) == [cancelled("c", "x", "cancel")]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert s.handle(finished(s, A, "x", sid="f")) == [
        compute(A, "y", (0, 2, 0), "f", who_has=(("x", (A,), 8),)),
    ]


# ----------------------------------------------------------------- scatter


def test_scattered_data_is_reported_and_used_by_a_dependent() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(m.ScatteredData("c", (("data", (B,), 1000),), "sc")) == [
        in_memory("c", "data", (B,), "sc", nbytes=1000, type_name=""),
    ]
    out = s.handle(graph("c", spec("f", "data"), wanted=("f",), sid="g1"))
    # The holder of the input is the cheapest place to run.
    assert out == [compute(B, "f", (0, 1, 0), "g1", who_has=(("data", (B,), 1000),))]
    assert s.handle(finished(s, B, "f", sid="ff")) == [in_memory("c", "f", (B,), "ff")]
    # The client still holds "data": it stays.
    assert states(s, "data") == {"data": "memory"}


def test_scatter_to_several_workers_and_release_frees_all() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(m.ScatteredData("c", (("d", (A, B), 10),), "sc")) == [
        in_memory("c", "d", (A, B), "sc", nbytes=10, type_name=""),
    ]
    assert s.handle(m.ReleaseKeys("c", ("d",), "rel")) == [
        free(A, "rel", "d"), free(B, "rel", "d"),
    ]


def test_scatter_to_departed_workers_errs() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(m.ScatteredData("c", (("d", (B,), 10),), "sc")) == [
        key_erred("c", "d", "sc", text="Scattered 'd' to workers that have since left",
                  exception=None, traceback=None),
    ]


# ------------------------------------------------------------- replicas


def test_add_keys_registers_replicas_and_release_frees_every_holder() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", nbytes=40, sid="f"))
    assert s.handle(m.AddKeys(B, ("x",), "", 0, 0.0, "add")) == []
    assert [w.address for w in s.tasks["x"].who_has] == [A, B]
    assert s.workers[B].nbytes == 40
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [
        free(A, "rel", "x"), free(B, "rel", "x"),
    ]


def test_add_keys_for_unknown_keys_is_answered_with_free_keys() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    # Only the copy it reported: a value scattered there since must survive.
    assert s.handle(m.AddKeys(B, ("x", "gone"), "", 0, 0.0, "add")) == [
        free(B, "add", "gone", run_id=m.FETCHED_COPY),
    ]


def test_copies_reported_with_a_result_are_registered_and_counted_as_moved() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), spec("z"), sid="g1"))
    assert {k: ts.processing_on.address for k, ts in s.tasks.items()
            if ts.processing_on} == {"x": A, "z": B}
    s.handle(finished(s, A, "x", nbytes=40, sid="fx"))
    # B copied x (and a key released since) before z finished: one event says both.
    assert s.handle(finished(s, B, "z", sid="fz", transfers=((("x", "gone"), 50),))) == [
        free(B, "fz", "gone", run_id=m.FETCHED_COPY), in_memory("c", "z", (B,), "fz"),
    ]
    assert [w.address for w in s.tasks["x"].who_has] == [A, B]
    assert s.workers[B].nbytes == 40 + 8
    assert s.report.bytes_moved == 50 and s.report.transfers == 1
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [
        free(A, "rel", "x"), free(B, "rel", "x"),
    ]


def test_a_copy_of_a_key_assigned_to_the_same_worker_is_not_freed() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), spec("y", "x", workers=(B,)), wanted=("y",), sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    assert s.tasks["y"].processing_on is s.workers[B]  # B fetches x from A for y
    # A dies: x is recomputed, on B, while B's report of its copy is on the way.
    assert s.handle(m.RemoveWorker(A, "lost", 1.0, "rm")) == [
        free(B, "rm", "y"), compute(B, "x", (0, 1, 0), "rm"),
    ]
    # Freeing that copy deleted the value B then announced with its
    # TaskFinished for x (a worker answers a ComputeTask for a key it holds
    # at once).
    assert s.handle(m.AddKeys(B, ("x",), "", 0, 0.0, "add")) == []
    assert s.handle(finished(s, B, "x", sid="fx2")) == [
        compute(B, "y", (0, 1, 0), "fx2", who_has=(("x", (B,), 8),)),
    ]


def test_missing_data_drops_the_replica_and_recomputes_if_it_was_the_last() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x", workers=(A,)), spec("y", "x", workers=(B,)), wanted=("y",),
                   sid="g1"))
    assert s.handle(finished(s, A, "x", sid="fx")) == [
        compute(B, "y", (0, 1, 0), "fx", who_has=(("x", (A,), 8),)),
    ]
    # B could not get x from A: A lost it. y is taken back, x recomputed
    # (once: y's release must not cancel the recomputation).
    assert s.handle(m.MissingData(B, "x", A, "miss")) == [
        free(B, "miss", "y"),
        compute(A, "x", (0, 1, 0), "miss"),
    ]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    # B's RescheduleTask for y crossed the FreeKeys: y is no longer B's.
    assert s.handle(m.RescheduleTask(B, "y", current_run(s, "y"), "resched")) == []
    assert s.handle(finished(s, A, "x", sid="fx2")) == [
        compute(B, "y", (0, 1, 0), "fx2", who_has=(("x", (A,), 8),)),
    ]


def test_missing_data_with_another_replica_keeps_the_key() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    s.handle(m.AddKeys(B, ("x",), "", 0, 0.0, "add"))
    assert s.handle(m.MissingData(C, "x", A, "miss")) == []
    assert [w.address for w in s.tasks["x"].who_has] == [B]
    # Reports about unknown keys or holders are ignored.
    assert s.handle(m.MissingData(C, "x", D, "miss2")) == []
    assert s.handle(m.MissingData(C, "nope", A, "miss3")) == []


def test_reschedule_task_places_it_again() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x"), sid="g1"))
    assert s.handle(m.RescheduleTask(A, "x", current_run(s, "x"), "give-up")) == [
        free(A, "give-up", "x"),
        compute(B, "x", (0, 1, 0), "give-up"),
    ]


# ------------------------------------------------------------------- story


def test_story_lists_the_transitions_of_a_key() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    s.handle(m.ReleaseKeys("c", ("x",), "rel"))
    assert [(e.start, e.finish, e.stimulus_id) for e in s.story("x")] == [
        ("released", "waiting", "g1"),
        ("waiting", "processing", "g1"),
        ("processing", "memory", "f"),
        ("memory", "released", "rel"),
        ("released", "forgotten", "rel"),
    ]


def test_unknown_transition_raises_with_the_story() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1"))
    with pytest.raises(InvalidTransition) as info:
        s.transition(s.tasks["y"], "memory", "bogus")
    assert info.value.key == "y"
    assert [(e.start, e.finish) for e in info.value.story] == [("released", "waiting")]
    assert "'waiting' -> 'memory'" in str(info.value)
    assert "released -> waiting  (g1)" in str(info.value)


def test_unknown_event_type_raises() -> None:
    s = SchedulerState(validate=True)
    with pytest.raises(TypeError, match="cannot handle"):
        s.handle(m.FreeKeys(("x",), "wrong-direction"))


def test_scheduler_state_is_deterministic() -> None:
    """The same events give the same instructions (no hash-order dependence)."""

    def run() -> list[object]:
        s = scheduler(register_worker(A, nthreads=2), register_worker(B), register_worker(C))
        out: list[object] = []
        out += s.handle(graph("c", *[spec(f"a-{i}") for i in range(5)],
                              *[spec(f"b-{i}", f"a-{i}", f"a-{(i + 1) % 5}") for i in range(5)],
                              wanted=tuple(f"b-{i}" for i in range(5)), sid="g1"))
        for _ in range(20):
            processing = [(ts.key, ts.processing_on.address) for ts in s.tasks.values()
                          if ts.processing_on is not None]
            if not processing:
                break
            key, addr = processing[0]
            out += s.handle(finished(s, addr, key, duration=0.01, sid=f"f-{key}"))
        return out

    first = run()
    assert first == run()
    assert any(isinstance(i, SendToClient) for i in first)


def test_alias_task_without_run_spec_runs_after_its_dependency() -> None:
    """A TaskSpec with run_spec None aliases its single dependency's value
    (the worker shell copies it); it must run, not be mistaken for lost scattered data."""
    s = scheduler(register_worker(A))
    out = s.handle(graph("c", spec("x"), spec("y", "x", run_spec=None), wanted=("y",), sid="g1"))
    assert out == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(finished(s, A, "x", sid="fx")) == [
        compute(A, "y", (0, 1, 0), "fx", who_has=(("x", (A,), 8),), run_spec=None),
    ]
    assert s.handle(finished(s, A, "y", sid="fy")) == [
        in_memory("c", "y", (A,), "fy"),
        free(A, "fy", "x"),
    ]


def test_scatter_of_a_key_already_in_memory_adds_a_replica_and_keeps_its_size() -> None:
    s = scheduler(register_worker(A), register_worker(B), clients=("c", "d"))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", nbytes=8, sid="f"))
    # Another client scatters the same (content-addressed) key; its own size
    # estimate differs from the worker's measurement.
    assert s.handle(m.ScatteredData("d", (("x", (B,), 100),), "sc")) == [
        in_memory("d", "x", (A,), "sc"),  # told before the new replica is added
    ]
    assert s.tasks["x"].nbytes == 8
    assert (s.workers[A].nbytes, s.workers[B].nbytes) == (8, 8)


def test_stale_result_for_a_key_recomputed_elsewhere_is_not_counted_as_a_replica() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1")]
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [free(A, "rel", "x")]
    # Submitted again before A ran the FreeKeys; this time B runs it.
    assert s.handle(graph("c", spec("x"), sid="g2")) == [compute(B, "x", (0, 2, 0), "g2")]
    s.handle(finished(s, B, "x", sid="f-b"))
    # A's result of the first run arrives: the FreeKeys on its way to A will
    # delete that copy, so it must not be counted; A is told (again) to drop it.
    assert s.handle(finished(s, A, "x", run_id=1, sid="stale")) == [
        free(A, "stale", "x", run_id=1),
    ]
    assert [w.address for w in s.tasks["x"].who_has] == [B]
    # A duplicate report from a counted holder changes nothing.
    assert s.handle(finished(s, B, "x", sid="dup")) == []


def test_known_released_key_wanted_again_is_computed_again() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x"), wanted=("y",), sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    s.handle(finished(s, A, "y", sid="fy"))
    assert states(s, "x", "y") == {"x": "released", "y": "memory"}  # x kept as lineage
    # The client now asks for x itself (same key: the same computation).
    assert s.handle(graph("c", spec("x"), wanted=("x",), sid="g2")) == [
        compute(A, "x", (0, 1, 0), "g2"),
    ]
    assert s.handle(finished(s, A, "x", sid="fx2")) == [in_memory("c", "x", (A,), "fx2")]


def test_restarted_worker_does_not_receive_a_task_whose_input_it_lost() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y", "x", resources={"GPU": 1}), wanted=("y",),
                   sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    assert states(s, "x", "y") == {"x": "memory", "y": "no-worker"}
    # A restarts with a GPU: x (only on the old A) is lost, so y, now
    # runnable on A, must wait for x's recomputation instead of starting.
    assert s.handle(register_worker(A, resources={"GPU": 1.0}, sid="restart")) == [
        compute(A, "x", (0, 1, 0), "restart"),
    ]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert s.handle(finished(s, A, "x", sid="fx2")) == [
        compute(A, "y", (0, 1, 0), "fx2", who_has=(("x", (A,), 8),), resources=(("GPU", 1),)),
    ]


# -------------------------------------------------------------- validation


def test_validation_catches_a_replica_index_mismatch() -> None:
    from teamster.core.story import InvariantError

    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(finished(s, A, "x", sid="f"))
    s.workers[A].has_what.remove(s.tasks["x"])
    with pytest.raises(InvariantError, match="who_has/has_what disagree"):
        s.validate()


def test_validation_catches_queued_work_next_to_an_idle_worker() -> None:
    from teamster.core.story import InvariantError

    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), sid="g1"))
    assert states(s, "y") == {"y": "queued"}
    # Give A room without telling the scheduler to refill it.
    s.placement.backlog_target = 10.0
    s.idle.add(s.workers[A])
    with pytest.raises(InvariantError, match="queued while workers are idle"):
        s.validate()


def test_validation_catches_a_result_whose_key_is_not_its_runs() -> None:
    """TaskFinished finds its task by run id; the key must be that run's."""
    from teamster.core.story import InvariantError

    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), spec("y"), sid="g1"))
    wrong = m.TaskFinished(A, "y", 8, "int", 1.0, 1.0, current_run(s, "x"), (), "f")
    with pytest.raises(InvariantError, match="reported run 1 as 'y'; that run is 'x'"):
        s.handle(wrong)


def test_validation_catches_occupancy_drift() -> None:
    from teamster.core.story import InvariantError

    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.workers[A].occupancy += 1.0
    with pytest.raises(InvariantError, match="occupancy"):
        s.validate()


def test_unwanted_task_failed_at_submission_is_not_kept() -> None:
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x"), spec("y", "gone"), wanted=("x",), sid="g1")) == [
        compute(A, "x", (0, 1, 0), "g1"),
    ]
    assert list(s.tasks) == ["x"]


# ------------------------------------------------- run_id: stale reports


def test_result_of_an_earlier_run_crossing_a_reassignment_is_ignored() -> None:
    """ComputeTask, FreeKeys, ComputeTask to one worker while the first run's
    TaskFinished is on the wire: that result must not be taken for the second
    run's (the worker deletes it on the FreeKeys; the replica would be a ghost)."""
    s = scheduler(register_worker(A))
    assert s.handle(graph("c", spec("x"), sid="g1")) == [compute(A, "x", (0, 1, 0), "g1", run_id=1)]
    assert s.handle(m.ReleaseKeys("c", ("x",), "rel")) == [free(A, "rel", "x")]
    assert s.handle(graph("c", spec("x"), sid="g2")) == [compute(A, "x", (0, 2, 0), "g2", run_id=2)]
    # Neither accepted nor answered with a FreeKeys (that would cancel run 2).
    assert s.handle(finished(s, A, "x", run_id=1, sid="stale")) == []
    assert states(s, "x") == {"x": "processing"}
    assert s.workers[A].has_what == set()
    assert s.handle(finished(s, A, "x", run_id=2, sid="f2")) == [in_memory("c", "x", (A,), "f2")]


def test_failure_or_give_up_of_an_earlier_run_is_ignored() -> None:
    s = scheduler(register_worker(A))
    s.handle(graph("c", spec("x"), sid="g1"))
    s.handle(m.ReleaseKeys("c", ("x",), "rel"))
    s.handle(graph("c", spec("x"), sid="g2"))
    assert s.handle(erred(s, A, "x", run_id=1, sid="stale-err")) == []
    assert s.handle(m.RescheduleTask(A, "x", 1, "stale-resched")) == []
    assert states(s, "x") == {"x": "processing"}
    assert s.tasks["x"].run_id == 2


def test_stale_result_for_a_key_now_running_elsewhere_is_freed() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("x", workers=(A,)), sid="g1"))
    s.handle(m.ReleaseKeys("c", ("x",), "rel"))
    assert s.handle(graph("c", spec("x", workers=(B,)), sid="g2")) == [
        compute(B, "x", (0, 2, 0), "g2", run_id=2),
    ]
    assert s.handle(finished(s, A, "x", run_id=1, sid="stale")) == [
        free(A, "stale", "x", run_id=1),
    ]
    assert states(s, "x") == {"x": "processing"}


# ------------------------------------------------------- clients reconnecting


def test_known_client_registering_again_hears_its_finished_keys_again() -> None:
    """Reports sent while a client's connection was down are lost with it."""
    s = scheduler(register_worker(A, nthreads=3))
    s.handle(graph("c", spec("x"), spec("bad"), spec("y", "x"), wanted=("x", "bad", "y"),
                   sid="g1"))
    s.handle(finished(s, A, "x", sid="fx"))
    s.handle(erred(s, A, "bad", sid="eb"))
    assert states(s, "x", "bad", "y") == {"x": "memory", "bad": "erred", "y": "processing"}
    assert s.handle(m.RegisterClient("c", 5.0, "back")) == [
        in_memory("c", "x", (A,), "back"),
        key_erred("c", "bad", "back"),
    ]
    # A new client hears nothing: it wants nothing yet.
    assert s.handle(m.RegisterClient("d", 5.0, "new")) == []
