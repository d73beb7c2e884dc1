"""Work stealing, one exchange at a time: exact instructions.

The scenario most tests share: two 1-thread workers, a prefix measured at
100 ms (long enough that moving a task pays, short enough that each worker
gets one task queued behind its running one), and four tasks: B runs
slow-1 then slow-3, A runs slow-2 and has slow-4 queued.
"""

from __future__ import annotations

from teamster.core import messages as m
from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.events import Tick
from teamster.core.scheduler.instructions import SendToWorker

from .builders import (
    A,
    B,
    C,
    compute,
    finished,
    graph,
    in_memory,
    register_worker,
    scheduler,
    spec,
    states,
)


def steal(worker: str, key: m.Key, steal_id: int, sid: str) -> SendToWorker:
    return SendToWorker(worker, m.StealRequest(key, steal_id, sid))


def answer(worker: str, key: m.Key, steal_id: int, stolen: bool, sid: str = "answer",
           state: str = "ready") -> m.StealResponse:
    return m.StealResponse(worker, key, steal_id, stolen, state, sid)


def two_workers_with_a_queue(*extra: m.RegisterWorker) -> SchedulerState:
    s = scheduler(register_worker(A), register_worker(B), *extra)
    s.handle(graph("c", spec("slow-0"), sid="g0"))
    s.handle(finished(s, A, "slow-0", duration=0.1, sid="f0"))
    s.handle(graph("c", *[spec(f"slow-{i}", priority=(0, i)) for i in range(1, 5)], sid="g1"))
    assert [s.tasks[f"slow-{i}"].processing_on.address for i in range(1, 5)] == [B, A, B, A]
    return s


def test_a_worker_that_runs_dry_steals_the_last_queued_task_of_the_busiest() -> None:
    s = two_workers_with_a_queue()
    assert s.handle(finished(s, B, "slow-1", duration=0.1, sid="f1")) == [
        in_memory("c", "slow-1", (B,), "f1"),
    ]
    # B is dry and nothing waits in the scheduler: ask A for its queued task.
    assert s.handle(finished(s, B, "slow-3", duration=0.1, sid="f3")) == [
        in_memory("c", "slow-3", (B,), "f3"),
        steal(A, "slow-4", 1, "f3"),
    ]
    # Until A answers, the task is A's.
    assert s.tasks["slow-4"].processing_on is s.workers[A]
    assert s.handle(answer(A, "slow-4", 1, True, sid="yes")) == [
        compute(B, "slow-4", (0, 2, 4), "yes"),
    ]
    assert s.tasks["slow-4"].processing_on is s.workers[B]
    assert s.story("slow-4")[-1].finish == f"stolen:{A}->{B}"
    assert (s.stealing.n_requested, s.stealing.n_moved) == (1, 1)


def test_a_refused_steal_leaves_the_task_and_is_not_asked_again() -> None:
    s = two_workers_with_a_queue()
    s.handle(finished(s, B, "slow-1", duration=0.1, sid="f1"))
    s.handle(finished(s, B, "slow-3", duration=0.1, sid="f3"))
    # A had started it: it stays there. B, still dry, asks for the task
    # before it (the scheduler cannot know which of A's tasks runs).
    assert s.handle(answer(A, "slow-4", 1, False, state="executing", sid="no")) == [
        steal(A, "slow-2", 2, "no"),
    ]
    assert s.handle(answer(A, "slow-2", 2, False, state="memory", sid="no2")) == []
    assert s.tasks["slow-4"].processing_on is s.workers[A]
    # Each task is asked for once: the periodic pass finds nothing more.
    assert s.handle(Tick(1.0, "tick")) == []
    assert (s.stealing.n_requested, s.stealing.n_refused) == (2, 2)


def test_an_answer_after_the_task_finished_is_ignored() -> None:
    s = two_workers_with_a_queue()
    s.handle(finished(s, B, "slow-1", duration=0.1, sid="f1"))
    s.handle(finished(s, B, "slow-3", duration=0.1, sid="f3"))
    # The result crossed the request on the wire.
    assert s.handle(finished(s, A, "slow-4", duration=0.1, sid="f4")) == [
        in_memory("c", "slow-4", (A,), "f4"),
    ]
    assert s.handle(answer(A, "slow-4", 1, False, state="memory")) == []
    assert states(s, "slow-4") == {"slow-4": "memory"}
    assert not s.stealing.pending and s.workers[B].n_incoming == 0


