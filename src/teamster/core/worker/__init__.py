"""The worker's pure state machine."""

from teamster.core.worker.state import WorkerState

__all__ = ["WorkerState"]
