"""The wire schema: every message that crosses a process boundary.

Rules of this module:
- Messages are frozen, slotted dataclasses with a ``stimulus_id`` as their last
  field, so a task's story can be followed across processes.
- Messages sent *to* a state machine are that machine's events: a
  ``TaskFinished`` from a worker is a ``SchedulerState`` event as it arrives,
  a ``ComputeTask`` from the scheduler is a ``WorkerState`` event.
- Nothing here knows how it is encoded; ``runtime/comm/serialize.py`` turns
  registered classes into msgpack and back. Collections are tuples because
  the wire decodes arrays as tuples (so that dask's tuple keys stay hashable).
- User data (functions, arguments, results, exceptions) is carried as opaque
  ``Serialized`` blobs; the scheduler never looks inside them.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, TypeAlias, TypeVar, dataclass_transform

from teamster.core.record import record

#: A task key: a string, or a dask-style tuple such as ("x-123", 0, 1).
Key: TypeAlias = str | tuple[Any, ...]
#: A worker's listening address, "tcp://host:port".
Address: TypeAlias = str
#: Priorities compare as tuples; lower runs first.
Priority: TypeAlias = tuple[Any, ...]

#: Transfers of at least this many bytes are reported (``AddKeys``) as they
#: land: the scheduler learns bandwidth from them and places readers of large
#: data by its holders. Smaller ones wait for the worker's next TaskFinished.
REPORT_AT_ONCE_BYTES = 1_000_000


@record
class Serialized:
    """Opaque user bytes: a pickle stream plus its out-of-band buffers.

    Buffers are memoryviews or bytes that travel as separate frames, so a large
    array is never copied into the pickle stream.
    """

    header: bytes
    buffers: tuple[Any, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.header) + sum(memoryview(b).nbytes for b in self.buffers)


#: Every message class, in registration order; the index is its wire tag.
MESSAGE_TYPES: list[type] = []


_M = TypeVar("_M", bound=type)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def message(cls: _M) -> _M:
    """Register a frozen slotted dataclass as a wire message (tag = registration index)."""
    new: Any = record(cls)
    new.tag = len(MESSAGE_TYPES)
    MESSAGE_TYPES.append(new)
    return new  # type: ignore[no-any-return]


class Message:
    tag: ClassVar[int]
    stimulus_id: str


# ---------------------------------------------------------------------------
# Task description sent by clients


@message
class TaskSpec(Message):
    """One task of a graph, as a client submits it."""

    key: Key
    #: Opaque callable + arguments; None for a key that only aliases data.
    run_spec: Serialized | None
    #: Keys whose values the task needs, in a stable order.
    dependencies: tuple[Key, ...]
    priority: Priority = ()
    #: Worker addresses or names the task may run on (None: anywhere).
    workers: tuple[str, ...] | None = None
    allow_other_workers: bool = False
    #: Abstract resources the task consumes while running, e.g. {"GPU": 1}.
    resources: tuple[tuple[str, float], ...] | None = None
    retries: int = 0
    stimulus_id: str = ""


# ---------------------------------------------------------------------------
# Client -> scheduler (SchedulerState events)


@message
class RegisterClient(Message):
    client: str
    now: float
    stimulus_id: str


@message
class RemoveClient(Message):
    client: str
    now: float
    stimulus_id: str


@message
class UpdateGraph(Message):
    """New tasks (one message for a whole graph or map) and the keys the client wants."""

    client: str
    tasks: tuple[TaskSpec, ...]
    wanted: tuple[Key, ...]
    now: float
    stimulus_id: str


@message
class ReleaseKeys(Message):
    """The client dropped its last future for these keys."""

    client: str
    keys: tuple[Key, ...]
    stimulus_id: str


@message
class CancelKeys(Message):
    client: str
    keys: tuple[Key, ...]
    stimulus_id: str


@message
class ScatteredData(Message):
    """The client placed data on workers itself; the scheduler records where."""

    client: str
    #: (key, holders, nbytes) for each scattered value.
    who_has: tuple[tuple[Key, tuple[Address, ...], int], ...]
    stimulus_id: str


# ---------------------------------------------------------------------------
# Worker -> scheduler (SchedulerState events)


@message
class RegisterWorker(Message):
    address: Address
    name: str
    nthreads: int
    memory_limit: int
    resources: tuple[tuple[str, float], ...]
    now: float
    stimulus_id: str


@message
class RemoveWorker(Message):
    """The worker is gone: connection closed, heartbeats missed, or it retired."""

    address: Address
    reason: str
    now: float
    stimulus_id: str


@message
class Heartbeat(Message):
    address: Address
    now: float
    #: Process metrics: cpu, memory, executing count (informational).
    metrics: tuple[tuple[str, float], ...]
    #: (key, seconds it has been running) for every executing task: a task far
    #: past its estimate raises its prefix's estimate before it finishes.
    executing: tuple[tuple[Key, float], ...]
    stimulus_id: str


@message
class TaskFinished(Message):
    worker: Address
    key: Key
    nbytes: int
    type_name: str
    #: Wall time the task ran on the worker, in seconds.
    duration: float
    #: The worker's wall clock (time.time()) when it finished: the end of the
    #: computation for the balance report (clocks of one machine agree; across
    #: machines they differ by their NTP skew).
    stop: float
    #: The assignment this result answers (``ComputeTask.run_id``, echoed).
    run_id: int
    #: Small inputs that landed on this worker since its last report, one
    #: ``(keys, nbytes)`` per transfer: the ``AddKeys`` it did not send (see
    #: ``WorkerState.unreported``). Reported here, the scheduler registers
    #: them in the event that touches those inputs anyway.
    transfers: tuple[tuple[tuple[Key, ...], int], ...]
    stimulus_id: str


@message
class TasksStarted(Message):
    """The worker starts these announced tasks (``ComputeTask.announce``).

    Only a task known to have been running when its worker died is suspected
    of killing it: workers hold queues of tasks, most of them not yet started.
    The scheduler knows what runs from heartbeats (``Heartbeat.executing``);
    this message is for a start it must know of before the task runs.
    """

    worker: Address
    keys: tuple[Key, ...]
    stimulus_id: str


@message
class TaskErred(Message):
    worker: Address
    key: Key
    exception: Serialized | None
    traceback: Serialized | None
    #: repr of the exception, readable without unpickling.
    exception_text: str
    duration: float
    #: The assignment this failure answers (``ComputeTask.run_id``, echoed).
    run_id: int
    stimulus_id: str


@message
class AddKeys(Message):
    """The worker now holds replicas of these keys (fetched as dependencies).

    ``source``, ``nbytes`` and ``seconds`` describe the transfer that brought
    them (empty/0 when unknown): the scheduler learns bandwidth from them.
    Sent at once for copies the scheduler asked for and for transfers of at
    least ``REPORT_AT_ONCE_BYTES``; smaller ones ride on the worker's next
    ``TaskFinished`` (``transfers``), or come here once nothing runs there.
    """

    worker: Address
    keys: tuple[Key, ...]
    source: Address
    nbytes: int
    seconds: float
    stimulus_id: str


@message
class MissingData(Message):
    """A peer did not have data the scheduler said it had."""

    worker: Address
    key: Key
    errant_worker: Address
    stimulus_id: str


@message
class RescheduleTask(Message):
    """The worker gave up on a task (its inputs could not be fetched); place it again."""

    worker: Address
    key: Key
    #: The assignment given up (``ComputeTask.run_id``, echoed).
    run_id: int
    stimulus_id: str


@message
class StealResponse(Message):
    """The answer to a StealRequest: ``stolen`` if the worker gave the task up.

    A worker refuses a task it has started (or finished): ``state`` says what
    the task was doing there, for the story.
    """

    worker: Address
    key: Key
    steal_id: int
    stolen: bool
    state: str
    stimulus_id: str


@message
class WorkerStatus(Message):
    """The worker paused (memory above its pause fraction) or resumed.

    A paused worker starts no new task; the scheduler stops assigning to it
    until it reports "running" again.
    """

    address: Address
    #: "running" or "paused".
    status: str
    stimulus_id: str


@message
class ReplicasNotAcquired(Message):
    """The answer to an AcquireReplicas the worker could not carry out for these
    keys (every holder it was told of failed or lacked them): the scheduler
    asks another worker."""

    worker: Address
    keys: tuple[Key, ...]
    stimulus_id: str


# ---------------------------------------------------------------------------
# Scheduler -> worker (WorkerState events)


@message
class StealRequest(Message):
    """Give up this queued task so the scheduler can move it to an idle worker."""

    key: Key
    steal_id: int
    stimulus_id: str


@message
class ComputeTask(Message):
    key: Key
    run_spec: Serialized | None
    #: (dependency key, holders, nbytes) for every dependency.
    who_has: tuple[tuple[Key, tuple[Address, ...], int], ...]
    priority: Priority
    resources: tuple[tuple[str, float], ...] | None
    #: Unique per assignment. A key can be assigned, freed and assigned again
    #: to the same worker while the first run's result is on the wire; the
    #: echoed run_id tells that stale result from the current one.
    run_id: int
    #: Tell the scheduler it started (``TasksStarted``) before running it:
    #: it was on a worker that died, and should it kill workers at once, no
    #: heartbeat would ever see it run and it would never be suspected.
    announce: bool
    stimulus_id: str


@message
class AcquireReplicas(Message):
    """Fetch copies of these keys and keep them (a retiring worker's unique
    results must live on elsewhere): reported with AddKeys once they arrived,
    ReplicasNotAcquired if they could not be had."""

    #: (key, holders, nbytes) for every key to copy.
    who_has: tuple[tuple[Key, tuple[Address, ...], int], ...]
    stimulus_id: str


@message
class Shutdown(Message):
    """The scheduler is done with this worker (retired, or the scheduler is
    closing): exit cleanly; nothing it holds is needed any more."""

    reason: str
    stimulus_id: str


#: ``FreeKeys.run_id``: free whatever the worker holds under the key. As the
#: origin a worker records for its value: not made by a run the scheduler
#: may call stale (a scattered value, a copy the scheduler asked for), so
#: only such an unqualified FreeKeys drops it.
NO_RUN = -1
#: ``FreeKeys.run_id`` and recorded origin of a copy fetched from a peer.
FETCHED_COPY = -2


@message
class FreeKeys(Message):
    """Forget these keys: drop their data and any pending work on them."""

    keys: tuple[Key, ...]
    stimulus_id: str
    #: When not NO_RUN: forget only what the assignment with this run_id made
    #: (``ComputeTask.run_id``), or with ``FETCHED_COPY`` only a copy fetched
    #: from a peer. Such a FreeKeys answers a stale report, and may arrive
    #: after the worker got another value under the key that the scheduler
    #: counts (a copy for a retirement, a scattered value, a later run's).
    run_id: int = NO_RUN



# ---------------------------------------------------------------------------
# Scheduler -> client


@message
class KeyInMemory(Message):
    key: Key
    who_has: tuple[Address, ...]
    nbytes: int
    type_name: str
    stimulus_id: str


@message
class KeyErred(Message):
    """A wanted task failed. ``exception`` is None for failures the scheduler
    itself diagnosed (lost data, killed workers); ``exception_text`` then says what happened."""

    key: Key
    exception: Serialized | None
    traceback: Serialized | None
    exception_text: str
    stimulus_id: str


@message
class KeyCancelled(Message):
    key: Key
    reason: str
    stimulus_id: str


# ---------------------------------------------------------------------------
# Point-to-point data transfer and queries (answered by the shells, not the cores)


@message
class GetData(Message):
    """Ask a worker for values (a peer fetching dependencies, or a client gathering)."""

    keys: tuple[Key, ...]
    stimulus_id: str


@message
class DataReply(Message):
    data: tuple[tuple[Key, Serialized], ...]
    #: Keys the worker did not have.
    missing: tuple[Key, ...]
    stimulus_id: str


@message
class PutData(Message):
    """A client scattering values onto a worker."""

    data: tuple[tuple[Key, Serialized], ...]
    stimulus_id: str


@message
class Request(Message):
    """A query with a reply: {"op": ..., ...} answered by a Reply with the same id."""

    request_id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    stimulus_id: str = ""


@message
class Reply(Message):
    request_id: int
    ok: bool
    result: Any
    stimulus_id: str = ""
