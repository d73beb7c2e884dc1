"""What WorkerState asks its shell to do."""

from __future__ import annotations

from teamster.core.messages import Key, Message, Serialized
from teamster.core.record import record


@record
class Execute:
    key: Key
    run_spec: Serialized | None
    #: Keys whose values the task reads from the local store.
    dependencies: tuple[Key, ...]
    #: Run it only once the scheduler has been sent what this event sends
    #: (its start notice among them): see ``ComputeTask.announce``.
    announce: bool
    stimulus_id: str


@record
class GatherDep:
    """Fetch these keys from one peer, in one request."""

    worker: str
    keys: tuple[Key, ...]
    total_nbytes: int
    stimulus_id: str


@record
class SendToScheduler:
    msg: Message

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


@record
class DeleteData:
    """Drop these values from the local store."""

    keys: tuple[Key, ...]
    stimulus_id: str


WorkerInstruction = Execute | GatherDep | SendToScheduler | DeleteData
