"""The balance report: how well the last computation was placed.

A *computation* starts when a graph arrives at an idle cluster (nothing
processing or queued) and lasts until the next such graph. For it the
scheduler accumulates what the report needs, at O(1) per event (plus the
task's dependencies, already in hand, for the critical path):

- makespan: from the graph's arrival to the last task's finish;
- lower bound: max(work bound, critical path), where the critical path is
  the longest chain of *measured* durations through the tasks run, and the
  work bound is the first time T at which the threads connected since the
  start could have done all the measured work (workers that join late add
  capacity only from when they joined: the bound stays honest);
- busy time and tasks per worker (failed runs count: the worker was busy),
  bytes moved between workers, steals.

Times are the scheduler's clock (``now`` of events) and the workers' wall
clocks (``TaskFinished.stop``): equal on one machine, NTP-close across them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teamster.core.scheduler.entities import TaskState, WorkerInfo

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState


class BalanceReport:
    def __init__(self) -> None:
        #: Increments per computation; a task's critical path counts only
        #: within its computation.
        self.computation = 0
        self.started_at: float | None = None
        self.last_stop = 0.0
        self.work = 0.0
        self.critical_path = 0.0
        self.tasks = 0
        #: Each worker's (busy_time, executed) when the computation started:
        #: busy time and tasks per worker are its counters minus these. (Not
        #: a row per worker updated per task: at 1,000 workers that row was
        #: a cache miss or two on every task, for a report read once.)
        self.counts_at_start: dict[WorkerInfo, tuple[float, int]] = {}
        #: Address -> (busy seconds, tasks, nthreads) of workers that left
        #: during the computation.
        self.departed: dict[str, tuple[float, int, int]] = {}
        #: (time, total threads) from the start: the capacity timeline.
        self.capacity: list[tuple[float, int]] = []
        self.bytes_moved = 0
        self.transfers = 0
        self.steals_at_start = (0, 0, 0)

    def start(self, now: float, state: SchedulerState) -> None:
        self.computation += 1
        self.started_at = now
        self.last_stop = now
        self.work = self.critical_path = 0.0
        self.tasks = 0
        self.counts_at_start = {ws: (ws.busy_time, ws.executed) for ws in state.workers.values()}
        self.departed = {}
        self.capacity = [(now, state.total_threads)]
        self.bytes_moved = self.transfers = 0
        st = state.stealing
        self.steals_at_start = (st.n_requested, st.n_moved, st.n_refused)

    def capacity_changed(self, now: float, threads: int) -> None:
        if self.started_at is not None:
            self.capacity.append((max(now, self.capacity[-1][0]), threads))

    def task_done(self, ts: TaskState, duration: float, stop: float) -> None:
        if self.started_at is None:
            return
        comp = self.computation
        longest = 0.0
        for dts in ts.dependencies:
            if dts.computation == comp and dts.critical_path > longest:
                longest = dts.critical_path
        ts.critical_path = longest + duration
        ts.computation = comp
        if ts.critical_path > self.critical_path:
            self.critical_path = ts.critical_path
        self.work += duration
        self.tasks += 1
        if stop > self.last_stop:
            self.last_stop = stop

    def _since_start(self, ws: WorkerInfo) -> tuple[float, int]:
        busy, n = self.counts_at_start.get(ws, (0.0, 0))
        return ws.busy_time - busy, ws.executed - n

    def worker_left(self, ws: WorkerInfo) -> None:
        """Keep what a departing worker did in this computation."""
        if self.started_at is None:
            return
        # (It may have left before, under the same address: one row.)
        self.departed[ws.address] = self._add_stint(self.departed.get(ws.address), ws)
        self.counts_at_start.pop(ws, None)

    def _add_stint(self, row: tuple[float, int, int] | None,
                   ws: WorkerInfo) -> tuple[float, int, int]:
        busy, n = self._since_start(ws)
        if row is None:
            return busy, n, ws.nthreads
        return row[0] + busy, row[1] + n, ws.nthreads

    def transfer(self, nbytes: int) -> None:
        self.bytes_moved += nbytes
        self.transfers += 1

    def work_bound(self) -> float:
        """First T (from the start) by which the connected threads could do the work."""
        if self.started_at is None or self.work <= 0:
            return 0.0
        left = self.work
        points = self.capacity
        for i, (t, threads) in enumerate(points):
            end = points[i + 1][0] if i + 1 < len(points) else None
            if threads > 0:
                if end is None or threads * (end - t) >= left:
                    return t + left / threads - self.started_at
                left -= threads * (end - t)
        return float("inf")  # no threads left: the work could never be done

    def as_dict(self, state: SchedulerState) -> dict[str, Any]:
        if self.started_at is None:
            return {"computation": 0, "tasks": 0}
        makespan = max(0.0, self.last_stop - self.started_at)
        lower = max(self.work_bound(), self.critical_path)
        st = state.stealing
        r0, m0, f0 = self.steals_at_start
        rows = dict(self.departed)
        for ws in state.workers.values():
            rows[ws.address] = self._add_stint(rows.get(ws.address), ws)
        workers = {}
        for addr, (busy, n, threads) in rows.items():
            workers[addr] = {
                "busy": busy,
                "tasks": int(n),
                "nthreads": int(threads),
                "utilisation": busy / (threads * makespan) if makespan > 0 and threads else 0.0,
            }
        return {
            "computation": self.computation,
            "tasks": self.tasks,
            "makespan": makespan,
            "lower_bound": lower,
            "ratio": makespan / lower if lower > 0 else None,
            "work": self.work,
            "critical_path": self.critical_path,
            "work_bound": self.work_bound(),
            "bytes_moved": self.bytes_moved,
            "transfers": self.transfers,
            "steal_requests": st.n_requested - r0,
            "steals": st.n_moved - m0,
            "steals_refused": st.n_refused - f0,
            "workers": workers,
        }
