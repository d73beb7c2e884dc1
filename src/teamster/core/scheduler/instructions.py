"""What SchedulerState asks its shell to do."""

from __future__ import annotations

from teamster.core.messages import Message
from teamster.core.record import record


@record
class SendToWorker:
    worker: str
    msg: Message

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


@record
class SendToClient:
    client: str
    msg: Message

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


@record
class CloseWorker:
    """Disconnect a worker (e.g. a second registration under a live address)."""

    worker: str
    reason: str
    stimulus_id: str


SchedulerInstruction = SendToWorker | SendToClient | CloseWorker
