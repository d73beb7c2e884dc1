"""What the scheduler knows about tasks, workers and clients.

Collections of entities are dicts used as ordered sets (``dict[X, None]``):
iteration follows insertion order, so no instruction order ever depends on
hash randomisation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, Final, TypeVar

from teamster.core.messages import Key, Priority, Serialized

#: Every state a scheduler-side task can be in.
TASK_STATES: Final = (
    "released",  # known, not needed now or not yet started
    "waiting",  # needed; some dependencies are not in memory yet
    "queued",  # ready; waiting in the scheduler's queue for a worker slot
    "no-worker",  # ready, but no connected worker satisfies its restrictions
    "processing",  # assigned to a worker
    "memory",  # result held by one or more workers
    "erred",  # failed, or a dependency failed
    "forgotten",  # removed from the scheduler; a terminal pseudo-state
)


class TaskPrefix:
    """Tasks sharing a key prefix ("inc", "read-parquet"): their duration estimate."""

    __slots__ = ("name", "duration_average", "n_measured")

    def __init__(self, name: str) -> None:
        self.name = name
        #: Exponentially weighted mean of measured durations; None until one finishes.
        self.duration_average: float | None = None
        self.n_measured = 0

    def add_duration(self, duration: float) -> None:
        if self.duration_average is None:
            self.duration_average = duration
        else:
            # A short memory: prefixes drift (caches warm, inputs grow).
            self.duration_average = 0.5 * self.duration_average + 0.5 * duration
        self.n_measured += 1


_T = TypeVar("_T")


def _one_or_all(one: _T | None, more: dict[_T, None] | None) -> Collection[_T]:
    """Members kept as ``TaskState`` keeps dependents: the only one
    directly, or from a second on all of them in ``more``. (For the
    readers that are not hot: the hot ones read the two fields, building
    no collection.)"""
    if more is not None:
        return more
    return () if one is None else (one,)


class TaskState:
    # Field order is memory layout: compiled, the order of assignment in
    # ``__init__``; interpreted, ``__slots__`` (keep the two alike).
    # Compiled, the record is 360 bytes; with the collector's 16-byte
    # header each takes exactly 384 bytes (six cache lines) of a pymalloc
    # pool, so every record starts on a line: fields 0-4 share the line of
    # the reference count, then eight fields per line. At 1,000 workers a
    # record is cold whenever it is read, so each line read is a miss:
    # - line 0 (with the reference count, which any loop reaching the task
    #   touches): what an input's dependents and a dependent's inputs read
    #   (state, the two counts, the critical path);
    # - line 1: the rest of what releasing an input reads;
    # - line 2: what its own assignment and completion read;
    # - then the submission's, the queue's and the rare fields.
    # Two bools side by side pack into one slot: the record shrinks by 8
    # bytes and loses the alignment, so keep them apart. (Callgrind,
    # compiled core: 1.7 fewer misses per task at 10 and at 1,000 workers
    # than the previous order, which assumed no alignment.)
    __slots__ = (
        "state",
        "n_waiting",
        "n_waiters",
        "critical_path",
        "computation",
        "who_wants",
        "key",
        "rec_index",
        "nbytes",
        "holder",
        "holder2",
        "fetching",
        "dependent",
        "more_holders",
        "run_id",
        "processing_on",
        "prefix",
        "estimate",
        "prev_here",
        "next_here",
        "dependencies",
        "reads_large",
        "type_name",
        "needs_inputs",
        "more_dependents",
        "queued_readers",
        "run_spec",
        "lost_runs",
        "worker_restrictions",
        "resource_restrictions",
        "queue_seq",
        "queue_index",
        "q_user",
        "q_generation",
        "q_order",
        "allow_other_workers",
        "priority_kept",
        "retries",
        "suspicious",
        "exception",
        "traceback",
        "exception_text",
        "exception_blame",
    )

    def __init__(self, key: Key, prefix: TaskPrefix, run_spec: Serialized | None) -> None:
        self.state = "released"
        #: How many dependencies are not in memory; non-zero only while
        #: waiting. A count, not a set: it is checked each time an input
        #: lands, and a set would be one more cold object to read then.
        self.n_waiting = 0
        #: How many dependents still need this task's result (not yet run,
        #: not released): those with ``needs_inputs``. A count for the same
        #: reason as ``n_waiting``.
        self.n_waiters = 0
        #: Longest chain of measured durations ending here, within ``computation``.
        self.critical_path = 0.0
        #: The computation (balance report) it last finished in.
        self.computation = 0
        #: Clients holding a future for this key.
        #: None until a client wants it (most tasks never are): one dict
        #: less per task to allocate and to miss in cache when checked.
        self.who_wants: dict[ClientInfo, None] | None = None
        self.key = key
        #: Its pending recommendation's slot in ``SchedulerState._recs``;
        #: -1 when none is pending (see ``SchedulerState.recommend``).
        self.rec_index = -1
        self.nbytes = -1
        # The workers holding its result (``who_has`` gives them all, in the
        # order they got it; some iff state == "memory"). Most results have
        # one holder, held in ``holder``, and most copied ones two, the
        # second in ``holder2`` (set only beside ``holder``); from a third
        # on, ``more_holders`` holds them all, and the two fields are None.
        # A dict per result was an object (and a table) per task to
        # allocate when it finished and to free, cold, when the graph was
        # forgotten; the dict per copied input was created, iterated and
        # freed cold at 1,000 workers (about two misses per task on the
        # million, counted; the change saved 0.5 net, and 2.5% of the
        # instructions).
        self.holder: WorkerInfo | None = None
        self.holder2: WorkerInfo | None = None
        #: Workers assigned a task that reads this (large) result and not yet
        #: holding it: transfers of it under way. None until there is one.
        self.fetching: dict[WorkerInfo, None] | None = None
        # Its dependents (``dependents`` gives them all, in the order they
        # were linked): most tasks have exactly one, held in ``dependent``;
        # from a second on, ``more_dependents`` holds them all. A dict per
        # task, as before, was two objects per task to allocate, to read
        # cold and to free (~8 cache misses per task at a million tasks).
        self.dependent: TaskState | None = None
        # (See ``holder``: read only when ``holder`` is None, so not beside it.)
        self.more_holders: dict[WorkerInfo, None] | None = None
        #: The current assignment's id (see ``ComputeTask.run_id``); results
        #: carrying another id answer an earlier assignment and are stale.
        self.run_id = -1
        #: The worker running it; set iff state == "processing".
        self.processing_on: WorkerInfo | None = None
        self.prefix = prefix
        #: While processing: the duration counted in its worker's occupancy
        #: (the estimate when assigned, raised while it runs past it). Here,
        #: not as a value in a per-worker dict: a float there was one
        #: more object to allocate per assignment and to miss in cache when
        #: the task finished.
        self.estimate = 0.0
        #: While processing: its neighbours in its worker's tasks, in
        #: assignment order (see ``WorkerInfo.first_assigned``).
        self.prev_here: TaskState | None = None
        self.next_here: TaskState | None = None
        #: Tasks whose results this task needs, without repeats; mirrored by
        #: their ``dependents``. Fixed at submission, so a tuple: one small
        #: allocation instead of a dict (at a million tasks the scheduler's
        #: cost per task is mostly cache misses on its own objects).
        self.dependencies: tuple[TaskState, ...] = ()
        #: While processing: it reads a large input (counted in its worker's
        #: ``n_large_readers``). A flag here, not a set on the worker: that
        #: set's object and table were two or three more cold cache lines
        #: per task at 1,000 workers, touched when it was assigned and again
        #: when it finished.
        self.reads_large = False
        self.type_name = ""
        #: It counts in its dependencies' ``n_waiters``: set when it starts
        #: waiting, cleared when it leaves the pending states.
        self.needs_inputs = False
        # Its second and later dependents (see ``dependent``): read only when
        # ``dependent`` is None, so not beside it.
        self.more_dependents: dict[TaskState, None] | None = None
        #: Queued tasks reading this (large) result, in queue order: a worker
        #: holding it takes these first when it frees up. None until there is one.
        self.queued_readers: dict[TaskState, None] | None = None
        #: Opaque callable and arguments; None for data that was scattered.
        self.run_spec = run_spec
        #: How many workers died while it was assigned to them (running or
        #: queued). Once one has, its start is announced (``ComputeTask.announce``).
        self.lost_runs = 0
        #: Worker addresses or names it may run on; None means anywhere.
        self.worker_restrictions: frozenset[str] | None = None
        self.resource_restrictions: dict[str, float] | None = None
        #: While queued: when it was queued (ties in priority go first in,
        #: first out) and its position in the ready queue's heap; else -1.
        self.queue_seq = -1
        self.queue_index = -1
        #: ``priority`` as native numbers (ready_queue.py says why).
        self.q_user = 0.0
        self.q_generation = 0
        self.q_order = 0.0
        self.allow_other_workers = False
        #: The priority as given, when its numbers are not ints that survive
        #: as floats (see ``priority``); else empty.
        self.priority_kept: Priority = ()
        self.retries = 0
        #: How many workers died while running it.
        self.suspicious = 0
        self.exception: Serialized | None = None
        self.traceback: Serialized | None = None
        self.exception_text = ""
        #: The task whose failure made this one fail (itself if it raised).
        self.exception_blame: TaskState | None = None

    @property
    def priority(self) -> Priority:
        """(-user priority, submission, order): sent to the worker.

        Rebuilt from its numeric copy (``q_user`` to ``q_order``, which the
        ready queue orders by), not kept as a tuple per task: a tuple and
        the int in it were two more objects per task to allocate at
        submission and to free, cold, at the end (each freed object also
        unlinks from the garbage collector's list, touching two more).
        """
        kept = self.priority_kept
        if kept:
            return kept
        return (int(self.q_user), self.q_generation, int(self.q_order))

    def __repr__(self) -> str:
        return f"<Task {self.key!r} {self.state}>"

    @property
    def dependents(self) -> Collection[TaskState]:
        """The tasks that read this one's result, in the order they were linked."""
        return _one_or_all(self.dependent, self.more_dependents)

    def has_dependents(self) -> bool:
        return self.dependent is not None or bool(self.more_dependents)

    def add_dependent(self, ts: TaskState) -> None:
        more = self.more_dependents
        if more is not None:
            more[ts] = None
        elif self.dependent is None:
            self.dependent = ts
        elif self.dependent is not ts:
            self.more_dependents = {self.dependent: None, ts: None}
            self.dependent = None

    def remove_dependent(self, ts: TaskState) -> None:
        more = self.more_dependents
        if more is not None:
            del more[ts]
        elif self.dependent is ts:
            self.dependent = None
        else:
            raise KeyError(ts)

    @property
    def who_has(self) -> Collection[WorkerInfo]:
        """The workers holding its result, in the order they got it (read-only)."""
        holder = self.holder
        if holder is not None:
            holder2 = self.holder2
            return (holder,) if holder2 is None else (holder, holder2)
        more = self.more_holders
        return () if more is None else more

    # (``holder`` first: while it is set, ``more_holders`` is None and its
    # cache line need not be read.)

    def n_holders(self) -> int:
        if self.holder is not None:
            return 1 if self.holder2 is None else 2
        more = self.more_holders
        return 0 if more is None else len(more)

    def has_holder(self, ws: WorkerInfo) -> bool:
        holder = self.holder
        if holder is not None:
            return holder is ws or self.holder2 is ws
        more = self.more_holders
        return more is not None and ws in more

    def add_holder(self, ws: WorkerInfo) -> bool:
        """Count ``ws`` among the holders; False if it already was."""
        holder = self.holder
        if holder is None:
            more = self.more_holders
            if more is None:
                self.holder = ws
                return True
            if ws in more:
                return False
            more[ws] = None
            return True
        if holder is ws:
            return False
        holder2 = self.holder2
        if holder2 is None:
            self.holder2 = ws
            return True
        if holder2 is ws:
            return False
        self.more_holders = {holder: None, holder2: None, ws: None}
        self.holder = self.holder2 = None
        return True

    def remove_holder(self, ws: WorkerInfo) -> None:
        """``ws`` no longer holds the result (KeyError if it did not)."""
        holder = self.holder
        if holder is ws:
            self.holder = self.holder2  # (the order they got it in is kept)
            self.holder2 = None
        elif holder is not None:
            if self.holder2 is not ws:
                raise KeyError(ws)
            self.holder2 = None
        else:
            more = self.more_holders
            if more is None:
                raise KeyError(ws)
            del more[ws]
            if not more:
                self.more_holders = None

    @property
    def restricted(self) -> bool:
        return bool(self.worker_restrictions and not self.allow_other_workers) or bool(
            self.resource_restrictions
        )


class WorkerInfo:
    # Field order is memory layout (see TaskState): compiled, 240 bytes, so
    # with the collector's header each record fills a 256-byte block and
    # starts on a cache line. Line 0 holds, beside the reference count,
    # what releasing a result reads of each worker holding it (address,
    # ``has_what``, ``nbytes``) and what a finished task reads first; the
    # rest of a finish and an assignment reads lines 1 and 2. (A released
    # input copied from another worker read two lines of that worker, cold
    # at 1,000 workers: callgrind, 107.3 -> 104.8 misses per task there.)
    __slots__ = (
        "address",
        "has_what",
        "nbytes",
        "n_processing",
        "first_assigned",
        "last_assigned",
        "occupancy",
        "nthreads",
        "n_incoming",
        "n_outgoing",
        "status",
        "connected",
        "refill",
        "leaving_victims",
        "is_idle",
        "idle_prev",
        "idle_next",
        "load_bucket",
        "filed_load",
        "n_large_readers",
        "executed",
        "busy_time",
        "bandwidth",
        "name",
        "memory_limit",
        "resources",
        "last_seen",
        "metrics",
        "running",
        "announced",
    )

    def __init__(
        self,
        address: str,
        name: str,
        nthreads: int,
        memory_limit: int,
        resources: dict[str, float],
        now: float,
    ) -> None:
        self.address = address
        #: Results held here; mirrored by ``TaskState.who_has``. A set, not
        #: an ordered dict: added to and removed from for every result, and
        #: at 1,000 workers a dict's index, entry array and resizes were 6
        #: cache misses per task (a set probes one table). Its order is by
        #: address, so whatever goes through it in order sorts it first
        #: (``holding_order``).
        self.has_what: set[TaskState] = set()
        #: Sum of nbytes over ``has_what``.
        self.nbytes = 0
        # The tasks assigned here, in assignment order: a list threaded
        # through the tasks (``TaskState.prev_here``, ``next_here``), not a
        # dict. A dict's object and table were three or four cold cache
        # lines per assignment and again per completion at 1,000 workers;
        # linking touches at most one neighbour, and none while the worker
        # runs one task at a time. (``processing_tasks`` lists them.)
        self.n_processing = 0
        self.first_assigned: TaskState | None = None
        self.last_assigned: TaskState | None = None
        #: Sum of the ``estimate`` of its tasks: the expected seconds of work queued here.
        self.occupancy = 0.0
        self.nthreads = nthreads
        #: Tasks being stolen for it (reserved: counted in ``occupancy``).
        self.n_incoming = 0
        #: Its tasks being stolen by others (still in ``processing``).
        self.n_outgoing = 0
        #: "running", or "paused" while the worker is over its memory pause
        #: fraction: a paused worker is never idle and is assigned nothing.
        self.status = "running"
        # Its place in the scheduler's indices, kept here rather than found
        # by a lookup in them: at 1,000 workers those lookups were cache
        # misses twice per task (the worker's record is in hand anyway).
        #: In ``SchedulerState.workers`` (False once removed).
        self.connected = True
        #: In ``SchedulerState._freed``: to be refilled when the event ends.
        self.refill = False
        #: In ``SchedulerState._leaving_victims`` (see ``settle_victims``).
        self.leaving_victims = False
        #: In ``SchedulerState.idle``, between these two (see ``IdleRing``).
        self.is_idle = False
        self.idle_prev: WorkerInfo | None = None
        self.idle_next: WorkerInfo | None = None
        #: Its bucket in the victims ``LoadIndex``; -1 (``load_index.NOT_INDEXED``)
        #: while not a victim.
        self.load_bucket = -1
        #: Its load when last given to the victims index (``LoadIndex.set``):
        #: ``load_bucket`` may be higher than this load's bucket, never lower.
        self.filed_load = 0.0
        #: How many tasks of ``processing`` read a large input (those with
        #: ``reads_large``): prefetching them hides a transfer, not just a
        #: round trip (``Placement.is_saturated``).
        self.n_large_readers = 0
        #: Tasks completed here and their summed measured durations (for reports).
        self.executed = 0
        self.busy_time = 0.0
        #: Measured bandwidth of transfers to it, bytes/s (0: none measured yet).
        self.bandwidth = 0.0
        self.name = name
        self.memory_limit = memory_limit
        self.resources = resources
        self.last_seen = now
        self.metrics: dict[str, Any] = {}
        # What it runs, the tasks suspected should it die: read only then, so
        # nothing per task is kept (a per-worker set updated per task was 5
        # more cache misses per task at 1,000 simulated workers).
        #: Keys its last heartbeat said were running (replaced by each heartbeat).
        self.running: tuple[Key, ...] = ()
        #: Keys it said it started (``TasksStarted``), kept while they are
        #: assigned here (pruned at heartbeats). None: none.
        self.announced: dict[Key, None] | None = None

    def add_processing(self, ts: TaskState) -> None:
        """``ts`` is assigned here: append it to the tasks in assignment order."""
        last = self.last_assigned
        ts.prev_here = last
        ts.next_here = None
        if last is None:
            self.first_assigned = ts
        else:
            last.next_here = ts
        self.last_assigned = ts
        self.n_processing += 1

    def remove_processing(self, ts: TaskState) -> None:
        """``ts`` is no longer assigned here: unlink it."""
        prev, nxt = ts.prev_here, ts.next_here
        if prev is None:
            self.first_assigned = nxt
        else:
            prev.next_here = nxt
        if nxt is None:
            self.last_assigned = prev
        else:
            nxt.prev_here = prev
        ts.prev_here = ts.next_here = None
        self.n_processing -= 1

    def processing_tasks(self) -> list[TaskState]:
        """The tasks assigned here, oldest assignment first."""
        tasks: list[TaskState] = []
        ts = self.first_assigned
        while ts is not None:
            tasks.append(ts)
            ts = ts.next_here
        return tasks

    def newest_assigned(self, k: int) -> list[TaskState]:
        """Up to ``k`` of its tasks, the latest assigned first (what stealing takes)."""
        tasks: list[TaskState] = []
        ts = self.last_assigned
        while ts is not None and len(tasks) < k:
            tasks.append(ts)
            ts = ts.prev_here
        return tasks

    def spare_tasks(self) -> int:
        """Tasks queued here beyond one per thread and not already being
        stolen: what stealing may take. Positive iff it is a steal victim."""
        return self.n_processing - self.nthreads - self.n_outgoing

    def __repr__(self) -> str:
        return f"<Worker {self.address} processing={self.n_processing}>"


class IdleRing:
    """Workers with room for more tasks, in rotation order: a ring threaded
    through the workers (``WorkerInfo.idle_prev``, ``idle_next``).

    Placement takes its least-loaded candidates from the front and moves
    them to the back (``rotate``), so new work goes round the idle workers
    in turn. As a ring, that move is one step of ``front``: the OrderedDict
    it replaces did a lookup and a relink per candidate, and allocated and
    freed a node each time a worker came and went (about 2,000
    instructions per task, 4% of the compiled scheduler's, on ``million``).
    Adding and removing touch only the neighbours; ``is_idle`` says whether
    a worker is in.
    """

    __slots__ = ("front", "n")

    def __init__(self) -> None:
        self.front: WorkerInfo | None = None
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __contains__(self, ws: WorkerInfo) -> bool:
        return ws.is_idle

    def __iter__(self) -> Iterator[WorkerInfo]:
        return iter(self.workers())

    def add(self, ws: WorkerInfo) -> None:
        """Put ``ws`` (not in the ring) at the back."""
        front = self.front
        if front is None:
            ws.idle_prev = ws.idle_next = ws
            self.front = ws
        else:
            back = front.idle_prev
            assert back is not None
            ws.idle_prev = back
            ws.idle_next = front
            back.idle_next = front.idle_prev = ws
        ws.is_idle = True
        self.n += 1

    def remove(self, ws: WorkerInfo) -> None:
        """Take ``ws`` (in the ring) out."""
        prev, nxt = ws.idle_prev, ws.idle_next
        assert prev is not None and nxt is not None
        if nxt is ws:
            self.front = None
        else:
            prev.idle_next = nxt
            nxt.idle_prev = prev
            if self.front is ws:
                self.front = nxt
        ws.idle_prev = ws.idle_next = None
        ws.is_idle = False
        self.n -= 1

    def rotate(self, k: int) -> list[WorkerInfo]:
        """Up to ``k`` workers from the front, moved to the back."""
        taken: list[WorkerInfo] = []
        ws = self.front
        for _ in range(min(k, self.n)):
            assert ws is not None
            taken.append(ws)
            ws = ws.idle_next
        self.front = ws
        return taken

    def workers(self) -> list[WorkerInfo]:
        """Every worker in the ring, from the front (``n`` steps, so that a
        broken ring cannot loop: validation checks the links)."""
        out: list[WorkerInfo] = []
        ws = self.front
        for _ in range(self.n):
            if ws is None:
                break
            out.append(ws)
            ws = ws.idle_next
        return out


class WorkerSlots:
    """A number for each connected worker, from registration to removal.

    The worker is told its number when it registers and echoes it in every
    ``TaskFinished`` (``worker_slot``), so the scheduler finds its record
    by indexing a list instead of probing ``SchedulerState.workers`` with
    the address. At 1,000 workers that probe's index, entry and stored key
    string were about three cold cache lines per task (callgrind); the list
    is 8 bytes per worker and stays cached.

    Numbers are reused once freed, so a number alone may name a later
    worker. The caller trusts a number only when the record it finds has
    the run the message reports at the head of its assignments: run ids
    are never reused, so a stale number cannot pass (see
    ``SchedulerState._task_finished``).
    """

    __slots__ = ("records", "free", "by_address")

    def __init__(self) -> None:
        self.records: list[WorkerInfo | None] = []
        #: Numbers of removed workers, to be given out again.
        self.free: list[int] = []
        self.by_address: dict[str, int] = {}

    def add(self, ws: WorkerInfo) -> int:
        """Give ``ws`` (not numbered) a number; returns it."""
        if self.free:
            slot = self.free.pop()
            self.records[slot] = ws
        else:
            slot = len(self.records)
            self.records.append(ws)
        self.by_address[ws.address] = slot
        return slot

    def remove(self, ws: WorkerInfo) -> None:
        slot = self.by_address.pop(ws.address, -1)
        if slot >= 0:
            self.records[slot] = None
            self.free.append(slot)

    def get(self, slot: int) -> WorkerInfo | None:
        """The worker numbered ``slot`` now, if any (-1, not a number: None)."""
        if 0 <= slot < len(self.records):
            return self.records[slot]
        return None

    def slot_of(self, address: str) -> int:
        """The number of the worker at ``address`` (-1 if none is connected)."""
        return self.by_address.get(address, -1)


def holding_order(ts: TaskState) -> tuple[int, str]:
    """A deterministic order of a worker's results (``WorkerInfo.has_what``):
    the order they were assigned (run ids are unique), then scattered data,
    never assigned, by key."""
    return (ts.run_id, "") if ts.run_id >= 0 else (-1, repr(ts.key))


class ClientInfo:
    __slots__ = ("client_id", "wants_what", "last_seen")

    def __init__(self, client_id: str, now: float) -> None:
        self.client_id = client_id
        #: Keys this client holds futures for; mirrored by ``TaskState.who_wants``.
        self.wants_what: dict[TaskState, None] = {}
        self.last_seen = now

    def __repr__(self) -> str:
        return f"<Client {self.client_id}>"
