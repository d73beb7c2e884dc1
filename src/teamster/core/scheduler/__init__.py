"""The scheduler's pure state machine."""

from teamster.core.scheduler.state import SchedulerState

__all__ = ["SchedulerState"]
