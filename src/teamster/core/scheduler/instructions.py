"""What SchedulerState asks its shell to do."""

from __future__ import annotations

from typing import Any

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


@record
class RetirementDone:
    """Every worker of a ``RetireWorkers`` request is retired or refused: the
    shell answers the request with this."""

    request_id: str
    #: (address, worker info) of each retired worker.
    retired: tuple[tuple[str, dict[str, Any]], ...]
    #: (address or name as asked, why it was not retired).
    refused: tuple[tuple[str, str], ...]
    stimulus_id: str


SchedulerInstruction = SendToWorker | SendToClient | CloseWorker | RetirementDone