def test_a_task_stolen_for_a_thief_that_left_is_placed_again() -> None:
    s = two_workers_with_a_queue()
    assert s.handle(register_worker(C, sid="rc")) == [steal(B, "slow-3", 1, "rc")]
    s.handle(m.RemoveWorker(C, "gone", 1.0, "bye"))
    # B gave it up, but C is gone: it is placed like any ready task (and B,
    # which has room again, takes it back).
    assert s.handle(answer(B, "slow-3", 1, True, sid="yes")) == [
        compute(B, "slow-3", (0, 2, 3), "yes"),
    ]
    assert [e.finish for e in s.story("slow-3")][-3:] == ["processing", "waiting", "processing"]


def test_no_steal_when_waiting_costs_less_than_moving_a_large_input() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("big", (A,), 10**9),), "sc"))  # 1 GB on A
    s.handle(graph("c", spec("use-0", "big"), wanted=("use-0",), sid="g0"))
    s.handle(finished(s, A, "use-0", duration=0.1, sid="f0"))
    # Reading the input where it lies beats moving a gigabyte (10 s at the
    # assumed 100 MB/s): both tasks go to A, and B, idle, takes neither.
    out = s.handle(graph("c", spec("use-1", "big", priority=(0, 1)),
                         spec("use-2", "big", priority=(0, 2)), wanted=("use-1", "use-2"),
                         sid="g1"))
    assert [(o.worker, o.msg.key) for o in out] == [(A, "use-1"), (A, "use-2")]
    assert s.handle(Tick(1.0, "tick")) == []
    assert not s.stealing.pending


def test_a_small_input_does_not_hold_a_task_back() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("small", (A,), 1000),), "sc"))
    s.handle(graph("c", spec("use-0", "small"), wanted=("use-0",), sid="g0"))
    s.handle(finished(s, A, "use-0", duration=0.1, sid="f0"))
    out = s.handle(graph("c", spec("use-1", "small", priority=(0, 1)),
                         spec("use-2", "small", priority=(0, 2)), wanted=("use-1", "use-2"),
                         sid="g1"))
    assert sorted(o.worker for o in out) == [A, B]


def test_restricted_task_is_not_stolen_by_a_worker_that_may_not_run_it() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("slow-0", workers=(A,)), sid="g0"))
    s.handle(finished(s, A, "slow-0", duration=0.1, sid="f0"))
    s.handle(graph("c", *[spec(f"slow-{i}", workers=(A,), priority=(0, i))
                          for i in range(1, 4)], sid="g1"))
    assert s.handle(Tick(1.0, "tick")) == []
    assert not s.stealing.pending


def test_a_new_worker_steals_queued_work_on_joining() -> None:
    s = two_workers_with_a_queue()
    # One task: a second would start on C only after the first, later than
    # where it is queued now.
    assert s.handle(register_worker(C, sid="rc")) == [steal(B, "slow-3", 1, "rc")]
    assert s.handle(answer(B, "slow-3", 1, True, sid="yes")) == [
        compute(C, "slow-3", (0, 2, 3), "yes"),
    ]


def test_a_worker_blocked_by_an_overdue_task_gives_its_queue_back() -> None:
    s = two_workers_with_a_queue()
    # slow-2 (estimated 100 ms) has run for 3 s on A's only thread: slow-4,
    # queued behind it, is asked back...
    assert s.handle(m.Heartbeat(A, 5.0, (), (("slow-2", 3.0),), "hb")) == [
        steal(A, "slow-4", 1, "hb"),
    ]
    # ... and placed again like any ready task: B, with room, takes it.
    s.handle(finished(s, B, "slow-1", duration=0.1, sid="f1"))
    assert s.handle(answer(A, "slow-4", 1, True, sid="back")) == [
        compute(B, "slow-4", (0, 2, 4), "back"),
    ]


def test_a_task_within_its_estimate_blocks_nothing() -> None:
    s = two_workers_with_a_queue()
    assert s.handle(m.Heartbeat(A, 5.0, (), (("slow-2", 0.15),), "hb")) == []


