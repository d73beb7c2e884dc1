"""The scheduler's transition table: ``TRANSITIONS[(start, finish)]``.

Rules of this module:
- A transition function changes exactly one task's state and the indices that
  mirror it, appends instructions to ``state.out`` and may *recommend* further
  transitions via ``state.recommend``; it never calls another transition
  directly (recursion would overflow on long chains).
- A pair missing from the table is a bug: ``SchedulerState.transition`` raises
  ``InvalidTransition`` with the task's story.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from teamster.core.messages import (
    ComputeTask,
    FreeKeys,
    KeyCancelled,
    KeyErred,
    KeyInMemory,
    Priority,
)
from teamster.core.scheduler.entities import TaskState
from teamster.core.scheduler.instructions import SendToClient, SendToWorker

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

Transition = Callable[["SchedulerState", TaskState, str], None]


def _priority(ts: TaskState) -> Priority:
    return ts.priority


def _leave_dependencies(s: SchedulerState, ts: TaskState) -> None:
    """ts no longer needs its inputs: leave their waiters; free unneeded ones."""
    ts.n_waiting = 0
    if not ts.needs_inputs:
        return
    ts.needs_inputs = False
    for dts in ts.dependencies:
        dts.n_waiters -= 1
        if not dts.n_waiters and not dts.who_wants and dts.state in (
                "memory", "waiting", "queued", "no-worker", "processing"):
            s.recommend(dts, "released")


def _after_release(s: SchedulerState, ts: TaskState) -> None:
    if ts.who_wants or ts.n_waiters:
        s.recommend(ts, "waiting")
    elif not ts.has_dependents() and not ts.who_wants:
        s.recommend(ts, "forgotten")


def released_waiting(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    if not (ts.who_wants or ts.n_waiters):
        _after_release(s, ts)  # stale recommendation: nobody needs it any more
        return
    if ts.run_spec is None and not ts.dependencies:
        # Scattered data cannot be recomputed once lost. (A run_spec of None
        # with dependencies is an alias of its input: the worker copies it.)
        ts.exception_text = (
            f"Data for {ts.key!r} was lost with its worker and cannot be recomputed "
            "(it was scattered, not computed); scatter it again."
        )
        ts.exception_blame = ts
        ts.state = "waiting"
        s.recommend(ts, "erred")
        return
    ts.state = "waiting"
    ts.needs_inputs = True
    n_waiting = 0
    erred = None
    for dts in ts.dependencies:
        dts.n_waiters += 1
        state = dts.state
        if state == "memory":
            continue
        n_waiting += 1
        if state == "released":
            if erred is None:
                s.recommend(dts, "waiting")
        elif state == "erred" and erred is None:
            erred = dts
    ts.n_waiting = n_waiting
    if erred is not None:
        ts.exception_blame = erred.exception_blame or erred
        s.recommend(ts, "erred")
        return
    if not n_waiting:
        s.recommend(ts, "processing")


def waiting_processing(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    """Ready: place it now, or park it in the queue / no-worker set."""
    if ts.n_waiting:
        return  # stale recommendation; a dependency was lost meanwhile
    ws = s.placement.choose_worker(ts)
    if ws is None:
        if ts.restricted:
            ts.state = "no-worker"
            s.unrunnable[ts] = None
        else:
            ts.state = "queued"
            s.push_queue(ts)
        return
    s.assign(ts, ws, stimulus_id)


def queued_processing(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    """Reached after ``_pop_queue`` took the task out of the heap."""
    ws = s.placement.choose_worker(ts)
    if ws is None:
        return  # still no room; the caller puts it back
    if ts.queue_index != -1:
        s.leave_queue(ts)
    s.assign(ts, ws, stimulus_id)


def no_worker_processing(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ws = s.placement.choose_worker(ts)
    if ws is None:
        return
    del s.unrunnable[ts]
    s.assign(ts, ws, stimulus_id)


def waiting_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ts.state = "released"
    _leave_dependencies(s, ts)
    _after_release(s, ts)


def queued_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    s.leave_queue(ts)
    waiting_released(s, ts, stimulus_id)


def no_worker_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    del s.unrunnable[ts]
    waiting_released(s, ts, stimulus_id)


def processing_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ws = ts.processing_on
    assert ws is not None
    s.unassign(ts, ws)
    if ws.address in s.workers:
        s.out.append(SendToWorker(ws.address, FreeKeys((ts.key,), stimulus_id)))
    waiting_released(s, ts, stimulus_id)


def processing_memory(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    """Called by the TaskFinished handler after it set nbytes/type_name."""
    ws = ts.processing_on
    assert ws is not None
    s.unassign(ts, ws)
    ts.state = "memory"
    s.add_replica(ts, ws)
    _on_memory(s, ts, stimulus_id)


def _on_memory(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    if ts.who_wants:
        msg = KeyInMemory(
            ts.key, tuple(w.address for w in ts.who_has), ts.nbytes, ts.type_name, stimulus_id
        )
        for cs in ts.who_wants:
            s.out.append(SendToClient(cs.client_id, msg))
    ready = []
    dependent = ts.dependent  # (the usual single dependent: no collection built)
    if dependent is not None:
        if _input_arrived(dependent):
            ready.append(dependent)
    elif ts.more_dependents:
        for dts in ts.more_dependents:
            if _input_arrived(dts):
                ready.append(dts)
    # Recommendations run last in, first out: recommend the lowest priority
    # first so the highest-priority dependent takes the first free slot.
    if len(ready) > 1:  # (most results free one dependent or none: skip the sort)
        ready.sort(key=_priority)
        ready.reverse()
    for dts in ready:
        s.recommend(dts, "processing")
    _leave_dependencies(s, ts)
    if not (ts.who_wants or ts.n_waiters):
        s.recommend(ts, "released")


def _input_arrived(dts: TaskState) -> bool:
    """One more input of dependent ``dts`` is in memory: has it all of them now?

    A waiting dependent counts this input among those it waits for: it was
    not in memory when the dependent started waiting, or it left memory
    since (``memory_released`` counts it again).
    """
    if dts.state == "waiting":
        dts.n_waiting -= 1
        return not dts.n_waiting
    return False


def released_memory(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    """Scattered data arrived (who_has set by the handler before this runs)."""
    ts.state = "memory"
    _on_memory(s, ts, stimulus_id)


def memory_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    msg = FreeKeys((ts.key,), stimulus_id)
    out = s.out
    nbytes = ts.nbytes if ts.nbytes > 0 else 0
    # (remove_replica inlined: every result is freed on every holder.)
    holder = ts.holder
    if holder is not None:
        holder.has_what.remove(ts)
        holder.nbytes -= nbytes
        out.append(SendToWorker(holder.address, msg))
        holder2 = ts.holder2
        if holder2 is not None:
            holder2.has_what.remove(ts)
            holder2.nbytes -= nbytes
            out.append(SendToWorker(holder2.address, msg))
            ts.holder2 = None
        ts.holder = None
    elif ts.more_holders is not None:
        for ws in ts.more_holders:
            ws.has_what.remove(ts)
            ws.nbytes -= nbytes
            out.append(SendToWorker(ws.address, msg))
        ts.more_holders = None
    ts.state = "released"
    ts.fetching = None
    # Recommend first, so that it runs last (recommendations are LIFO): the
    # dependents released below must let go of it before it is placed again,
    # or their release would cancel the recomputation just sent out.
    _after_release(s, ts)
    if not ts.n_waiters:
        # No dependent is pending (those are exactly the ones counted in
        # n_waiters; validation checks it), so none needs it back. The usual
        # release, of an input its last reader has just used: its
        # dependents' table, cold at 1,000 workers, stays unread.
        return
    for dts in ts.dependents:
        # A waiting dependent needs this again: it must wait for the recomputation.
        if dts.state == "waiting":
            dts.n_waiting += 1
        elif dts.state in ("queued", "no-worker", "processing"):
            s.recommend(dts, "released")


def _fail(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ts.state = "erred"
    blame = ts.exception_blame or ts
    if blame is not ts:
        ts.exception, ts.traceback = blame.exception, blame.traceback
        ts.exception_text = blame.exception_text
    if ts.who_wants:
        msg = KeyErred(ts.key, ts.exception, ts.traceback, ts.exception_text, stimulus_id)
        for cs in ts.who_wants:
            s.out.append(SendToClient(cs.client_id, msg))
    for dts in ts.dependents:
        if dts.state in ("waiting", "queued", "no-worker", "processing", "released") and (
            dts.state != "released" or s.is_needed(dts)
        ):
            dts.exception_blame = blame
            s.recommend(dts, "erred")
    _leave_dependencies(s, ts)


def processing_erred(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ws = ts.processing_on
    assert ws is not None
    s.unassign(ts, ws)
    if ts.exception_blame is not ts and ws.address in s.workers:
        # Failed because an input failed: stop the worker's copy.
        s.out.append(SendToWorker(ws.address, FreeKeys((ts.key,), stimulus_id)))
    _fail(s, ts, stimulus_id)


def waiting_erred(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    _fail(s, ts, stimulus_id)


def queued_erred(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    s.leave_queue(ts)
    _fail(s, ts, stimulus_id)


def no_worker_erred(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    del s.unrunnable[ts]
    _fail(s, ts, stimulus_id)


def released_erred(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    _fail(s, ts, stimulus_id)


def erred_released(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    ts.state = "released"
    ts.exception = ts.traceback = None
    ts.exception_text = ""
    ts.exception_blame = None
    for dts in ts.dependents:
        if dts.state == "erred":
            s.recommend(dts, "released")
    _after_release(s, ts)


def released_forgotten(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    if ts.has_dependents() or ts.who_wants:
        return  # stale: something needs it again
    ts.state = "forgotten"
    for dts in ts.dependencies:
        dts.remove_dependent(ts)
        if (dts.state in ("released", "erred") and not dts.has_dependents()
                and not dts.who_wants):
            s.recommend(dts, "forgotten")
        elif dts.state == "memory" and not (dts.who_wants or dts.n_waiters):
            s.recommend(dts, "released")
    s.forget(ts)


def erred_forgotten(s: SchedulerState, ts: TaskState, stimulus_id: str) -> None:
    if ts.has_dependents() or ts.who_wants:
        return
    erred_released(s, ts, stimulus_id)
    released_forgotten(s, ts, stimulus_id)


def cancel_notice(s: SchedulerState, ts: TaskState, client_id: str, stimulus_id: str) -> None:
    s.out.append(SendToClient(client_id, KeyCancelled(ts.key, "cancelled", stimulus_id)))


def compute_message(s: SchedulerState, ts: TaskState, stimulus_id: str) -> ComputeTask:
    # (The method is called through its object each time: taken out as a
    # bound method, it would be a generic Python call per input.)
    placement = s.placement
    who_has = tuple([(dts.key, placement.holders_to_fetch_from(dts), dts.nbytes)
                     for dts in ts.dependencies])
    resources = (
        tuple(sorted(ts.resource_restrictions.items())) if ts.resource_restrictions else None
    )
    return ComputeTask(ts.key, ts.run_spec, who_has, ts.priority, resources, ts.run_id,
                       ts.lost_runs > 0, stimulus_id)


TRANSITIONS: Final[dict[tuple[str, str], Transition]] = {
    ("released", "waiting"): released_waiting,
    ("released", "memory"): released_memory,
    ("released", "erred"): released_erred,
    ("released", "forgotten"): released_forgotten,
    ("waiting", "processing"): waiting_processing,
    ("waiting", "released"): waiting_released,
    ("waiting", "erred"): waiting_erred,
    ("queued", "processing"): queued_processing,
    ("queued", "released"): queued_released,
    ("queued", "erred"): queued_erred,
    ("no-worker", "processing"): no_worker_processing,
    ("no-worker", "released"): no_worker_released,
    ("no-worker", "erred"): no_worker_erred,
    ("processing", "memory"): processing_memory,
    ("processing", "released"): processing_released,
    ("processing", "erred"): processing_erred,
    ("memory", "released"): memory_released,
    ("erred", "released"): erred_released,
    ("erred", "forgotten"): erred_forgotten,
}
#: The same table by start state, then finish state: what the scheduler
#: looks transitions up in, about five times per task. A ``(start, finish)``
#: key was a tuple to build, hash, compare with the stored one and free on
#: every lookup, about 200 instructions each (callgrind, compiled core);
#: two lookups of interned strings are a fraction of that.
BY_START: Final[dict[str, dict[str, Transition]]] = {
    start: {finish: func for (s, finish), func in TRANSITIONS.items() if s == start}
    for start, _ in TRANSITIONS
}


def make(s: SchedulerState, ts: TaskState, start: str, finish: str, stimulus_id: str) -> bool:
    """Take ``ts`` from ``start`` (its state) to ``finish``; False if no
    transition leads there.

    The transitions every task makes are called directly: a C call, where
    one through ``BY_START`` is a call of a Python object, its arguments
    packed and parsed again (about 150 instructions more, five times per
    task; callgrind, compiled core).
    """
    if finish == "processing":
        if start == "waiting":
            waiting_processing(s, ts, stimulus_id)
            return True
        if start == "queued":
            queued_processing(s, ts, stimulus_id)
            return True
    elif finish == "released":
        if start == "memory":
            memory_released(s, ts, stimulus_id)
            return True
    elif finish == "forgotten":
        if start == "released":
            released_forgotten(s, ts, stimulus_id)
            return True
    elif finish == "memory":
        if start == "processing":
            processing_memory(s, ts, stimulus_id)
            return True
    row = BY_START.get(start)
    func = None if row is None else row.get(finish)
    if func is None:
        return False
    func(s, ts, stimulus_id)
    return True
