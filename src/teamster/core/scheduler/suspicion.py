"""Which tasks a dead worker's death is held against.

A task that was running on ``ALLOWED_FAILURES`` workers when each of them
died is presumed to be what kills them and is failed ("KilledWorker")
rather than retried for ever. Only a task the worker was *running* counts:
workers hold queues, and most of a dead worker's tasks never started.

What runs is known from heartbeats (``WorkerInfo.running``), read only when
the worker dies, so nothing is kept per task. A task that dies with its
worker before a heartbeat saw it run is counted in ``lost_runs`` instead;
from then on its start is announced (``ComputeTask.announce``): the worker
sends ``TasksStarted`` and runs it only once that is written, so a task that
kills its process at once is still caught (after three or four deaths).
See docs/design.md, "Only a task that was running is suspected".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from teamster.core import messages as m
from teamster.core.scheduler.entities import WorkerInfo

if TYPE_CHECKING:
    from teamster.core.scheduler.state import SchedulerState

#: A task that was running on this many workers when each of them died is
#: presumed to be what kills them, and is failed rather than retried forever.
ALLOWED_FAILURES: Final = 3


def release_lost_tasks(s: SchedulerState, ws: WorkerInfo, reason: str,
                       stimulus_id: str) -> None:
    """``ws`` died: release its tasks to run elsewhere, failing those it was
    running for the last allowed time."""
    running, announced = ws.running, ws.announced or {}
    for ts in ws.processing_tasks():
        ts.lost_runs += 1
        if ts.key not in running and ts.key not in announced:
            s.transition(ts, "released", stimulus_id)
            continue
        ts.suspicious += 1
        if ts.suspicious >= ALLOWED_FAILURES:
            ts.exception_text = (
                f"KilledWorker: {ts.key!r} was running on {ts.suspicious} workers that "
                f"died (last {ws.address}: {reason}); it may be what kills them, "
                "so it was not retried."
            )
            ts.exception_blame = ts
            s.transition(ts, "erred", stimulus_id)
        else:
            s.transition(ts, "released", stimulus_id)


def tasks_started(s: SchedulerState, ev: m.TasksStarted) -> None:
    """A worker starts announced tasks: remember them until they leave it."""
    ws = s.workers.get(ev.worker)
    if ws is not None:
        if ws.announced is None:
            ws.announced = {}
        ws.announced.update(dict.fromkeys(ev.keys))


def heard_from(s: SchedulerState, ws: WorkerInfo, ev: m.Heartbeat) -> None:
    """A heartbeat: what ``ws`` runs now; forget announced tasks no longer assigned there."""
    ws.running = tuple([key for key, _ in ev.executing])
    announced = ws.announced
    if announced:
        tasks = s.tasks
        for key in list(announced):
            ts = tasks.get(key)
            if ts is None or ts.processing_on is not ws:
                del announced[key]
        if not announced:
            ws.announced = None
