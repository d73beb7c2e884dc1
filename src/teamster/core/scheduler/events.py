"""Scheduler events that originate in its own shell rather than on the wire."""

from __future__ import annotations

from teamster.core.record import record


@record
class Tick:
    """Periodic: lets the core notice silent workers (missed heartbeats)."""

    now: float
    stimulus_id: str


@record
class RetireWorkers:
    """A client asked these workers (addresses or names) to leave gracefully.

    Answered by a ``RetirementDone`` with the same ``request_id`` once every
    one of them is retired or refused (see retire.py).
    """

    workers: tuple[str, ...]
    #: Close the workers once drained (False: they stay connected, assigned nothing).
    close: bool
    request_id: str
    now: float
    stimulus_id: str
