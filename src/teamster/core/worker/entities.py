"""What a worker knows about one task: ``WorkerTask`` and its states."""

from __future__ import annotations

from typing import Final

from teamster.core import messages as m

WORKER_TASK_STATES: Final = (
    "released",  # known but not scheduled for anything (transient)
    "waiting",  # assigned; some inputs not here yet
    "fetch",  # an input to fetch from a peer
    "flight",  # an input being fetched
    "ready",  # assigned, inputs here, waiting for a thread
    "executing",  # running on a thread
    "cancelled",  # running, but the scheduler no longer wants it
    "memory",  # value in the local store
    "error",  # ran and raised
    "forgotten",
)


#: The containers of a task that has none of that kind, shared by all such
#: tasks and never written: most tasks have no resources, no peers to fetch
#: from, and either no inputs or no local readers. A task gets its own on the
#: first insertion (``WorkerState``). Five fresh containers per task were
#: five allocations and, when it was forgotten, five deallocations, each a
#: cold cache line with 1,000 workers in one simulator process.
#: (``Final``: the compiled core reads them as C statics, not from the module dict.)
NO_RESOURCES: Final[dict[str, float]] = {}
NO_TASKS: Final[dict[WorkerTask, None]] = {}
NO_PEERS: Final[list[str]] = []


class WorkerTask:
    __slots__ = (
        "key", "state", "run_spec", "priority", "resources", "dependencies", "dependents",
        "waiting_for_data", "who_has", "nbytes", "assigned", "scheduler_holds", "ready_seq",
        "coming_from", "type_name", "replicate", "run_id", "next_compute", "announce",
    )

    def __init__(self, key: m.Key) -> None:
        self.key = key
        self.state = "released"
        self.run_spec: m.Serialized | None = None
        self.priority: m.Priority = ()
        self.resources: dict[str, float] = NO_RESOURCES
        #: Inputs of an assigned task; mirrored by their ``dependents``.
        self.dependencies: dict[WorkerTask, None] = NO_TASKS
        self.dependents: dict[WorkerTask, None] = NO_TASKS
        #: Inputs not yet in memory here; non-empty only while waiting.
        self.waiting_for_data: dict[WorkerTask, None] = NO_TASKS
        #: Peers the scheduler says hold this input.
        self.who_has: list[str] = NO_PEERS
        self.nbytes = -1
        self.type_name = ""
        #: The scheduler asked this worker to compute it.
        self.assigned = False
        #: The scheduler counts this worker as a holder of the value.
        self.scheduler_holds = False
        self.ready_seq = -1
        #: The peer it is being fetched from (state flight).
        self.coming_from: str | None = None
        #: The scheduler asked for a copy (AcquireReplicas): fetch and keep it
        #: even if no local task reads it. Cleared once it is here.
        self.replicate = False
        #: The scheduler's id of the current assignment, echoed in every report
        #: on it; for a value held, where it came from (m.NO_RUN, m.FETCHED_COPY
        #: or the run that made it), which a qualified FreeKeys checks.
        self.run_id = m.NO_RUN
        #: A ComputeTask for a *different* computation under this key that
        #: arrived while the old one still runs cancelled (the key was
        #: released and resubmitted): started once the thread is free.
        self.next_compute: m.ComputeTask | None = None
        #: Its start must reach the scheduler before it runs (ComputeTask.announce).
        self.announce = False

    def __repr__(self) -> str:
        return f"<WorkerTask {self.key!r} {self.state}>"
