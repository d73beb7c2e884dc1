"""The placement policy seam: which worker runs a ready task, and how deep a
worker's queue may be.

The scheduler calls only ``choose_worker``, ``is_saturated`` and
``estimate_duration``; a better policy replaces this module's ``Placement``
without touching the state machine. Every call costs O(k + restrictions),
never a scan of all workers or tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from teamster.core.scheduler.entities import TaskState, WorkerInfo

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

#: Duration assumed for a prefix nobody has measured yet. Deliberately long:
#: an unknown prefix gets one task per thread (spread out) until the first
#: measurement arrives, instead of piling its tasks onto whoever asks first.
UNKNOWN_DURATION = 0.5
#: Transfer bandwidth assumed until measured, bytes/s.
DEFAULT_BANDWIDTH = 100e6
#: How many holders of large inputs and how many idle workers to score.
DEPENDENCY_CANDIDATES = 4
IDLE_CANDIDATES = 2


class Placement:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        #: Seconds of queued work per thread that keeps a worker busy across one
        #: scheduler round trip; deeper queues only add imbalance.
        self.backlog_target = 0.005
        #: Hard cap on tasks queued per thread, so memory stays bounded for tiny tasks.
        self.max_per_thread = 500

    def estimate_duration(self, ts: TaskState) -> float:
        avg = ts.prefix.duration_average
        return UNKNOWN_DURATION if avg is None else avg

    def is_saturated(self, ws: WorkerInfo) -> bool:
        n = len(ws.processing)
        if n < ws.nthreads:
            return False
        if n >= ws.nthreads * self.max_per_thread:
            return True
        return ws.occupancy >= ws.nthreads * self.backlog_target

    def valid_workers(self, ts: TaskState) -> Iterable[WorkerInfo] | None:
        """Workers satisfying hard restrictions, or None if the task has none."""
        if not ts.restricted:
            return None
        state = self.state
        if ts.worker_restrictions and not ts.allow_other_workers:
            pool: Iterable[WorkerInfo] = [
                ws
                for name in sorted(ts.worker_restrictions)
                if (ws := state.workers.get(name) or state.workers_by_name.get(name)) is not None
            ]
        else:
            pool = state.workers.values()
        if ts.resource_restrictions:
            need = ts.resource_restrictions
            pool = [
                ws for ws in pool if all(ws.resources.get(r, 0) >= q for r, q in need.items())
            ]
        return pool

    def transfer_time(self, ts: TaskState, ws: WorkerInfo) -> float:
        missing = sum(
            max(dts.nbytes, 0) for dts in ts.dependencies if ws not in dts.who_has
        )
        return missing / DEFAULT_BANDWIDTH

    def score(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Estimated time until ``ts`` could finish on ``ws``."""
        return ws.occupancy / ws.nthreads + self.transfer_time(ts, ws)

    def choose_worker(self, ts: TaskState) -> WorkerInfo | None:
        """The best worker for a ready task, or None to keep it queued.

        Unrestricted tasks only go to unsaturated ("idle") workers: the rest
        wait in the scheduler's queue (late binding).
        """
        state = self.state
        valid = self.valid_workers(ts)
        if valid is not None:
            candidates = list(valid)
            if ts.worker_restrictions and ts.allow_other_workers:
                preferred = [ws for ws in candidates if ws.address in ts.worker_restrictions
                             or ws.name in ts.worker_restrictions]
                candidates = preferred or candidates
            if not candidates:
                return None
            return min(candidates, key=lambda ws: self.score(ts, ws))
        idle = state.idle
        if not idle:
            return None
        candidates = []
        if ts.dependencies:
            # Holders of the largest inputs first: moving those costs most.
            deps = sorted(ts.dependencies, key=lambda d: -d.nbytes)[:DEPENDENCY_CANDIDATES]
            for dts in deps:
                for ws in dts.who_has:
                    if ws in idle and ws not in candidates:
                        candidates.append(ws)
        for ws in state.rotate_idle(IDLE_CANDIDATES):
            if ws not in candidates:
                candidates.append(ws)
        return min(candidates, key=lambda ws: self.score(ts, ws))
