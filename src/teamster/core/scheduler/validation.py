"""Invariants of SchedulerState, checked after events in validation mode.

Each check names the two indices that must agree. A failure raises
InvariantError carrying the task's story, so a hang or a wrong answer in a
test surfaces as the broken invariant that caused it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamster.core import messages as m
from teamster.core.scheduler.entities import TASK_STATES, TaskState, WorkerInfo
from teamster.core.scheduler.placement import LARGE_TRANSFER
from teamster.core.story import InvariantError

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState


def _fail(s: SchedulerState, ts: TaskState | None, what: str) -> None:
    if ts is None:
        raise InvariantError(what)
    lines = "\n".join(f"  {e.start} -> {e.finish} ({e.stimulus_id})" for e in s.story(ts.key)[-20:])
    raise InvariantError(f"{what}\ntask {ts.key!r} in state {ts.state!r}; story:\n{lines}")


def validate_task(s: SchedulerState, ts: TaskState) -> None:
    if s.tasks.get(ts.key) is not ts:
        _fail(s, ts, "task not registered under its key")
    if ts.state not in TASK_STATES:
        _fail(s, ts, "unknown state")
    if ts.more_holders is not None and (ts.holder is not None or not ts.more_holders):
        _fail(s, ts, "holders kept two ways: in more_holders, which must then hold them all")
    if ts.holder2 is not None and (ts.holder is None or ts.holder2 is ts.holder):
        _fail(s, ts, "holder2 set without a different holder")
    if ts.rec_index != -1:
        _fail(s, ts, f"a recommendation (index {ts.rec_index}) outlived its event")
    for dts in ts.dependencies:
        if ts not in dts.dependents:
            _fail(s, ts, f"dependency {dts.key!r} does not list it as a dependent")
        if dts.state == "forgotten" or s.tasks.get(dts.key) is not dts:
            _fail(s, ts, f"dependency {dts.key!r} was forgotten")
    for dts in ts.dependents:
        if ts not in dts.dependencies:
            _fail(s, ts, f"dependent {dts.key!r} does not list it as a dependency")
    waiters = sum(1 for dts in ts.dependents if dts.needs_inputs)
    if ts.n_waiters != waiters:
        _fail(s, ts, f"n_waiters is {ts.n_waiters}, but {waiters} dependents need it")
    pending = ts.state in ("waiting", "queued", "no-worker", "processing")
    if pending != ts.needs_inputs:
        _fail(s, ts, f"needs_inputs is {ts.needs_inputs} in state {ts.state}")
    for cs in ts.who_wants or ():
        if ts not in cs.wants_what or s.clients.get(cs.client_id) is not cs:
            _fail(s, ts, f"who_wants/wants_what disagree for {cs.client_id}")
    for ws in ts.who_has:
        if ts not in ws.has_what or s.workers.get(ws.address) is not ws:
            _fail(s, ts, f"who_has/has_what disagree for {ws.address}")
    if (ts.state == "memory") != bool(ts.who_has):
        _fail(s, ts, "in memory iff who_has is non-empty")
    if (ts.state == "processing") != (ts.processing_on is not None):
        _fail(s, ts, "processing iff processing_on is set")
    if ts.reads_large and ts.processing_on is None:
        _fail(s, ts, "counted as a large-input reader while not processing")
    if ts.processing_on is not None:
        ws = ts.processing_on
        # (That its worker's walk reaches it, validate_state checks.)
        linked_before = (ws.first_assigned is ts if ts.prev_here is None
                         else ts.prev_here.next_here is ts)
        linked_after = (ws.last_assigned is ts if ts.next_here is None
                        else ts.next_here.prev_here is ts)
        if not (linked_before and linked_after) or s.workers.get(ws.address) is not ws:
            _fail(s, ts, f"processing_on {ws.address} does not list it")
    elif ts.prev_here is not None or ts.next_here is not None:
        _fail(s, ts, "linked into a worker's tasks while not processing")
    if ts.state == "waiting":
        expected = sum(1 for d in ts.dependencies if d.state != "memory")
        if ts.n_waiting != expected:
            _fail(s, ts, f"n_waiting is {ts.n_waiting}, but {expected} dependencies "
                         "are not in memory")
        if not ts.n_waiting:
            _fail(s, ts, "waiting with nothing to wait for")
    elif ts.n_waiting:
        _fail(s, ts, "n_waiting set outside the waiting state")
    if ts.state in ("queued", "no-worker", "processing"):
        for dts in ts.dependencies:
            if dts.state != "memory":
                _fail(s, ts, f"ready/processing but dependency {dts.key!r} is {dts.state}")
    for rts in ts.queued_readers or ():
        if rts.state != "queued" or ts not in rts.dependencies:
            _fail(s, ts, f"queued reader {rts.key!r} is {rts.state}, not a queued dependent")
    if ts.state == "queued":
        for dts in ts.dependencies:
            if dts.nbytes >= LARGE_TRANSFER and ts not in (dts.queued_readers or ()):
                _fail(s, ts, f"queued, but missing from the queued readers of {dts.key!r}")
    if (ts.state == "queued") != (ts.queue_index != -1):
        _fail(s, ts, "queued iff it is in the ready queue")
    if ts.queue_index != -1 and not s.queue.holds(ts):
        _fail(s, ts, f"not at its place in the ready queue ({ts.queue_index})")
    if (ts.state == "no-worker") != (ts in s.unrunnable):
        _fail(s, ts, "no-worker iff in unrunnable")
    if ts.state == "queued" and ts.restricted:
        _fail(s, ts, "restricted tasks never wait in the shared queue")
    if ts.state in ("memory", "processing", "waiting", "queued", "no-worker") and not (
        s.is_needed(ts) or ts.state == "memory" and ts.dependents
    ):
        if ts.state != "memory":
            _fail(s, ts, "pending but needed by nobody")
    if ts.state == "memory" and not s.is_needed(ts):
        _fail(s, ts, "in memory but needed by nobody (should have been released)")
    if ts.state == "erred" and not ts.exception_text and ts.exception is None:
        _fail(s, ts, "erred without an error")


def _walk_processing(s: SchedulerState, ws: WorkerInfo) -> list[TaskState]:
    """``ws``'s tasks from first to last assigned, checking the links both ways
    and the count (a cycle stops the walk at the count)."""
    tasks: list[TaskState] = []
    prev = None
    ts = ws.first_assigned
    while ts is not None and len(tasks) <= ws.n_processing:
        if ts.prev_here is not prev:
            _fail(s, ts, f"its link back in {ws.address}'s tasks is broken")
        tasks.append(ts)
        prev, ts = ts, ts.next_here
    if len(tasks) != ws.n_processing or ws.last_assigned is not prev:
        _fail(s, None, f"worker {ws.address} counts {ws.n_processing} tasks; "
                       f"{len(tasks)} are linked")
    return tasks


def validate_state(s: SchedulerState) -> None:
    for key, ts in s.tasks.items():
        if ts.key != key:
            _fail(s, ts, f"registered under {key!r}")
        validate_task(s, ts)
    n_queued = sum(1 for ts in s.tasks.values() if ts.state == "queued")
    if not (len(s.queue) == n_queued == s.n_queued):
        _fail(s, None, f"queue holds {len(s.queue)} tasks, {n_queued} tasks are queued, "
                       f"the counter says {s.n_queued}")
    _check_heap(s)
    reserved: dict[WorkerInfo, float] = {}
    incoming: dict[WorkerInfo, int] = {}
    outgoing: dict[WorkerInfo, int] = {}
    for steal in s.stealing.pending.values():
        outgoing[steal.victim] = outgoing.get(steal.victim, 0) + 1
        if steal.thief is not None:
            reserved[steal.thief] = reserved.get(steal.thief, 0.0) + steal.duration
            incoming[steal.thief] = incoming.get(steal.thief, 0) + 1
    s.stealing.validate()
    s.victims.validate()
    for addr, ws in s.workers.items():
        if ws.n_incoming != incoming.get(ws, 0) or ws.n_outgoing != outgoing.get(ws, 0):
            _fail(s, None, f"worker {addr} steal counters disagree with pending steals")
        is_victim = ws.spare_tasks() > 0
        if is_victim != (ws in s.victims):
            _fail(s, None, f"worker {addr}: victims index disagrees with its queue")
        if ws.address != addr or s.workers_by_name.get(ws.name) is not ws:
            _fail(s, None, f"worker {addr} indexed inconsistently")
        processing = _walk_processing(s, ws)
        total = sum(ts.estimate for ts in processing) + reserved.get(ws, 0.0)
        if abs(total - ws.occupancy) > 1e-6 * max(1.0, total):
            _fail(s, None, f"worker {addr} occupancy {ws.occupancy} != sum {total}")
        for ts in processing:
            if ts.processing_on is not ws:
                _fail(s, ts, f"listed as processing on {addr}")
        readers = sum(1 for ts in processing if ts.reads_large)
        if readers != ws.n_large_readers:
            _fail(s, None, f"worker {addr} counts {ws.n_large_readers} large-input "
                           f"readers, processing has {readers}")
        for ts in ws.has_what:
            if ws not in ts.who_has:
                _fail(s, ts, f"listed in has_what of {addr}")
        nbytes = sum(max(ts.nbytes, 0) for ts in ws.has_what)
        if nbytes != ws.nbytes:
            _fail(s, None, f"worker {addr} nbytes {ws.nbytes} != sum {nbytes}")
        if ws.is_idle == s.placement.is_saturated(ws):
            _fail(s, None, f"worker {addr}: idle index disagrees with saturation")
        if not ws.connected:
            _fail(s, None, f"worker {addr}: registered but not connected")
    n_processing = sum(1 for ts in s.tasks.values() if ts.state == "processing")
    if not (s.n_processing == n_processing
            == sum(ws.n_processing for ws in s.workers.values())):
        _fail(s, None, f"n_processing is {s.n_processing}, {n_processing} tasks are "
                       "processing, and the workers count "
                       f"{sum(ws.n_processing for ws in s.workers.values())}")
    if s.total_threads != sum(ws.nthreads for ws in s.workers.values()):
        _fail(s, None, "total_threads disagrees with the workers")
    if len(s.workers_by_name) != len(s.workers):
        _fail(s, None, "workers_by_name has stale entries")
    _check_slots(s)
    _walk_idle(s)
    # Late binding's liveness: a queued task waits only while every worker is
    # saturated (a worker with no threads is never idle: is_saturated), or
    # the first in line waits for a holder of a large input (placement.py).
    if s.n_queued and s.idle.n:
        head = s.queue.first()
        if head is None or not any(d.nbytes >= LARGE_TRANSFER for d in head.dependencies):
            _fail(s, head, "tasks queued while workers are idle")
    for cid, cs in s.clients.items():
        for ts in cs.wants_what:
            if not ts.who_wants or cs not in ts.who_wants or s.tasks.get(ts.key) is not ts:
                _fail(s, ts, f"client {cid} wants a task that does not know it")


def _check_slots(s: SchedulerState) -> None:
    """Each connected worker has one number, and the free numbers are the rest."""
    slots = s.worker_slots
    numbered = {slot: ws for slot, ws in enumerate(slots.records) if ws is not None}
    if sorted(slots.free) != sorted(set(range(len(slots.records))) - set(numbered)):
        _fail(s, None, f"free worker numbers {sorted(slots.free)} disagree with the records")
    if len(numbered) != len(s.workers) or len(slots.by_address) != len(s.workers):
        _fail(s, None, f"{len(numbered)} workers numbered, {len(s.workers)} connected")
    for slot, ws in numbered.items():
        if s.workers.get(ws.address) is not ws or slots.by_address.get(ws.address) != slot:
            _fail(s, None, f"worker number {slot} is {ws.address}, not connected as such")


def check_finished_report(ev: m.TaskFinished, ws: WorkerInfo, ts: TaskState | None) -> None:
    """A ``TaskFinished`` found the record of the worker that sent it, and,
    if the run it reports is current, the task that run is of."""
    if ws.address != ev.worker:
        raise InvariantError(f"{ev.worker} reported run {ev.run_id} as worker number "
                             f"{ev.worker_slot}, which is {ws.address}")
    if ts is not None and ts.run_id == ev.run_id and ts.key != ev.key:
        raise InvariantError(f"{ev.worker} reported run {ev.run_id} as {ev.key!r}; "
                             f"that run is {ts.key!r}")


def _check_heap(s: SchedulerState) -> None:
    problem = s.queue.problem()
    if problem is not None:
        _fail(s, None, f"ready queue out of order: {problem}")


def _walk_idle(s: SchedulerState) -> None:
    """The idle ring: each link mirrored, back to the front after its count,
    and holding exactly the registered workers marked ``is_idle``."""
    ring = s.idle
    members = ring.workers()
    if len(members) != ring.n or (ring.n == 0) != (ring.front is None):
        _fail(s, None, f"the idle ring counts {ring.n} workers and holds {len(members)}")
    for ws in members:
        nxt = ws.idle_next
        if nxt is None or nxt.idle_prev is not ws:
            _fail(s, None, f"idle ring: {ws.address}'s next does not link back")
    if members and members[-1].idle_next is not ring.front:
        _fail(s, None, "the idle ring does not close on its front")
    idle = {ws for ws in s.workers.values() if ws.is_idle}
    if set(members) != idle:
        strays = sorted(ws.address for ws in set(members) ^ idle)
        _fail(s, None, f"idle ring and is_idle disagree on {strays}")
    for ws in s.workers.values():
        if not ws.is_idle and (ws.idle_prev is not None or ws.idle_next is not None):
            _fail(s, None, f"{ws.address} is linked in the idle ring but not idle")
