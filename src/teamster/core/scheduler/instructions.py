"""What SchedulerState asks its shell to do."""

from __future__ import annotations

from dataclasses import dataclass

from teamster.core.messages import Message


@dataclass(frozen=True, slots=True)
class SendToWorker:
    worker: str
    msg: Message

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


@dataclass(frozen=True, slots=True)
class SendToClient:
    client: str
    msg: Message

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


@dataclass(frozen=True, slots=True)
class CloseWorker:
    """Disconnect a worker (e.g. a second registration under a live address)."""

    worker: str
    reason: str
    stimulus_id: str


SchedulerInstruction = SendToWorker | SendToClient | CloseWorker
