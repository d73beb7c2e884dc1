"""The wire messages sent for every task, as native classes.

Every other message is a record (``record.py``): a slotted dataclass. These
four cross the scheduler's hot path once or more per task -- a client's
``TaskSpec``, the scheduler's ``ComputeTask`` and ``FreeKeys``, a worker's
``TaskFinished`` -- and this module is compiled with the cores
(pyproject.toml, ``compiled-core``). As records, building one ran its
dataclass ``__init__`` in the interpreter, and every field the compiled
scheduler read was a generic attribute lookup: about 5,000 instructions per
task between them (callgrind, compiled core). As native classes, a field read
is a load and construction is a C call.

They behave as records do: the fields are ``Final`` (mypy rejects any
assignment), and they compare, hash, print (in a dataclass's format) and
pickle by their fields, listed in ``FIELDS`` (the wire order).
``messages.py`` registers them among the records, so their wire tags are
unchanged, and re-exports them: use them as ``messages.ComputeTask`` etc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias

if TYPE_CHECKING:  # (a record: typed here, not checked when built)
    from teamster.core.messages import Serialized

#: A task key: a string, or a dask-style tuple such as ("x-123", 0, 1).
Key: TypeAlias = str | tuple[Any, ...]
#: A worker's listening address, "tcp://host:port".
Address: TypeAlias = str
#: Priorities compare as tuples; lower runs first.
Priority: TypeAlias = tuple[Any, ...]

#: ``FreeKeys.run_id``: free whatever the worker holds under the key. As the
#: origin a worker records for its value: not made by a run the scheduler
#: may call stale (a scattered value, a copy the scheduler asked for), so
#: only such an unqualified FreeKeys drops it.
NO_RUN: Final = -1
#: ``FreeKeys.run_id`` and recorded origin of a copy fetched from a peer.
FETCHED_COPY: Final = -2


class NativeRecord:
    """An immutable value compared, hashed, shown and pickled by its fields."""

    #: Each subclass's fields, in order (for a message, its wire order).
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.FIELDS])

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, NativeRecord)
                and self.values() == other.values())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}"
                           for name, value in zip(self.FIELDS, self.values(), strict=True))
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        # (A compiled class's default reduction would build it without arguments.)
        return (type(self), self.values())


class NativeMessage(NativeRecord):
    #: Its wire tag, set when ``messages.py`` registers it.
    tag: ClassVar[int]


class TaskSpec(NativeMessage):
    """One task of a graph, as a client submits it."""

    FIELDS = ("key", "run_spec", "dependencies", "priority", "workers",
              "allow_other_workers", "resources", "retries", "stimulus_id")

    def __init__(
        self,
        key: Key,
        run_spec: Serialized | None,
        dependencies: tuple[Key, ...],
        priority: Priority = (),
        workers: tuple[str, ...] | None = None,
        allow_other_workers: bool = False,
        resources: tuple[tuple[str, float], ...] | None = None,
        retries: int = 0,
        stimulus_id: str = "",
    ) -> None:
        self.key: Final = key
        #: Opaque callable + arguments; None for a key that only aliases data.
        self.run_spec: Final = run_spec
        #: Keys whose values the task needs, in a stable order.
        self.dependencies: Final = dependencies
        self.priority: Final = priority
        #: Worker addresses or names the task may run on (None: anywhere).
        self.workers: Final = workers
        self.allow_other_workers: Final = allow_other_workers
        #: Abstract resources the task consumes while running, e.g. {"GPU": 1}.
        self.resources: Final = resources
        self.retries: Final = retries
        self.stimulus_id: Final = stimulus_id


class TaskFinished(NativeMessage):
    FIELDS = ("worker", "key", "nbytes", "type_name", "duration", "stop", "run_id",
              "transfers", "stimulus_id", "worker_slot")

    def __init__(
        self,
        worker: Address,
        key: Key,
        nbytes: int,
        type_name: str,
        duration: float,
        stop: float,
        run_id: int,
        transfers: tuple[tuple[tuple[Key, ...], int], ...],
        stimulus_id: str,
        worker_slot: int = -1,
    ) -> None:
        self.worker: Final = worker
        self.key: Final = key
        self.nbytes: Final = nbytes
        self.type_name: Final = type_name
        #: Wall time the task ran on the worker, in seconds.
        self.duration: Final = duration
        #: The worker's wall clock (time.time()) when it finished: the end of the
        #: computation for the balance report (clocks of one machine agree; across
        #: machines they differ by their NTP skew).
        self.stop: Final = stop
        #: The assignment this result answers (``ComputeTask.run_id``, echoed).
        self.run_id: Final = run_id
        #: Small inputs that landed on this worker since its last report, one
        #: ``(keys, nbytes)`` per transfer: the ``AddKeys`` it did not send (see
        #: ``WorkerState.unreported``). Reported here, the scheduler registers
        #: them in the event that touches those inputs anyway.
        self.transfers: Final = transfers
        self.stimulus_id: Final = stimulus_id
        #: The worker's number at the scheduler (``WorkerSlots``), told at
        #: registration; -1 until then. It finds the worker's record there by
        #: a list index instead of a probe by address.
        self.worker_slot: Final = worker_slot


class ComputeTask(NativeMessage):
    FIELDS = ("key", "run_spec", "who_has", "priority", "resources", "run_id", "announce",
              "stimulus_id")

    def __init__(
        self,
        key: Key,
        run_spec: Serialized | None,
        who_has: tuple[tuple[Key, tuple[Address, ...], int], ...],
        priority: Priority,
        resources: tuple[tuple[str, float], ...] | None,
        run_id: int,
        announce: bool,
        stimulus_id: str,
    ) -> None:
        self.key: Final = key
        self.run_spec: Final = run_spec
        #: (dependency key, holders, nbytes) for every dependency.
        self.who_has: Final = who_has
        self.priority: Final = priority
        self.resources: Final = resources
        #: Unique per assignment. A key can be assigned, freed and assigned again
        #: to the same worker while the first run's result is on the wire; the
        #: echoed run_id tells that stale result from the current one.
        self.run_id: Final = run_id
        #: Tell the scheduler it started (``TasksStarted``) before running it:
        #: it was on a worker that died, and should it kill workers at once, no
        #: heartbeat would ever see it run and it would never be suspected.
        self.announce: Final = announce
        self.stimulus_id: Final = stimulus_id


class FreeKeys(NativeMessage):
    """Forget these keys: drop their data and any pending work on them."""

    FIELDS = ("keys", "stimulus_id", "run_id")

    def __init__(self, keys: tuple[Key, ...], stimulus_id: str, run_id: int = NO_RUN) -> None:
        self.keys: Final = keys
        self.stimulus_id: Final = stimulus_id
        #: When not NO_RUN: forget only what the assignment with this run_id made
        #: (``ComputeTask.run_id``), or with ``FETCHED_COPY`` only a copy fetched
        #: from a peer. Such a FreeKeys answers a stale report, and may arrive
        #: after the worker got another value under the key that the scheduler
        #: counts (a copy for a retirement, a scattered value, a later run's).
        self.run_id: Final = run_id
