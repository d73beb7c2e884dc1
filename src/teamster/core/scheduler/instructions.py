"""What SchedulerState asks its shell to do.

Immutable values like the core's records (``record.py``): their attributes
are ``Final`` (mypy rejects any assignment), and they compare, hash and
print by their fields, in a dataclass's format (``NativeRecord``). They are
not records, though: this module is compiled (pyproject.toml, ``compiled-core``), and
a record's construction runs its dataclass ``__init__`` in the interpreter,
while these are native classes. The scheduler builds two or three per task
(about 1,500 instructions each as records, callgrind; a tenth of that now).
"""

from __future__ import annotations

from typing import Any, Final

from teamster.core.messages import Message
from teamster.core.native_messages import NativeRecord


class Instruction(NativeRecord):
    pass


class SendToWorker(Instruction):
    FIELDS = ("worker", "msg")

    def __init__(self, worker: str, msg: Message) -> None:
        self.worker: Final = worker
        self.msg: Final = msg

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


class SendToClient(Instruction):
    FIELDS = ("client", "msg")

    def __init__(self, client: str, msg: Message) -> None:
        self.client: Final = client
        self.msg: Final = msg

    @property
    def stimulus_id(self) -> str:
        return self.msg.stimulus_id


class CloseWorker(Instruction):
    """Disconnect a worker (e.g. a second registration under a live address)."""

    FIELDS = ("worker", "reason", "stimulus_id")

    def __init__(self, worker: str, reason: str, stimulus_id: str) -> None:
        self.worker: Final = worker
        self.reason: Final = reason
        self.stimulus_id: Final = stimulus_id


class RetirementDone(Instruction):
    """Every worker of a ``RetireWorkers`` request is retired or refused: the
    shell answers the request with this."""

    FIELDS = ("request_id", "retired", "refused", "stimulus_id")

    def __init__(self, request_id: str, retired: tuple[tuple[str, dict[str, Any]], ...],
                 refused: tuple[tuple[str, str], ...], stimulus_id: str) -> None:
        self.request_id: Final = request_id
        #: (address, worker info) of each retired worker.
        self.retired: Final = retired
        #: (address or name as asked, why it was not retired).
        self.refused: Final = refused
        self.stimulus_id: Final = stimulus_id


SchedulerInstruction = SendToWorker | SendToClient | CloseWorker | RetirementDone
