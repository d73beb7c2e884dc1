"""The wire schema: every message that crosses a process boundary.

Rules of this module:
- Messages are frozen, slotted dataclasses (records) with a ``stimulus_id``
  as their last field, so a task's story can be followed across processes.
  The four sent for every task are native classes that behave the same way
  (``native_messages.py`` says why); they are registered here in their place.
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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, dataclass_transform

# (Re-exported: every message and the wire's types are used as ``messages.X``.)
from teamster.core.native_messages import FETCHED_COPY as FETCHED_COPY
from teamster.core.native_messages import NO_RUN as NO_RUN
from teamster.core.native_messages import Address as Address
from teamster.core.native_messages import ComputeTask as ComputeTask
from teamster.core.native_messages import FreeKeys as FreeKeys
from teamster.core.native_messages import Key as Key
from teamster.core.native_messages import NativeMessage
from teamster.core.native_messages import Priority as Priority
from teamster.core.native_messages import TaskFinished as TaskFinished
from teamster.core.native_messages import TaskSpec as TaskSpec
from teamster.core.record import record

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
    register(new)
    return new  # type: ignore[no-any-return]


def register(cls: type) -> None:
    """Give ``cls`` the next wire tag (its index in ``MESSAGE_TYPES``)."""
    if not (hasattr(cls, "__dataclass_fields__") or issubclass(cls, NativeMessage)):
        raise TypeError(f"{cls.__name__} is neither a record nor a NativeMessage")
    cls.tag = len(MESSAGE_TYPES)  # type: ignore[attr-defined]
    MESSAGE_TYPES.append(cls)


if TYPE_CHECKING:
    class Message(Protocol):
        """What every message has (records and native ones alike): also a
        ``tag`` class attribute, set by ``register``."""

        @property
        def stimulus_id(self) -> str: ...
else:
    class Message:
        # At run time a plain base of the records: a Protocol base would
        # replace their dataclass __init__ (typing does so for subclasses).
        tag: ClassVar[int]


# ---------------------------------------------------------------------------
# Task description sent by clients


register(TaskSpec)


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


register(TaskFinished)


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


register(ComputeTask)


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




register(FreeKeys)


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
