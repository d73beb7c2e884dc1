"""Invariants of WorkerState, checked after events in validation mode.

The worker's twin of ``core/scheduler/validation.py``: each check names the
indices that must agree, and a failure raises InvariantError carrying the
task's story.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamster.core import messages as m
from teamster.core.story import InvariantError
from teamster.core.worker.entities import (
    NO_PEERS,
    NO_RESOURCES,
    NO_TASKS,
    WORKER_TASK_STATES,
    WorkerTask,
)

if TYPE_CHECKING:
    from teamster.core.worker.state import WorkerState


def validate(w: WorkerState) -> None:
    live_ready = 0
    for _, seq, ts in w.ready:
        if ts.ready_seq == seq and ts.state == "ready":
            live_ready += 1
    n_ready = sum(1 for ts in w.tasks.values() if ts.state == "ready")
    if not live_ready == n_ready == w.n_ready:
        raise InvariantError(f"ready heap {live_ready} / tasks {n_ready} / count {w.n_ready}")
    if len(w.executing) > w.nthreads:
        raise InvariantError(f"{len(w.executing)} executing on {w.nthreads} threads")
    if w.unreported and not w._busy():
        raise InvariantError(f"transfers {w.unreported} unreported by an idle worker")
    filed = [ts for todo in w.fetch_by_peer.values() for ts in todo]
    if len(filed) != w.n_fetch or len(set(filed)) != len(filed):
        raise InvariantError("fetch index count mismatch")
    for ts in w.executing:
        if w.tasks.get(ts.key) is not ts:
            _fail(w, ts, "occupies a thread but is not registered")
    for key, ts in w.tasks.items():
        validate_task(w, key, ts)
    for peer, batch in w.in_flight.items():
        for ts in batch:
            if ts.state == "flight" and ts.coming_from != peer:
                _fail(w, ts, f"in flight from {peer} but coming_from {ts.coming_from}")


def _fail(w: WorkerState, ts: WorkerTask, what: str) -> None:
    lines = "\n".join(f"  {e.start} -> {e.finish} ({e.stimulus_id})"
                      for e in w.story(ts.key)[-20:])
    raise InvariantError(f"{what}\nworker task {ts.key!r} in {ts.state!r}; story:\n{lines}")


def validate_task(w: WorkerState, key: m.Key, ts: WorkerTask) -> None:
    if ts.key != key or ts.state not in WORKER_TASK_STATES or ts.state == "forgotten":
        _fail(w, ts, "bad registration")
    if NO_TASKS or NO_PEERS or NO_RESOURCES:
        _fail(w, ts, "a shared empty container (entities.NO_*) was written to")
    if ts.state == "waiting":
        expected = {d for d in ts.dependencies if d.state != "memory"}
        if expected != set(ts.waiting_for_data) or not expected:
            _fail(w, ts, "waiting_for_data differs from inputs not in memory")
    elif ts.waiting_for_data:
        _fail(w, ts, "waiting_for_data set outside waiting")
    if ts.state in ("ready", "executing"):
        for d in ts.dependencies:
            if d.state != "memory":
                _fail(w, ts, f"runs before input {d.key!r} arrived")
    if (ts.state in ("executing", "cancelled")) != (ts in w.executing):
        _fail(w, ts, "executing index disagrees")
    filed = any(ts in todo for todo in w.fetch_by_peer.values()) if w.n_fetch else False
    if (ts.state == "fetch") != filed:
        _fail(w, ts, "fetch state disagrees with the fetch index")
    if ts.state == "flight" and ts not in w.in_flight.get(ts.coming_from or "", ()):
        _fail(w, ts, "flight without a request in flight")
    for d in ts.dependencies:
        if ts not in d.dependents or w.tasks.get(d.key) is not d:
            _fail(w, ts, f"dependency {d.key!r} not linked back")
    for d in ts.dependents:
        if ts not in d.dependencies:
            _fail(w, ts, f"dependent {d.key!r} not linked back")
    if ts.state in ("memory", "fetch", "flight") and not w._needed(ts):
        _fail(w, ts, "held or fetched but needed by nobody")
