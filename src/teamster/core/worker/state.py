"""WorkerState: one worker's tasks, transfers and threads, as a pure state machine.

A worker holds two kinds of task: *compute* tasks the scheduler assigned
(``assigned``), and *data* tasks, the inputs it fetches from peers or that
clients scatter to it. ``handle(event) -> list[instruction]`` is the only
entry point; every state change goes through the table ``TRANSITIONS``.

The worker keeps a value while the scheduler counts it as a holder
(``scheduler_holds``), the scheduler asked for a copy (``replicate``: a
retiring worker's unique data) or a local pending task still reads it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final

from teamster.core import messages as m
from teamster.core.story import InvalidTransition, StoryEntry
from teamster.core.transition_log import TransitionLog
from teamster.core.worker import events as ev
from teamster.core.worker import validation
from teamster.core.worker.entities import NO_RESOURCES, NO_TASKS, WorkerTask
from teamster.core.worker.instructions import (
    DeleteData,
    Execute,
    GatherDep,
    SendToScheduler,
    WorkerInstruction,
)

#: Peers fetched from at once; more only adds contention on the links.
MAX_CONCURRENT_GATHERS: Final = 4
#: Bytes requested from one peer in one message (whole keys; at least one key).
MAX_GATHER_BYTES: Final = 50_000_000
MAX_GATHER_KEYS: Final = 1000


# The event types ``WorkerState.handle`` takes, as ``Final`` names: the
# compiled core reads them as C statics, where ``m.ComputeTask`` is a module
# dict lookup and an attribute lookup on every test.
COMPUTE_TASK: Final = m.ComputeTask
EXECUTE_SUCCESS: Final = ev.ExecuteSuccess
FREE_KEYS: Final = m.FreeKeys
GATHER_SUCCESS: Final = ev.GatherDepSuccess
STEAL_REQUEST: Final = m.StealRequest
GATHER_FAILURE: Final = ev.GatherDepFailure
EXECUTE_FAILURE: Final = ev.ExecuteFailure
ACQUIRE_REPLICAS: Final = m.AcquireReplicas
DATA_PUT: Final = ev.DataPut
PAUSE_CHANGED: Final = ev.PauseChanged
REGISTERED: Final = ev.Registered


class WorkerState:
    def __init__(
        self,
        address: str,
        nthreads: int,
        *,
        resources: dict[str, float] | None = None,
        validate: bool = False,
        transition_log_length: int = 100_000,
    ) -> None:
        self.address = address
        #: Its number at the scheduler (``events.Registered``), echoed in
        #: every TaskFinished; -1 until the scheduler's acknowledgement.
        self.worker_slot = -1
        self.nthreads = nthreads
        self.total_resources = dict(resources or {})
        #: Resources not held by executing tasks.
        self.available_resources = dict(self.total_resources)
        self.tasks: dict[m.Key, WorkerTask] = {}
        #: Ready tasks: (priority, seq, task); live iff seq == task.ready_seq.
        self.ready: list[tuple[Any, int, WorkerTask]] = []
        self.n_ready = 0
        self.executing: dict[WorkerTask, None] = {}
        #: Inputs to fetch, grouped by a peer that holds them.
        self.fetch_by_peer: dict[str, dict[WorkerTask, None]] = {}
        self.n_fetch = 0
        #: Peers with a request in flight -> the keys requested.
        self.in_flight: dict[str, tuple[WorkerTask, ...]] = {}
        #: Small inputs fetched for local tasks that the scheduler does not
        #: know are here yet, one ``(keys, nbytes, peer, seconds)`` per transfer. They ride on
        #: the next TaskFinished: at scale an AddKeys per transfer was a third
        #: of the scheduler's events, each touching the same input records the
        #: finishing task touches anyway. Non-empty only while the worker is
        #: busy (see ``_busy``); once it is not, they go out as AddKeys.
        self.unreported: list[tuple[tuple[m.Key, ...], int, str, float]] = []
        #: Memory is above the pause fraction: start no task and no fetch
        #: (both add memory); running ones finish, transfers in flight land.
        self.paused = False
        #: Announced tasks (``ComputeTask.announce``) started during this
        #: event: a TasksStarted names them when it ends.
        self.announced: list[m.Key] = []
        self._seq = 0
        self.log = TransitionLog(transition_log_length)
        self.validate_enabled = validate
        self.out: list[WorkerInstruction] = []
        self._stimulus = ""
        self._touched: dict[WorkerTask, None] = {}
        self._events_since_full_validation = 0

    # ------------------------------------------------------------------ driver

    def handle(self, event: Any) -> list[WorkerInstruction]:
        out: list[WorkerInstruction] = []
        self.out = out
        self._dispatch(event)
        self._ensure_communicating()
        self._ensure_computing()
        if self.announced:
            self._send(m.TasksStarted(self.address, tuple(self.announced), self._stimulus))
            self.announced = []
        if self.unreported and not self._busy():
            for keys, nbytes, peer, seconds in self._take_transfers():
                self._send(m.AddKeys(self.address, keys, peer, nbytes, seconds, self._stimulus))
        if self.validate_enabled:
            self._validate_after_event()
        self.out = []
        return out

    def _dispatch(self, event: Any) -> None:
        # Type tests, the most frequent first, rather than a dict of bound
        # methods built per worker: with 1,000 workers in one simulator process
        # those dicts were cold cache lines on every event (10 misses per task
        # by callgrind), evicting the scheduler's data; and these are direct
        # calls in the compiled core, not calls through bound-method objects.
        kind = type(event)
        # (A default, so that a foreign object gets the TypeError below.)
        self._stimulus = getattr(event, "stimulus_id", "")
        if kind is COMPUTE_TASK:
            self._compute_task(event)
        elif kind is EXECUTE_SUCCESS:
            self._execute_success(event)
        elif kind is FREE_KEYS:
            self._free_keys(event)
        elif kind is GATHER_SUCCESS:
            self._gather_success(event)
        elif kind is STEAL_REQUEST:
            self._steal_request(event)
        elif kind is GATHER_FAILURE:
            self._gather_failure(event)
        elif kind is EXECUTE_FAILURE:
            self._execute_failure(event)
        elif kind is ACQUIRE_REPLICAS:
            self._acquire_replicas(event)
        elif kind is DATA_PUT:
            self._data_put(event)
        elif kind is PAUSE_CHANGED:
            self._pause_changed(event)
        elif kind is REGISTERED:
            self.worker_slot = event.worker_slot
        else:
            raise TypeError(f"WorkerState cannot handle {kind.__name__}")

    def _validate_after_event(self) -> None:
        for ts in self._touched:
            if ts.state != "forgotten":
                validation.validate_task(self, ts.key, ts)
        self._touched.clear()
        # A full check costs O(tasks): amortise it like the scheduler does.
        self._events_since_full_validation += 1
        if self._events_since_full_validation * 50 >= len(self.tasks):
            self._events_since_full_validation = 0
            self.validate()

    def transition(self, ts: WorkerTask, finish: str) -> None:
        start = ts.state
        if start == finish:
            return
        func = TRANSITIONS.get((start, finish))
        if func is None:
            raise InvalidTransition(ts.key, start, finish, self.story(ts.key))
        func(self, ts)
        self.log.append(ts.key, start, ts.state, self._stimulus)
        if self.validate_enabled:
            # Only validation reads (and clears) it; kept otherwise it would
            # pin every task ever seen (found by teamster.sim at 1M tasks).
            self._touched[ts] = None

    def story(self, *keys: m.Key) -> list[StoryEntry]:
        return self.log.story(*keys)

    def _send(self, msg: m.Message) -> None:
        self.out.append(SendToScheduler(msg))

    def _send_finished(self, ts: WorkerTask, nbytes: int, type_name: str, duration: float,
                       stop: float, run_id: int, stimulus_id: str) -> None:
        transfers = tuple([(keys, n) for keys, n, _, _ in self._take_transfers()])
        self._send(m.TaskFinished(self.address, ts.key, nbytes, type_name, duration, stop,
                                  run_id, transfers, stimulus_id, self.worker_slot))

    def _busy(self) -> bool:
        """Some task runs, waits for a thread or waits for an input: an event
        will come (its end, or a transfer landing) that either sends a
        TaskFinished or finds the worker idle. While paused, tasks waiting
        for a thread or an input start nothing (maybe never): only running
        tasks and transfers already under way count."""
        if self.in_flight or (not self.paused and (self.n_ready or self.n_fetch)):
            return True
        return any(ts.state == "executing" for ts in self.executing)

    def _take_transfers(self) -> list[tuple[tuple[m.Key, ...], int, str, float]]:
        """The unreported transfers, less keys no longer held for the scheduler."""
        if not self.unreported:
            return []
        tasks = self.tasks
        out = []
        for keys, nbytes, peer, seconds in self.unreported:
            held = []
            for key in keys:
                ts = tasks.get(key)
                if ts is not None and ts.state == "memory" and ts.scheduler_holds:
                    held.append(key)
            out.append((tuple(held), nbytes, peer, seconds))
        self.unreported = []
        return out

    # ------------------------------------------------------------- scheduling

    def _ensure_computing(self) -> None:
        if self.paused:
            return
        while self.n_ready and len(self.executing) < self.nthreads:
            _, seq, ts = self.ready[0]
            if ts.ready_seq != seq or ts.state != "ready":
                heapq.heappop(self.ready)
                continue
            avail = self.available_resources
            if any(avail.get(r, 0) < q for r, q in ts.resources.items()):
                break  # the head waits for resources; keep priority order
            heapq.heappop(self.ready)
            self.transition(ts, "executing")

    def _ensure_communicating(self) -> None:
        if not self.n_fetch or self.paused:
            return
        for peer in list(self.fetch_by_peer):
            if len(self.in_flight) >= MAX_CONCURRENT_GATHERS:
                return
            if peer in self.in_flight:
                continue
            todo = self.fetch_by_peer[peer]
            batch: list[WorkerTask] = []
            total = 0
            for ts in todo:
                size = max(ts.nbytes, 0)
                if batch and (total + size > MAX_GATHER_BYTES or len(batch) >= MAX_GATHER_KEYS):
                    break
                batch.append(ts)
                total += size
            for ts in batch:
                ts.coming_from = peer
                self.transition(ts, "flight")
            self.in_flight[peer] = tuple(batch)
            self.out.append(
                GatherDep(peer, tuple(ts.key for ts in batch), total, self._stimulus)
            )

    def _add_fetch(self, ts: WorkerTask) -> bool:
        """File an input under one peer that holds it; False if nobody does."""
        holders = [w for w in ts.who_has if w != self.address]
        if not holders:
            return False
        # Prefer a peer we are not already fetching from, then the first listed.
        peer = next((w for w in holders if w not in self.in_flight), holders[0])
        self.fetch_by_peer.setdefault(peer, {})[ts] = None
        self.n_fetch += 1
        return True

    def _remove_fetch(self, ts: WorkerTask) -> None:
        for peer, todo in self.fetch_by_peer.items():
            if ts in todo:
                del todo[ts]
                if not todo:
                    del self.fetch_by_peer[peer]
                self.n_fetch -= 1
                return

    def _is_pending(self, ts: WorkerTask) -> bool:
        return ts.state in ("waiting", "ready", "executing")

    def _needed(self, ts: WorkerTask) -> bool:
        return ts.scheduler_holds or ts.assigned or ts.replicate or any(
            self._is_pending(d) for d in ts.dependents
        )

    def _release_if_unneeded(self, ts: WorkerTask) -> None:
        # A cancelled task still holds a thread: only its result event may
        # forget it (forgetting it earlier leaked the thread slot).
        if ts.state not in ("forgotten", "cancelled") and not self._needed(ts):
            self.transition(ts, "forgotten")

    def _give_up(self, ts: WorkerTask) -> None:
        """An input is unobtainable: hand its pending dependents back to the scheduler."""
        if ts.replicate:
            ts.replicate = False
            self._send(m.ReplicasNotAcquired(self.address, (ts.key,), self._stimulus))
        for dts in list(ts.dependents):
            if dts.state in ("waiting",):
                self._send(m.RescheduleTask(self.address, dts.key, dts.run_id, self._stimulus))
                dts.assigned = False
                self.transition(dts, "forgotten")
        self._release_if_unneeded(ts)

    # ------------------------------------------------------------- handlers

    def _compute_task(self, e: m.ComputeTask) -> None:
        ts = self.tasks.get(e.key)
        if ts is None:
            ts = self.tasks[e.key] = WorkerTask(e.key)
        if ts.state == "memory":
            ts.assigned = False
            ts.scheduler_holds = True
            ts.run_id = e.run_id  # the result of this run now, whatever made it
            self._send_finished(ts, ts.nbytes, ts.type_name, 0.0, 0.0, e.run_id, e.stimulus_id)
            return
        if ts.state == "cancelled":
            if e.run_spec == ts.run_spec:
                # Resurrected: the run still going is this very computation;
                # its result answers the new assignment.
                ts.assigned = True
                ts.run_id = e.run_id
                ts.next_compute = None
                self.transition(ts, "executing")
            else:
                ts.next_compute = e
            return
        if ts.assigned and ts.state in ("waiting", "ready", "executing"):
            ts.run_id = e.run_id  # a duplicate of what we are doing: answer the latest
            ts.announce = e.announce
            return
        if ts.state == "fetch":
            self.transition(ts, "released")
        elif ts.state == "flight":
            ts.assigned = True  # the value is on its way; report it when it lands
            ts.run_id = e.run_id
            return
        ts.assigned = True
        ts.run_id = e.run_id
        ts.announce = e.announce
        ts.run_spec = e.run_spec
        ts.priority = e.priority
        ts.resources = dict(e.resources) if e.resources else NO_RESOURCES
        if e.who_has and ts.dependencies is NO_TASKS:
            ts.dependencies = {}
        for dep_key, holders, nbytes in e.who_has:
            dts = self.tasks.get(dep_key)
            if dts is None:
                dts = self.tasks[dep_key] = WorkerTask(dep_key)
            ts.dependencies[dts] = None
            if dts.dependents is NO_TASKS:
                dts.dependents = {}
            dts.dependents[ts] = None
            if dts.state == "memory":
                continue
            dts.nbytes = nbytes
            dts.who_has = list(holders)
            if ts.waiting_for_data is NO_TASKS:
                ts.waiting_for_data = {}
            ts.waiting_for_data[dts] = None
            if dts.state == "released":
                self.transition(dts, "fetch")
        if ts.waiting_for_data:
            self.transition(ts, "waiting")
            for dts in list(ts.waiting_for_data):
                if dts.state == "released":  # no holder could be filed
                    self._give_up(dts)
                    break
        else:
            self.transition(ts, "ready")

    def _acquire_replicas(self, e: m.AcquireReplicas) -> None:
        """Fetch copies the scheduler wants kept here (it is retiring their holder)."""
        already: list[m.Key] = []
        refused: list[m.Key] = []
        for key, holders, nbytes in e.who_has:
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = WorkerTask(key)
            if ts.state == "memory":
                # Here already (fetched for a local task; its AddKeys may be
                # crossing this message): say so again, the scheduler's
                # replica count is idempotent.
                ts.scheduler_holds = True
                ts.run_id = m.NO_RUN  # a counted copy now, whatever made it
                already.append(key)
                continue
            if ts.state in ("waiting", "ready", "executing", "cancelled", "error"):
                # Computed here under the same key (a stale assignment racing
                # a release): that result would not count as a copy.
                refused.append(key)
                continue
            ts.replicate = True
            ts.run_id = m.NO_RUN  # (FETCHED_COPY once it lands)
            if ts.state in ("fetch", "flight"):
                # On its way already (an input of a local task): it lands as
                # usual; more holders to try if this transfer fails.
                ts.who_has = ts.who_has + [h for h in holders if h not in ts.who_has]
                continue
            ts.nbytes = nbytes
            ts.who_has = list(holders)
            self.transition(ts, "fetch")
            if ts.state == "released":  # no holder but this worker was named
                self._give_up(ts)
        if already:
            self._send(m.AddKeys(self.address, tuple(already), "", 0, 0.0, e.stimulus_id))
        if refused:
            self._send(m.ReplicasNotAcquired(self.address, tuple(refused), e.stimulus_id))

    def _free_keys(self, e: m.FreeKeys) -> None:
        for key in e.keys:
            ts = self.tasks.get(key)
            if ts is None or e.run_id != m.NO_RUN and ts.run_id != e.run_id:
                continue  # (the other: a copy or a run the scheduler counts)
            ts.scheduler_holds = False
            ts.assigned = False
            ts.replicate = False
            ts.next_compute = None
            if ts.state == "executing":
                self.transition(ts, "cancelled")
            elif ts.state in ("waiting", "ready", "error"):
                self.transition(ts, "forgotten")
            else:
                self._release_if_unneeded(ts)

    def _steal_request(self, e: m.StealRequest) -> None:
        """Give up an assigned task that has not started; refuse one that has
        (or whose inputs are being fetched).

        The scheduler moves the task only on a yes, so a task never runs in
        two places because of a steal (it may still run twice if a worker dies).
        """
        ts = self.tasks.get(e.key)
        state = "forgotten" if ts is None else ts.state
        stolen = ts is not None and ts.assigned and (
            state == "ready"
            # Inputs already on their way are an investment the thief would repeat.
            or state == "waiting" and not any(d.state == "flight" for d in ts.waiting_for_data)
        )
        if ts is not None and stolen:
            ts.assigned = False
            self.transition(ts, "forgotten")
        self._send(m.StealResponse(self.address, e.key, e.steal_id, stolen, state,
                                   e.stimulus_id))

    def _execute_success(self, e: ev.ExecuteSuccess) -> None:
        ts = self.tasks.get(e.key)
        if ts is None or ts.state not in ("executing", "cancelled"):
            return
        self._finish_execution(ts)
        if ts.next_compute is not None:
            # The result of the old computation under this key: not wanted
            # (the shell stored it; drop it), and the new one can start now.
            self.out.append(DeleteData((ts.key,), e.stimulus_id))
            self._start_next_compute(ts)
            return
        if ts.state == "cancelled":
            # The shell stored it. Keep it only while a local task reads it (a
            # dependent placed here meanwhile); otherwise forgetting deletes it.
            ts.nbytes = e.nbytes
            ts.type_name = e.type_name
            self.transition(ts, "memory")
            self._release_if_unneeded(ts)
            return
        ts.nbytes = e.nbytes
        ts.type_name = e.type_name
        ts.assigned = False
        ts.scheduler_holds = True
        self.transition(ts, "memory")
        self._send_finished(ts, e.nbytes, e.type_name, e.duration, e.stop, ts.run_id,
                            e.stimulus_id)

    def _execute_failure(self, e: ev.ExecuteFailure) -> None:
        ts = self.tasks.get(e.key)
        if ts is None or ts.state not in ("executing", "cancelled"):
            return
        self._finish_execution(ts)
        if ts.next_compute is not None:
            self._start_next_compute(ts)
            return
        if ts.state == "cancelled":
            self.transition(ts, "forgotten")
            return
        self.transition(ts, "error")
        self._send(m.TaskErred(self.address, ts.key, e.exception, e.traceback,
                               e.exception_text, e.duration, ts.run_id, e.stimulus_id))
        # The scheduler keeps the error; a retry arrives as a new ComputeTask.
        self.transition(ts, "forgotten")

    def _finish_execution(self, ts: WorkerTask) -> None:
        del self.executing[ts]
        for r, q in ts.resources.items():
            self.available_resources[r] = self.available_resources.get(r, 0) + q

    def _start_next_compute(self, ts: WorkerTask) -> None:
        """The cancelled old run of ``ts`` ended: forget it, start the queued new one."""
        pending = ts.next_compute
        assert pending is not None and ts.state == "cancelled"
        ts.next_compute = None
        self.transition(ts, "forgotten")
        self._compute_task(pending)

    def _gather_success(self, e: ev.GatherDepSuccess) -> None:
        requested = self.in_flight.pop(e.worker, ())
        by_key = {ts.key: ts for ts in requested}
        arrived: list[m.Key] = []
        arrived_bytes = 0
        asked = False  # some of it is a copy the scheduler asked for (AcquireReplicas)
        for key, nbytes in e.received:
            ts = by_key.get(key)
            if ts is None or self.tasks.get(key) is not ts or ts.state != "flight":
                # A stale reply. The shell stored it over whatever it held
                # under this key; if that was a live value (the key was
                # forgotten, then fetched again elsewhere), it is the same
                # value and must stay.
                current = self.tasks.get(key)
                if current is None or current.state != "memory":
                    self.out.append(DeleteData((key,), e.stimulus_id))
                continue
            ts.nbytes = nbytes
            if not self._needed(ts):
                self.transition(ts, "forgotten")
                self.out.append(DeleteData((key,), e.stimulus_id))
                continue
            self.transition(ts, "memory")
            ts.scheduler_holds = True
            if not ts.assigned:  # (assigned: it answers that run, below)
                ts.run_id = m.FETCHED_COPY
            asked = asked or ts.replicate
            ts.replicate = False
            arrived.append(key)
            arrived_bytes += max(nbytes, 0)
            if ts.assigned:
                ts.assigned = False
                self._send_finished(ts, nbytes, ts.type_name, 0.0, 0.0, ts.run_id,
                                    e.stimulus_id)
        if arrived:
            if asked or arrived_bytes >= m.REPORT_AT_ONCE_BYTES:
                self._send(m.AddKeys(self.address, tuple(arrived), e.worker, arrived_bytes,
                                     e.seconds, e.stimulus_id))
            else:
                self.unreported.append((tuple(arrived), arrived_bytes, e.worker, e.seconds))
        missing = set(e.missing)
        for ts in requested:
            if ts.key in missing:
                self._send(m.MissingData(self.address, ts.key, e.worker, e.stimulus_id))
            if ts.key in missing or (ts.state == "flight" and ts.key not in by_key):
                self._retry_elsewhere(ts, e.worker)
        for ts in requested:
            if ts.state == "flight":  # neither received nor reported missing
                self._retry_elsewhere(ts, e.worker)

    def _gather_failure(self, e: ev.GatherDepFailure) -> None:
        for ts in self.in_flight.pop(e.worker, ()):
            self._retry_elsewhere(ts, e.worker)

    def _retry_elsewhere(self, ts: WorkerTask, peer: str) -> None:
        if ts.state != "flight" or self.tasks.get(ts.key) is not ts:
            return
        if peer in ts.who_has:
            ts.who_has.remove(peer)
        self.transition(ts, "released")
        if ts.assigned:
            # The scheduler asked for it to be computed here while it was on
            # its way (see _compute_task); without its run_spec, hand it back.
            # (Keeping it "assigned" while giving up on it left it stuck.)
            ts.assigned = False
            self._send(m.RescheduleTask(self.address, ts.key, ts.run_id, self._stimulus))
        if not self._needed(ts):
            self.transition(ts, "forgotten")
        elif ts.who_has:
            self.transition(ts, "fetch")
            if ts.state == "released":
                self._give_up(ts)
        else:
            self._give_up(ts)

    def _pause_changed(self, e: ev.PauseChanged) -> None:
        if e.paused == self.paused:
            return
        self.paused = e.paused
        status = "paused" if e.paused else "running"
        self._send(m.WorkerStatus(self.address, status, e.stimulus_id))

    def _data_put(self, e: ev.DataPut) -> None:
        for key, nbytes in e.data:
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = WorkerTask(key)
            if ts.state in ("executing", "cancelled", "flight", "waiting", "ready"):
                # A computation or transfer of the same key owns it; the put
                # value is dropped (the shell stored it before telling us).
                self.out.append(DeleteData((key,), e.stimulus_id))
                continue
            if ts.state == "fetch":
                self.transition(ts, "released")
            ts.nbytes = nbytes
            ts.scheduler_holds = True
            ts.run_id = m.NO_RUN  # scattered: no stale report's FreeKeys may drop it
            if ts.state != "memory":
                self.transition(ts, "memory")

    # ------------------------------------------------------------- validation

    def validate(self) -> None:
        """Cross-check every index (raises InvariantError with the task's story)."""
        validation.validate(self)


# ---------------------------------------------------------------- transitions


def _to_fetch(w: WorkerState, ts: WorkerTask) -> None:
    if w._add_fetch(ts):
        ts.state = "fetch"


def _fetch_to_flight(w: WorkerState, ts: WorkerTask) -> None:
    w._remove_fetch(ts)
    ts.state = "flight"


def _flight_to_memory(w: WorkerState, ts: WorkerTask) -> None:
    ts.coming_from = None
    _to_memory(w, ts)


def _to_memory(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "memory"
    for dts in ts.dependents:
        if ts in dts.waiting_for_data:
            del dts.waiting_for_data[ts]
            if not dts.waiting_for_data and dts.state == "waiting":
                w.transition(dts, "ready")


def _fetch_to_released(w: WorkerState, ts: WorkerTask) -> None:
    w._remove_fetch(ts)
    ts.state = "released"


def _flight_to_released(w: WorkerState, ts: WorkerTask) -> None:
    ts.coming_from = None
    ts.state = "released"


def _to_waiting(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "waiting"


def _to_ready(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "ready"
    w._seq += 1
    ts.ready_seq = w._seq
    heapq.heappush(w.ready, (ts.priority, w._seq, ts))
    w.n_ready += 1


def _ready_to_executing(w: WorkerState, ts: WorkerTask) -> None:
    ts.ready_seq = -1
    w.n_ready -= 1
    ts.state = "executing"
    w.executing[ts] = None
    for r, q in ts.resources.items():
        w.available_resources[r] -= q
    deps = tuple(d.key for d in ts.dependencies)
    if ts.announce:
        w.announced.append(ts.key)
    w.out.append(Execute(ts.key, ts.run_spec, deps, ts.announce, w._stimulus))


def _executing_to_cancelled(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "cancelled"
    _drop_inputs(w, ts)


def _cancelled_to_executing(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "executing"


def _to_error(w: WorkerState, ts: WorkerTask) -> None:
    ts.state = "error"
    _drop_inputs(w, ts)


def _executing_to_memory(w: WorkerState, ts: WorkerTask) -> None:
    _to_memory(w, ts)
    _drop_inputs(w, ts)


def _drop_inputs(w: WorkerState, ts: WorkerTask) -> None:
    """ts no longer reads its inputs: free those nobody else needs."""
    ts.waiting_for_data.clear()
    for dts in list(ts.dependencies):
        w._release_if_unneeded(dts)


def _forget(w: WorkerState, ts: WorkerTask) -> None:
    state = ts.state
    if state == "ready":
        ts.ready_seq = -1
        w.n_ready -= 1
    elif state == "fetch":
        w._remove_fetch(ts)
    elif state == "flight":
        # The reply will arrive and be discarded (GatherDepSuccess checks identity).
        ts.coming_from = None
    elif state == "memory":
        w.out.append(DeleteData((ts.key,), w._stimulus))
    ts.state = "forgotten"
    ts.waiting_for_data.clear()
    del w.tasks[ts.key]
    for dts in list(ts.dependencies):
        dts.dependents.pop(ts, None)
        w._release_if_unneeded(dts)
    for dts in list(ts.dependents):
        # A forgotten input may not stay referenced.
        dts.dependencies.pop(ts, None)
        if ts in dts.waiting_for_data:
            # A dependent waiting for it here can no longer get it (its local
            # computation failed or was freed): hand it back to the scheduler
            # rather than leave it waiting forever.
            del dts.waiting_for_data[ts]
            if dts.state == "waiting":
                dts.assigned = False
                w._send(m.RescheduleTask(w.address, dts.key, dts.run_id, w._stimulus))
                w.transition(dts, "forgotten")
    ts.dependencies.clear()
    ts.dependents.clear()


TRANSITIONS: Final[dict[tuple[str, str], Callable[[WorkerState, WorkerTask], None]]] = {
    ("released", "fetch"): _to_fetch,
    ("released", "waiting"): _to_waiting,
    ("released", "ready"): _to_ready,
    ("released", "memory"): _to_memory,
    ("released", "forgotten"): _forget,
    ("fetch", "flight"): _fetch_to_flight,
    ("fetch", "forgotten"): _forget,
    ("fetch", "released"): _fetch_to_released,
    ("flight", "released"): _flight_to_released,
    ("flight", "memory"): _flight_to_memory,
    ("flight", "forgotten"): _forget,
    ("waiting", "ready"): _to_ready,
    ("waiting", "forgotten"): _forget,
    ("ready", "executing"): _ready_to_executing,
    ("ready", "forgotten"): _forget,
    ("executing", "memory"): _executing_to_memory,
    ("executing", "error"): _to_error,
    ("executing", "cancelled"): _executing_to_cancelled,
    ("cancelled", "executing"): _cancelled_to_executing,
    ("cancelled", "forgotten"): _forget,
    ("cancelled", "memory"): _executing_to_memory,
    ("memory", "forgotten"): _forget,
    ("error", "forgotten"): _forget,
}
