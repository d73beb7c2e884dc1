"""WorkerState events raised by the worker's own shell (execution and transfers).

Events from the scheduler (ComputeTask, FreeKeys) are wire messages, in
teamster.core.messages.
"""

from __future__ import annotations

from teamster.core.messages import Key, Serialized
from teamster.core.record import record


@record
class ExecuteSuccess:
    key: Key
    nbytes: int
    type_name: str
    duration: float
    #: The shell's wall clock when the task finished (reported to the scheduler).
    stop: float
    stimulus_id: str


@record
class ExecuteFailure:
    key: Key
    exception: Serialized | None
    traceback: Serialized | None
    exception_text: str
    duration: float
    stimulus_id: str


@record
class GatherDepSuccess:
    """A peer answered: these keys arrived (with sizes), these it did not have."""

    worker: str
    received: tuple[tuple[Key, int], ...]
    missing: tuple[Key, ...]
    #: Seconds from sending the request to holding the data (0 if unknown).
    seconds: float
    stimulus_id: str


@record
class GatherDepFailure:
    """The peer could not be reached or the transfer broke."""

    worker: str
    keys: tuple[Key, ...]
    reason: str
    stimulus_id: str


@record
class DataPut:
    """A client scattered these values here (already in the shell's store)."""

    data: tuple[tuple[Key, int], ...]
    stimulus_id: str


@record
class PauseChanged:
    """The shell's memory monitor crossed the pause fraction (paused) or fell
    back below it (not paused)."""

    paused: bool
    stimulus_id: str


@record
class Registered:
    """The scheduler accepted the worker's registration and numbered it
    (``TaskFinished.worker_slot``): the shell passes on its acknowledgement."""

    worker_slot: int
    stimulus_id: str
