"""SchedulerState: the scheduler's whole mind, as a pure state machine.

``handle(event) -> list[instruction]`` is the only entry point that changes
state. Handlers translate an event into transitions (see transitions.py);
transitions recommend further transitions, which run in a loop until none are
left; then workers that gained room are refilled from the ready queue.
Nothing here performs I/O or reads a clock: time arrives in events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from teamster.core import messages as m
from teamster.core.scheduler import intake, suspicion, validation
from teamster.core.scheduler import transitions as tr
from teamster.core.scheduler.entities import (
    ClientInfo,
    IdleRing,
    TaskPrefix,
    TaskState,
    WorkerInfo,
    WorkerSlots,
    holding_order,
)
from teamster.core.scheduler.events import RetireWorkers, Tick
from teamster.core.scheduler.instructions import (
    CloseWorker,
    SchedulerInstruction,
    SendToClient,
    SendToWorker,
)
from teamster.core.scheduler.load_index import NOT_INDEXED, LoadIndex
from teamster.core.scheduler.placement import (
    LARGE_TRANSFER,
    UNKNOWN_DURATION,
    Placement,
    start_fetching_inputs,
)
from teamster.core.scheduler.ready_queue import ReadyQueue
from teamster.core.scheduler.report import BalanceReport
from teamster.core.scheduler.retire import Retirement
from teamster.core.scheduler.stealing import Stealing
from teamster.core.scheduler.validation import validate_state, validate_task
from teamster.core.scheduler.worklists import Recommendations, Stack
from teamster.core.story import InvalidTransition, StoryEntry
from teamster.core.transition_log import TransitionLog

#: A task running this long, and over twice its estimate, blocks its thread:
#: once every thread of a worker is blocked, its queued tasks are taken back.
STUCK_AFTER: Final = 0.1
#: Result type names kept one copy each (``type_names``); past this many
#: distinct names (a workload returning generated classes), each result
#: keeps its own.
MAX_TYPE_NAMES: Final = 1_000



class SchedulerState:
    def __init__(
        self,
        *,
        validate: bool = False,
        heartbeat_timeout: float = 60.0,
        transition_log_length: int = 100_000,
    ) -> None:
        #: Every task the scheduler knows, by key (forgotten tasks are removed).
        self.tasks: dict[m.Key, TaskState] = {}
        #: Connected workers by address.
        self.workers: dict[str, WorkerInfo] = {}
        #: The same workers by their user-facing name (names are unique).
        self.workers_by_name: dict[str, WorkerInfo] = {}
        #: The same workers by number (``TaskFinished.worker_slot``).
        self.worker_slots = WorkerSlots()
        self.clients: dict[str, ClientInfo] = {}
        self.prefixes: dict[str, TaskPrefix] = {}
        #: One copy of each result type name (see ``_task_finished``).
        self.type_names: dict[str, str] = {}
        self._last_type_name = ""
        #: Workers with room for more tasks (not saturated), in rotation order.
        #: Placement's least-loaded candidates come from here: under late
        #: binding every idle worker's queue is under one round trip, so
        #: taking them in turn spreads work as well as ordering them by load
        #: would, at a fraction of the cost (load_index.py orders the victims).
        self.idle = IdleRing()
        #: Workers with tasks queued beyond their threads, by load (steal victims).
        self.victims = LoadIndex()
        #: Workers that stopped being victims during this event, still filed
        #: in ``victims`` until it ends (``settle_victims``).
        self._leaving_victims: Stack[WorkerInfo] = Stack()
        self.total_threads = 0
        #: Tasks assigned to workers, over all workers.
        self.n_processing = 0
        #: Restricted ready tasks that no connected worker may run.
        self.unrunnable: dict[TaskState, None] = {}
        #: Ready unrestricted tasks waiting for room, highest priority first.
        self.queue = ReadyQueue()
        self.n_queued = 0
        #: The last ``run_id`` given to an assignment (they are never reused).
        self.run_ids = 0
        self.generation = 0
        self.placement = Placement(self)
        self._is_saturated = self.placement.is_saturated
        self.stealing = Stealing(self)
        self.retirement = Retirement(self)
        self.report = BalanceReport()
        self.heartbeat_timeout = heartbeat_timeout
        self.log = TransitionLog(transition_log_length)
        self.validate_enabled = validate
        #: Instructions produced by the event being handled.
        self.out: list[SchedulerInstruction] = []
        # The per-event worklists are stacks with a flag (or index) on each
        # member, not dicts: a dict filled and emptied every event
        # reallocated its table, and a removal and re-insertion per
        # recommendation took two generic method calls (10.6% of the
        # instructions per task, compiled, counted by callgrind).
        #: Pending recommendations, last in, first out (worklists.py).
        self._recs = Recommendations()
        #: Workers that may have room (each with ``refill`` set; see ``freed``).
        self._freed: Stack[WorkerInfo] = Stack()
        #: The worker that reported a result in this event, and that task
        #: (see _fill_with_readers). One per event at most.
        self._hint_worker: WorkerInfo | None = None
        self._hint_task: TaskState | None = None
        self._touched: dict[TaskState, None] = {}
        self._events_since_full_validation = 0
        self.n_events = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.RegisterClient: self._register_client,
            m.RemoveClient: self._remove_client,
            m.UpdateGraph: self._update_graph,
            m.ReleaseKeys: self._release_keys,
            m.CancelKeys: self._cancel_keys,
            m.ScatteredData: self._scattered_data,
            m.RegisterWorker: self._register_worker,
            m.RemoveWorker: self._remove_worker,
            m.Heartbeat: self._heartbeat,
            m.TaskFinished: self._task_finished,
            m.TasksStarted: self._tasks_started,
            m.TaskErred: self._task_erred,
            m.AddKeys: self._add_keys,
            m.MissingData: self._missing_data,
            m.RescheduleTask: self._reschedule,
            m.StealResponse: self._steal_response,
            m.WorkerStatus: self._worker_status,
            Tick: self._tick,
            RetireWorkers: self.retirement.retire,
            m.ReplicasNotAcquired: self.retirement.not_acquired,
        }

    # ------------------------------------------------------------------ driver

    def handle(self, event: Any) -> list[SchedulerInstruction]:
        """Apply one event; return what the shell must do, in order."""
        out: list[SchedulerInstruction] = []
        self.out = out
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"SchedulerState cannot handle {type(event).__name__}")
        self.n_events += 1
        handler(event)
        if self.retirement.retiring:
            self.retirement.after_event(event)
        if self._recs.top or self._freed.n:
            stimulus_id = event.stimulus_id  # (read once: see _task_finished)
            if self._recs.top:
                self._run_recommendations(stimulus_id)
            if self._freed.n:
                self._fill_freed(stimulus_id)
        if self._hint_worker is not None:
            self._hint_worker = self._hint_task = None
        if self._leaving_victims.n:
            self.settle_victims()
        if self.validate_enabled:
            self._validate_after_event()
        self.out = []
        return out

    def recommend(self, ts: TaskState, finish: str) -> None:
        # On top, replacing any earlier one (left below, stale): recommendations
        # run last in, first out, and the latest recommendation's position is
        # what callers order by priority.
        self._recs.push(ts, finish)

    def transition(self, ts: TaskState, finish: str, stimulus_id: str) -> None:
        start = ts.state
        if start == finish:
            return
        if not tr.make(self, ts, start, finish, stimulus_id):
            raise InvalidTransition(ts.key, start, finish, self.story(ts.key))
        self.log.append(ts.key, start, ts.state, stimulus_id)
        if self.validate_enabled:
            # Only validation reads (and clears) it; kept otherwise it would
            # pin every task ever seen (found by teamster.sim at 1M tasks).
            self._touched[ts] = None

    def _run_recommendations(self, stimulus_id: str) -> None:
        # transition() inlined: this loop runs ~5 times per task and the
        # extra call and table lookup were ~2 us of the ~30 us per task
        # measured at 1,000 simulated workers.
        recs = self._recs
        log = self.log
        validating = self.validate_enabled
        while recs.top:
            ts, finish = recs.pop()
            if ts.rec_index != recs.top:
                continue  # replaced by a later recommendation, run already
            ts.rec_index = -1
            start = ts.state
            if start == finish or start == "forgotten":
                continue
            if not tr.make(self, ts, start, finish, stimulus_id):
                # Overtaken by a later transition (e.g. a dependent recommended
                # for processing was released meanwhile): record and drop.
                log.append(ts.key, start, f"skip:{finish}", stimulus_id)
                continue
            log.append(ts.key, start, ts.state, stimulus_id)
            if validating:
                self._touched[ts] = None

    def _fill_freed(self, stimulus_id: str) -> None:
        """Workers that gained room take the highest-priority queued tasks."""
        freed = self._freed
        while freed.n:
            ws = freed.pop()
            ws.refill = False
            if not ws.connected:
                continue
            self.placement.filling = ws
            hint = None
            if ws is self._hint_worker:
                hint = self._hint_task
                self._hint_worker = self._hint_task = None
            if hint is not None and self.n_queued:
                self._fill_with_readers(ws, hint, stimulus_id)
            while ws.is_idle and self.n_queued:
                ts = self._pop_queue()
                if ts is None:
                    break
                self.transition(ts, "processing", stimulus_id)
                if ts.state == "queued":  # nowhere to go after all
                    self.push_queue(ts)
                    break
            self.placement.filling = None
            if (not self.n_queued and self.victims
                    and ws.n_processing + ws.n_incoming < ws.nthreads):
                # Dry (a thread with nothing to run), and nothing waits in the
                # scheduler: take queued work from the most backlogged workers
                # now, not at the next tick.
                self.stealing.balance(ws, stimulus_id)
            self._run_recommendations(stimulus_id)

    def _fill_with_readers(self, ws: WorkerInfo, done: TaskState, stimulus_id: str) -> None:
        """``ws`` just ran ``done``: first offer it the queued readers of the
        large inputs ``done`` read there, whatever their place in the queue.

        Without this a freed holder of one large input took the head of the
        queue, a reader of another holder's input, and fetched it, while the
        readers of its own input waited for copies elsewhere (the simulator's
        balance-large-inputs: half the workers waiting for data during the
        first 15% of the run). O(inputs of ``done``) per refill.
        """
        for dts in done.dependencies:
            if dts.nbytes < LARGE_TRANSFER:
                # No queued readers (``push_queue`` lists only large inputs'),
                # and ``nbytes`` is on a line this finish reads anyway; the
                # readers' field is not (at 1,000 workers, a miss per input).
                continue
            readers = dts.queued_readers
            if not readers or not dts.has_holder(ws):
                continue
            while readers and ws.is_idle:
                ts = next(iter(readers))
                self.leave_queue(ts)
                self.transition(ts, "processing", stimulus_id)
                if ts.state == "queued":  # nowhere to go after all
                    self.push_queue(ts)
                    return

    # ------------------------------------------------------------ index upkeep

    def is_needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants or ts.n_waiters)

    def push_queue(self, ts: TaskState) -> None:
        self.queue.push(ts)
        self.n_queued += 1
        for dts in ts.dependencies:
            if dts.nbytes >= LARGE_TRANSFER:
                if dts.queued_readers is None:
                    dts.queued_readers = {}
                dts.queued_readers[ts] = None

    def _pop_queue(self) -> TaskState | None:
        ts = self.queue.pop()
        if ts is not None:
            self._left_queue(ts)
        return ts

    def leave_queue(self, ts: TaskState) -> None:
        """A queued task leaves the queue by another route than its turn."""
        self.queue.remove(ts)
        self._left_queue(ts)

    def _left_queue(self, ts: TaskState) -> None:
        self.n_queued -= 1
        for dts in ts.dependencies:
            if dts.queued_readers:
                dts.queued_readers.pop(ts, None)

    def update_idle(self, ws: WorkerInfo) -> None:
        """Refile ``ws`` in the idle set and the load indices after its load changed."""
        if not ws.connected:
            return
        if self._is_saturated(ws):
            if ws.is_idle:
                self.idle.remove(ws)
        elif not ws.is_idle:
            self.idle.add(ws)
        if ws.spare_tasks() > 0:
            self.victims.set(ws, ws.occupancy / ws.nthreads)
        elif ws.load_bucket != NOT_INDEXED:
            # Not now: a worker that finished a task mostly gets the next
            # one in the same event, and is a victim again in the same bucket.
            # Taking it out and filing it back were two operations on a
            # bucket of up to every worker: cold cache lines at 1,000 workers.
            if not ws.leaving_victims:
                ws.leaving_victims = True
                self._leaving_victims.push(ws)

    def settle_victims(self) -> None:
        """Take the workers that stopped being victims out of ``victims``.

        Runs before anything reads the index (stealing) and when the event ends.
        """
        leaving = self._leaving_victims
        while leaving.n:
            ws = leaving.pop()
            ws.leaving_victims = False
            if ws.load_bucket != NOT_INDEXED and ws.spare_tasks() <= 0:
                self.victims.discard(ws)

    def freed(self, ws: WorkerInfo) -> None:
        """``ws`` may have room: refill it (from the queue, or by stealing) after this event."""
        if not ws.refill:
            ws.refill = True
            self._freed.push(ws)

    def assign(self, ts: TaskState, ws: WorkerInfo, stimulus_id: str) -> None:
        duration = ts.prefix.duration_average  # (placement.estimate_duration, inlined)
        if duration is None:
            duration = UNKNOWN_DURATION
        ts.state = "processing"
        ts.processing_on = ws
        self.run_ids += 1
        ts.run_id = self.run_ids
        ts.estimate = duration
        ws.add_processing(ts)
        ws.occupancy += duration
        self.n_processing += 1
        if start_fetching_inputs(ts, ws):
            ts.reads_large = True
            ws.n_large_readers += 1
        self.update_idle(ws)
        self.out.append(SendToWorker(ws.address, tr.compute_message(self, ts, stimulus_id)))

    def unassign(self, ts: TaskState, ws: WorkerInfo) -> None:
        ws.remove_processing(ts)
        ws.occupancy -= ts.estimate
        self.n_processing -= 1
        if ts.reads_large:
            ts.reads_large = False
            ws.n_large_readers -= 1
        if not ws.n_processing and not ws.n_incoming:
            ws.occupancy = 0.0  # no float drift survives an empty queue
        ts.processing_on = None
        stealing = self.stealing
        if (stealing.pending or stealing.refused) and (
                ts in stealing.pending or ts in stealing.refused):
            stealing.cancel(ts)
        self.update_idle(ws)
        self.freed(ws)

    def add_replica(self, ts: TaskState, ws: WorkerInfo) -> None:
        if not ts.add_holder(ws):
            return
        ws.has_what.add(ts)
        if ts.nbytes > 0:
            ws.nbytes += ts.nbytes
        if ts.fetching:
            ts.fetching.pop(ws, None)

    def remove_replica(self, ts: TaskState, ws: WorkerInfo) -> None:
        ts.remove_holder(ws)
        ws.has_what.remove(ts)
        if ts.nbytes > 0:
            ws.nbytes -= ts.nbytes

    def forget(self, ts: TaskState) -> None:
        del self.tasks[ts.key]

    def story(self, *keys: m.Key) -> list[StoryEntry]:
        return self.log.story(*keys)

    # ---------------------------------------------------------------- clients

    def _client(self, client_id: str, now: float = 0.0) -> ClientInfo:
        cs = self.clients.get(client_id)
        if cs is None:
            cs = self.clients[client_id] = ClientInfo(client_id, now)
        return cs

    def _register_client(self, ev: m.RegisterClient) -> None:
        known = ev.client in self.clients
        cs = self._client(ev.client, ev.now)
        cs.last_seen = ev.now
        if known:
            # A client reconnecting: reports sent while it was away were lost
            # with its connection; repeat the final ones.
            for ts in cs.wants_what:
                self._report(cs, ts, ev.stimulus_id)

    def _remove_client(self, ev: m.RemoveClient) -> None:
        cs = self.clients.get(ev.client)
        if cs is None:
            return
        self._release_for_client(cs, list(cs.wants_what))
        del self.clients[ev.client]

    def _want(self, cs: ClientInfo, ts: TaskState, stimulus_id: str) -> None:
        if ts in cs.wants_what:
            return
        cs.wants_what[ts] = None
        if ts.who_wants is None:
            ts.who_wants = {}
        ts.who_wants[cs] = None
        self._report(cs, ts, stimulus_id)

    def _report(self, cs: ClientInfo, ts: TaskState, stimulus_id: str) -> None:
        """Tell the client the outcome of a key it wants, if there is one yet."""
        if ts.state == "memory":
            msg = m.KeyInMemory(
                ts.key, tuple(w.address for w in ts.who_has), ts.nbytes, ts.type_name, stimulus_id
            )
            self.out.append(SendToClient(cs.client_id, msg))
        elif ts.state == "erred":
            err = m.KeyErred(ts.key, ts.exception, ts.traceback, ts.exception_text, stimulus_id)
            self.out.append(SendToClient(cs.client_id, err))

    def _update_graph(self, ev: m.UpdateGraph) -> None:
        intake.update_graph(self, ev)

    def _release_for_client(self, cs: ClientInfo, tasks: list[TaskState]) -> None:
        for ts in tasks:
            if ts not in cs.wants_what:
                continue
            del cs.wants_what[ts]
            assert ts.who_wants is not None
            del ts.who_wants[cs]
            if self.is_needed(ts):
                continue
            if ts.state in ("released", "erred"):
                # An erred task with dependents stays: it explains their failure.
                if not ts.has_dependents():
                    self.recommend(ts, "forgotten")
            else:
                self.recommend(ts, "released")

    def _release_keys(self, ev: m.ReleaseKeys) -> None:
        cs = self.clients.get(ev.client)
        if cs is None:
            return
        self._release_for_client(cs, [self.tasks[k] for k in ev.keys if k in self.tasks])

    def _cancel_keys(self, ev: m.CancelKeys) -> None:
        cs = self.clients.get(ev.client)
        if cs is None:
            return
        # Cancelling a future cancels the client's futures that depend on it.
        todo = [self.tasks[k] for k in ev.keys if k in self.tasks]
        seen: dict[TaskState, None] = {}
        while todo:
            ts = todo.pop()
            if ts in seen:
                continue
            seen[ts] = None
            todo.extend(d for d in ts.dependents if d not in seen)
        cancelled = [ts for ts in seen if ts in cs.wants_what]
        for ts in cancelled:
            tr.cancel_notice(self, ts, cs.client_id, ev.stimulus_id)
        self._release_for_client(cs, cancelled)

    def _scattered_data(self, ev: m.ScatteredData) -> None:
        intake.scattered_data(self, ev)

    # ---------------------------------------------------------------- workers

    def _register_worker(self, ev: m.RegisterWorker) -> None:
        old = self.workers.get(ev.address)
        if old is not None:
            self._drop_worker(old, "re-registered", ev.stimulus_id)
        name = ev.name or ev.address
        if name in self.workers_by_name:
            self.out.append(
                CloseWorker(ev.address, f"a worker named {name!r} is already connected",
                            ev.stimulus_id)
            )
            return
        ws = WorkerInfo(
            ev.address, name, ev.nthreads, ev.memory_limit, dict(ev.resources), ev.now
        )
        self.workers[ev.address] = ws
        self.workers_by_name[name] = ws
        self.worker_slots.add(ws)
        self.total_threads += ws.nthreads
        self.report.capacity_changed(ev.now, self.total_threads)
        self.update_idle(ws)
        self.freed(ws)
        for ts in self.unrunnable:
            # A pending recommendation (e.g. "released": an input died with
            # the worker this one replaces) comes first; overriding it would
            # start a task whose input is gone.
            if ts.rec_index < 0:
                self.recommend(ts, "processing")

    def _remove_worker(self, ev: m.RemoveWorker) -> None:
        ws = self.workers.get(ev.address)
        if ws is not None:
            self._drop_worker(ws, ev.reason, ev.stimulus_id)
            self.report.capacity_changed(ev.now, self.total_threads)

    def _drop_worker(self, ws: WorkerInfo, reason: str, stimulus_id: str) -> None:
        self.report.worker_left(ws)
        del self.workers[ws.address]
        del self.workers_by_name[ws.name]
        self.worker_slots.remove(ws)
        self.total_threads -= ws.nthreads
        ws.connected = False
        if ws.is_idle:
            self.idle.remove(ws)
        self.victims.discard(ws)
        # (Left in ``_leaving_victims`` and ``_freed``: out of the index and
        # disconnected, it is passed over there.)
        suspicion.release_lost_tasks(self, ws, reason, stimulus_id)
        for ts in sorted(ws.has_what, key=holding_order):
            self.remove_replica(ts, ws)
            if not ts.n_holders() and ts.state == "memory":
                self.transition(ts, "released", stimulus_id)

    def _heartbeat(self, ev: m.Heartbeat) -> None:
        ws = self.workers.get(ev.address)
        if ws is None:
            return
        ws.last_seen = ev.now
        ws.metrics = dict(ev.metrics)
        suspicion.heard_from(self, ws, ev)
        changed = False
        stuck = 0
        for key, elapsed in ev.executing:
            ts = self.tasks.get(key)
            if ts is None or ts.processing_on is not ws:
                continue
            estimate = ts.estimate
            if elapsed > 2 * estimate and elapsed > STUCK_AFTER:
                stuck += 1
            if elapsed <= estimate:
                continue
            # Running past its estimate: it will take at least this long, and
            # so may the rest of its prefix (raised now, not when it ends).
            ts.estimate = elapsed
            ws.occupancy += elapsed - estimate
            changed = True
            prefix = ts.prefix
            if prefix.duration_average is None or elapsed > 2 * prefix.duration_average:
                prefix.duration_average = elapsed
        if changed:
            self.update_idle(ws)
        if stuck >= ws.nthreads and ws.spare_tasks() > 0:
            self.stealing.take_back(ws, ev.stimulus_id)

    def _worker_status(self, ev: m.WorkerStatus) -> None:
        ws = self.workers.get(ev.address)
        if ws is None or ws.status == ev.status:
            return
        if ev.status not in ("running", "paused"):
            raise ValueError(f"worker {ev.address} reported unknown status {ev.status!r}")
        if self.retirement.status_reported(ws, ev.status):
            return  # retiring: it takes no work whether paused or not
        ws.status = ev.status
        self.update_idle(ws)
        if ev.status == "running":
            self.resumed(ws)

    def resumed(self, ws: WorkerInfo) -> None:
        """``ws`` takes work again (resumed, or its retirement was refused): it
        takes queued work like a worker that just joined, and the tasks that
        had nowhere to run -- perhaps only it may run them -- are placed again.
        """
        self.freed(ws)
        for ts in self.unrunnable:
            if ts.rec_index < 0:
                self.recommend(ts, "processing")

    def _tick(self, ev: Tick) -> None:
        deadline = ev.now - self.heartbeat_timeout
        for ws in [ws for ws in self.workers.values() if ws.last_seen < deadline]:
            self.out.append(CloseWorker(ws.address, "missed heartbeats", ev.stimulus_id))
            self._drop_worker(ws, f"no heartbeat for {self.heartbeat_timeout}s", ev.stimulus_id)
            self.report.capacity_changed(ev.now, self.total_threads)
        self.stealing.periodic(ev.stimulus_id)

    def _tasks_started(self, ev: m.TasksStarted) -> None:
        suspicion.tasks_started(self, ev)

    def _task_finished(self, ev: m.TaskFinished) -> None:
        # Each field is read once: the event is a record, not a compiled
        # class, and every read of one is a generic attribute lookup.
        run_id = ev.run_id
        stimulus_id = ev.stimulus_id
        # Usually the oldest task assigned to its worker: found by the
        # worker's number and the run id (unique per assignment) without
        # probing ``workers`` or ``tasks``, whose index, entry and key were
        # three cold cache lines each at 1,000 workers. A worker found so
        # has the reported run at its head, which no other worker can have
        # (run ids are never reused), so its number is not stale. The key
        # and address the worker echoes are the task's and its own:
        # validation checks.
        ws = self.worker_slots.get(ev.worker_slot)
        ts = None if ws is None else ws.first_assigned
        if ws is None or ts is None or ts.run_id != run_id:
            ws = self.workers.get(ev.worker)
            if ws is None:
                return  # a late message from a worker already removed
            ts = ws.first_assigned
            if ts is None or ts.run_id != run_id:
                ts = self.tasks.get(ev.key)
        if self.validate_enabled:
            validation.check_finished_report(ev, ws, ts)
        for keys, nbytes in ev.transfers:  # (they landed before it finished)
            self.report.transfer(nbytes)
            self._add_replicas(ws, keys, stimulus_id)
        if ts is None or ts.processing_on is not ws or ts.run_id != run_id:
            # Released, cancelled, re-placed or computed elsewhere meanwhile:
            # the result is not wanted here. Not even as a replica of a key in
            # memory: the FreeKeys that released it here may be crossing this
            # message, and would delete the copy the scheduler counted.
            if ts is not None and ts.processing_on is ws:
                # An earlier run's result, crossing the FreeKeys and the new
                # ComputeTask sent since: the worker runs the key again (or
                # has adopted the new run_id) and will answer for the new
                # run. Freeing here would cancel that run.
                return
            if ts is None or not ts.has_holder(ws):
                # Only that run's result: a copy the worker acquires meanwhile
                # (for a retirement, say) must survive this.
                self.out.append(SendToWorker(
                    ws.address, m.FreeKeys((ev.key,), stimulus_id, run_id)))
            return
        self._hint_worker = ws
        self._hint_task = ts
        stop = ev.stop
        if stop:  # (0: not run here, e.g. its value was fetched instead)
            duration = ev.duration
            ts.prefix.add_duration(duration)
            ws.executed += 1
            ws.busy_time += duration
            self.report.task_done(ts, duration, stop)
        ts.nbytes = ev.nbytes
        ts.type_name = self._one_copy(ev.type_name)
        self.transition(ts, "memory", stimulus_id)

    def _one_copy(self, name: str) -> str:
        """The scheduler's copy of a result's type name.

        The message's name is a new string per result: kept per task, it was
        a million strings at a million tasks, each freed cold at the end.
        (Compared with the last one first: hashing the new string for a
        lookup cost more than the rest of this.)
        """
        kept = self._last_type_name
        if name != kept:
            found = self.type_names.get(name)
            if found is not None:
                kept = found
            else:
                kept = name
                if len(self.type_names) < MAX_TYPE_NAMES:
                    self.type_names[name] = name
            self._last_type_name = kept
        return kept

    def _task_erred(self, ev: m.TaskErred) -> None:
        ws = self.workers.get(ev.worker)
        ts = self.tasks.get(ev.key)
        if ws is None or ts is None or ts.processing_on is not ws or ts.run_id != ev.run_id:
            return  # an earlier assignment's failure (see _task_finished)
        ws.executed += 1
        ws.busy_time += ev.duration
        if ts.retries > 0:
            ts.retries -= 1
            self.transition(ts, "released", ev.stimulus_id)
            return
        ts.exception = ev.exception
        ts.traceback = ev.traceback
        ts.exception_text = ev.exception_text
        ts.exception_blame = ts
        self.transition(ts, "erred", ev.stimulus_id)

    def _add_keys(self, ev: m.AddKeys) -> None:
        ws = self.workers.get(ev.worker)
        if ws is None:
            return
        if ev.nbytes:
            self.report.transfer(ev.nbytes)
            if ev.nbytes >= LARGE_TRANSFER:
                self.placement.learn_transfer(ev.source, ws, ev.nbytes, ev.seconds)
        self._add_replicas(ws, ev.keys, ev.stimulus_id)

    def _add_replicas(self, ws: WorkerInfo, keys: tuple[m.Key, ...], stimulus_id: str) -> None:
        unknown = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                self.add_replica(ts, ws)
            elif ts is None or ts.processing_on is not ws:
                # Released meanwhile: the copy is not wanted. (A key assigned
                # to this very worker is left alone: its TaskFinished follows.)
                unknown.append(key)
        if unknown:
            # Only the copies it reported: a client may scatter a new value
            # under such a key to it before this arrives.
            self.out.append(SendToWorker(
                ws.address, m.FreeKeys(tuple(unknown), stimulus_id, m.FETCHED_COPY)))

    def _missing_data(self, ev: m.MissingData) -> None:
        ts = self.tasks.get(ev.key)
        errant = self.workers.get(ev.errant_worker)
        if ts is None or errant is None or not ts.has_holder(errant):
            return
        self.remove_replica(ts, errant)
        if not ts.n_holders() and ts.state == "memory":
            self.transition(ts, "released", ev.stimulus_id)

    def _steal_response(self, ev: m.StealResponse) -> None:
        self.stealing.response(ev)

    def _reschedule(self, ev: m.RescheduleTask) -> None:
        ts = self.tasks.get(ev.key)
        ws = self.workers.get(ev.worker)
        if (ts is not None and ws is not None and ts.processing_on is ws
                and ts.run_id == ev.run_id):
            self.transition(ts, "released", ev.stimulus_id)

    # ------------------------------------------------------------- reporting

    def worker_info(self) -> dict[str, dict[str, Any]]:
        return {
            addr: {
                "name": ws.name,
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "resources": dict(ws.resources),
                "processing": ws.n_processing,
                "in_memory": len(ws.has_what),
                "nbytes": ws.nbytes,
                "executed": ws.executed,
                "busy_time": ws.busy_time,
                "metrics": dict(ws.metrics),
                "last_seen": ws.last_seen,
                "status": ws.status,
            }
            for addr, ws in self.workers.items()
        }

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ts in self.tasks.values():
            out[ts.state] = out.get(ts.state, 0) + 1
        return out

    # ------------------------------------------------------------- validation

    def validate(self) -> None:
        """Cross-check every index; raises InvariantError with the story."""
        validate_state(self)

    def _validate_after_event(self) -> None:
        for ts in self._touched:
            if ts.state != "forgotten":
                validate_task(self, ts)
        self._touched.clear()
        self.retirement.validate()
        # Full checks cost O(tasks + workers); amortise them so validation
        # stays affordable on large graphs (every event while small).
        self._events_since_full_validation += 1
        size = len(self.tasks) + len(self.workers)
        if self._events_since_full_validation * 50 >= size:
            self._events_since_full_validation = 0
            validate_state(self)
