"""Scheduler events that originate in its own shell rather than on the wire."""

from __future__ import annotations

from teamster.core.record import record


@record
class Tick:
    """Periodic: lets the core notice silent workers (missed heartbeats)."""

    now: float
    stimulus_id: str
