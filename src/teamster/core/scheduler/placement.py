"""The placement policy seam: which worker runs a ready task, and how deep a
worker's queue may be.

The scheduler calls only ``choose_worker``, ``is_saturated`` and
``estimate_duration``; a better policy replaces this module's ``Placement``
without touching the state machine. Every call costs O(k + restrictions),
never a scan of all workers or tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
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
#: Holders of one input looked at when gathering candidates (bounded: an
#: input may be replicated on every worker).
HOLDER_SCAN = 16
#: Holders of one input named in a ComputeTask (the worker fetches from them).
HOLDERS_SENT = 8


class Placement:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        #: Seconds of queued (not yet running) work per thread that keep a worker
        #: busy across one scheduler round trip; deeper queues only add imbalance.
        self.backlog_target = 0.01
        #: Tasks longer than this many backlog targets get no prefetch at all:
        #: the round trip they would hide is under 5% of their runtime, while a
        #: task queued behind a long one may wait far longer than elsewhere.
        self.prefetch_horizon = 20
        #: Hard cap on tasks queued per thread, so memory stays bounded for tiny tasks.
        self.max_per_thread = 500

    def estimate_duration(self, ts: TaskState) -> float:
        avg = ts.prefix.duration_average
        return UNKNOWN_DURATION if avg is None else avg

    def is_saturated(self, ws: WorkerInfo) -> bool:
        """Enough work to stay busy until the scheduler's next assignment lands.

        One task per thread runs; beyond that only queued work counts. The demo
        workload (10 ms tasks) lost a fifth of its time to round trips when the
        running tasks' estimates counted towards the backlog.
        """
        if ws.status != "running":
            return True  # paused: it starts nothing, so it must be given nothing
        n = len(ws.processing)
        threads = ws.nthreads
        if n < threads:
            return False
        if n >= threads * self.max_per_thread:
            return True
        average = ws.occupancy / n
        if average > self.prefetch_horizon * self.backlog_target:
            return True  # long (or not yet measured) tasks: one per thread
        return average * (n - threads) >= threads * self.backlog_target

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
        # A paused worker takes no restricted task either; the task waits in
        # no-worker until one of its workers resumes.
        pool = [ws for ws in pool if ws.status == "running"]
        if ts.resource_restrictions:
            need = ts.resource_restrictions
            pool = [
                ws for ws in pool if all(ws.resources.get(r, 0) >= q for r, q in need.items())
            ]
        return pool

    def transfer_time(self, ts: TaskState, ws: WorkerInfo) -> float:
        missing = 0
        for dts in ts.dependencies:
            if dts.nbytes > 0 and ws not in dts.who_has:
                missing += dts.nbytes
        return missing / DEFAULT_BANDWIDTH

    def holders_to_fetch_from(self, dts: TaskState) -> tuple[str, ...]:
        """The holders of ``dts`` a worker is told to fetch it from.

        At most ``HOLDERS_SENT``, taken from the front of ``who_has`` and moved
        to its back: O(k), and successive tasks reading a widely replicated
        input (a large input every worker ends up holding) fetch it from
        different replicas instead of all from the first holder. Sending
        every holder cost O(workers) per ComputeTask (teamster.sim,
        large-inputs at 1,000 workers).
        """
        who_has = dts.who_has
        if len(who_has) <= HOLDERS_SENT:
            return tuple([ws.address for ws in who_has])
        chosen = list(islice(who_has, HOLDERS_SENT))
        for ws in chosen:
            del who_has[ws]
            who_has[ws] = None
        return tuple([ws.address for ws in chosen])

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
        if ts.worker_restrictions:
            # A loose restriction (allow_other_workers): the named workers win
            # while they have room; otherwise the task goes anywhere.
            named = [state.workers.get(n) or state.workers_by_name.get(n)
                     for n in sorted(ts.worker_restrictions)]
            preferred = [ws for ws in named if ws is not None and ws in idle]
            if preferred:
                return min(preferred, key=lambda ws: self.score(ts, ws))
        candidates = []
        deps = ts.dependencies
        if deps:
            # Holders of the largest inputs first: moving those costs most.
            top = (list(deps) if len(deps) == 1 else
                   sorted(deps, key=_larger_first)[:DEPENDENCY_CANDIDATES])
            for dts in top:
                holders = dts.who_has
                # Never a scan of all holders (an input replicated on every
                # worker has thousands): look from the smaller side, and at
                # most HOLDER_SCAN entries of it.
                pool: Iterable[WorkerInfo]
                if len(holders) <= HOLDER_SCAN:
                    pool, other = holders, idle
                elif len(idle) <= HOLDER_SCAN:
                    pool, other = idle, holders
                else:
                    pool, other = islice(holders, HOLDER_SCAN), idle
                for ws in pool:
                    if ws in other and ws not in candidates:
                        candidates.append(ws)
        for ws in state.rotate_idle(IDLE_CANDIDATES):
            if ws not in candidates:
                candidates.append(ws)
        if len(candidates) == 1:
            return candidates[0]
        return min(candidates, key=lambda ws: self.score(ts, ws))


def _larger_first(dts: TaskState) -> int:
    return -dts.nbytes