def test_the_most_backlogged_worker_is_robbed_first() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(graph("c", spec("mid-0"), spec("slow-0"), sid="g0"))
    s.handle(finished(s, A, "mid-0", duration=0.09, sid="f0"))
    s.handle(finished(s, B, "slow-0", duration=0.06, sid="f1"))
    s.handle(graph("c", spec("mid-1", priority=(0, 1)), spec("mid-2", priority=(0, 2)),
                   spec("slow-1", priority=(0, 3)), spec("slow-2", priority=(0, 4)), sid="g1"))
    assert [s.tasks[k].processing_on.address for k in ("mid-1", "slow-1", "mid-2", "slow-2")] \
        == [A, A, B, B]
    # mid-1 has run 150 ms of its 90: A's queue is now the longer one (not
    # yet blocked: that takes twice the estimate).
    assert s.handle(m.Heartbeat(A, 1.0, (), (("mid-1", 0.15),), "hb")) == []
    assert s.workers[A].occupancy > s.workers[B].occupancy
    # A joining worker asks A first, then B (a 60 ms task on C still
    # starts sooner than behind B's running one).
    assert s.handle(register_worker(C, sid="rc")) == [
        steal(A, "slow-1", 1, "rc"),
        steal(B, "slow-2", 2, "rc"),
    ]


def test_a_large_input_read_by_many_is_copied_once_at_a_time_per_holder() -> None:
    """50 MB on A (0.5 s at the assumed 100 MB/s) and twelve 200 ms readers.

    One copy pays for itself (the readers' work spread over the holders is
    far over two transfers), so the first idle worker, C, takes readers at
    once. A second copy would share A's link with C's: it costs two
    transfers, so A queues readers until its queue is longer than that,
    and only then does B start a copy."""
    s = scheduler(register_worker(A), register_worker(B), register_worker(C))
    s.handle(m.ScatteredData("c", (("big", (A,), 50_000_000),), "sc"))
    s.handle(graph("c", spec("read-0", "big"), wanted=("read-0",), sid="g0"))
    s.handle(finished(s, A, "read-0", duration=0.2, sid="f0"))
    keys = tuple(f"read-{i}" for i in range(1, 13))
    out = s.handle(graph("c", *[spec(k, "big", priority=(0, i + 1)) for i, k in enumerate(keys)],
                         wanted=keys, sid="g1"))
    placed = [(o.worker, o.msg.key) for o in out]
    assert placed[:2] == [(A, "read-1"), (C, "read-2")]
    on = {w: [k for ww, k in placed if ww == w] for w in (A, B, C)}
    assert len(on[A]) == 6 and on[B] == ["read-9", "read-10"]
    assert s.tasks["big"].fetching is not None and set(s.tasks["big"].fetching) == {
        s.workers[B], s.workers[C]}
    # C's copy lands: C is a holder, no longer a fetcher.
    assert s.handle(m.AddKeys(C, ("big",), A, 50_000_000, 0.05, "copied")) == []
    assert set(s.tasks["big"].who_has) == {s.workers[A], s.workers[C]}
    assert set(s.tasks["big"].fetching) == {s.workers[B]}


def test_a_freed_holder_takes_the_next_reader_of_its_own_large_input_first() -> None:
    """x (50 MB) on A, y on B, readers of both alternating in the queue.

    When A finishes a reader of x, the head of the queue reads y; A takes the
    next reader of x instead, so neither input is copied."""
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("x", (A,), 50_000_000), ("y", (B,), 50_000_000)), "sc"))
    s.handle(graph("c", spec("read-0", "x"), spec("read-1", "y"),
                   wanted=("read-0", "read-1"), sid="g0"))
    s.handle(finished(s, A, "read-0", duration=0.2, sid="f0"))
    s.handle(finished(s, B, "read-1", duration=0.2, sid="f1"))
    keys = tuple(f"read-{i}" for i in range(2, 10))
    s.handle(graph("c", *[spec(k, "y" if i % 2 == 0 else "x", priority=(0, i))
                          for i, k in enumerate(keys, start=2)], wanted=keys, sid="g1"))
    assert [t.key for t in s.workers[A].processing_tasks()] == ["read-3", "read-5"]
    assert states(s, "read-6", "read-7") == {"read-6": "queued", "read-7": "queued"}
    assert s.handle(finished(s, A, "read-3", duration=0.2, sid="fa")) == [
        in_memory("c", "read-3", (A,), "fa"),
        compute(A, "read-7", (0, 2, 7), "fa", who_has=(("x", (A,), 50_000_000),)),
    ]
    assert s.tasks["x"].fetching is None and s.tasks["y"].fetching is None
