"""Terse constructors for core events, so tests read as the exchange they check.

Every builder takes the stimulus id as ``sid``; instructions carry the
stimulus id of the event that caused them, so tests assert it too.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

from teamster.core import messages as m
from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.instructions import SendToClient, SendToWorker

#: An opaque run_spec; the scheduler never looks inside.
RUN = m.Serialized(b"run")
EXC = m.Serialized(b"exc")
TB = m.Serialized(b"tb")

A, B, C, D = "tcp://a:1", "tcp://b:1", "tcp://c:1", "tcp://d:1"


def register_worker(
    address: str,
    nthreads: int = 1,
    *,
    name: str = "",
    resources: dict[str, float] | None = None,
    memory_limit: int = 2**30,
    now: float = 0.0,
    sid: str = "",
) -> m.RegisterWorker:
    return m.RegisterWorker(
        address, name or address, nthreads, memory_limit,
        tuple(sorted((resources or {}).items())), now, sid or f"register-{address}",
    )


def spec(
    key: m.Key,
    *deps: m.Key,
    priority: m.Priority = (),
    workers: tuple[str, ...] | None = None,
    allow_other_workers: bool = False,
    resources: dict[str, float] | None = None,
    retries: int = 0,
    run_spec: m.Serialized | None = RUN,
) -> m.TaskSpec:
    res = tuple(sorted(resources.items())) if resources else None
    return m.TaskSpec(key, run_spec, tuple(deps), priority, workers, allow_other_workers,
                      res, retries)


def graph(
    client: str, *tasks: m.TaskSpec, wanted: tuple[m.Key, ...] | None = None,
    now: float = 0.0, sid: str = "graph",
) -> m.UpdateGraph:
    if wanted is None:
        wanted = tuple(t.key for t in tasks)
    return m.UpdateGraph(client, tuple(tasks), wanted, now, sid)


def current_run(s: SchedulerState, key: m.Key) -> int:
    """The run_id of the key's current assignment (what a worker echoes), or -1."""
    ts = s.tasks.get(key)
    return ts.run_id if ts is not None else -1


def finished(
    s: SchedulerState, worker: str, key: m.Key, *, nbytes: int = 8, type_name: str = "int",
    duration: float = 1.0, stop: float = 1.0, sid: str = "", run_id: int | None = None,
    transfers: tuple[tuple[tuple[m.Key, ...], int], ...] = (),
    worker_slot: int | None = None,
) -> m.TaskFinished:
    """A worker's result for the current assignment of ``key`` (unless ``run_id``
    is given), carrying the worker's number as a registered worker's does
    (unless ``worker_slot`` is given)."""
    run = current_run(s, key) if run_id is None else run_id
    slot = s.worker_slots.slot_of(worker) if worker_slot is None else worker_slot
    return m.TaskFinished(worker, key, nbytes, type_name, duration, stop, run, transfers,
                          sid or f"done-{key}", slot)


def erred(
    s: SchedulerState, worker: str, key: m.Key, *, text: str = "ZeroDivisionError('boom')",
    duration: float = 1.0, sid: str = "", run_id: int | None = None,
) -> m.TaskErred:
    run = current_run(s, key) if run_id is None else run_id
    return m.TaskErred(worker, key, EXC, TB, text, duration, run, sid or f"err-{key}")


def compute(
    worker: str, key: m.Key, priority: m.Priority, sid: str, *,
    who_has: tuple[tuple[m.Key, tuple[str, ...], int], ...] = (),
    resources: tuple[tuple[str, float], ...] | None = None, run_spec: m.Serialized | None = RUN,
    run_id: Any = ANY, announce: bool = False,
) -> SendToWorker:
    """The instruction that sends a ComputeTask to ``worker`` (any run_id unless given)."""
    return SendToWorker(worker, m.ComputeTask(key, run_spec, who_has, priority, resources,
                                              run_id, announce, sid))


def free(worker: str, sid: str, *keys: m.Key, run_id: int = -1) -> SendToWorker:
    return SendToWorker(worker, m.FreeKeys(tuple(keys), sid, run_id))


def in_memory(
    client: str, key: m.Key, who_has: tuple[str, ...], sid: str, *, nbytes: int = 8,
    type_name: str = "int",
) -> SendToClient:
    return SendToClient(client, m.KeyInMemory(key, who_has, nbytes, type_name, sid))


def key_erred(
    client: str, key: m.Key, sid: str, *, text: str = "ZeroDivisionError('boom')",
    exception: m.Serialized | None = EXC, traceback: m.Serialized | None = TB,
) -> SendToClient:
    return SendToClient(client, m.KeyErred(key, exception, traceback, text, sid))


def cancelled(client: str, key: m.Key, sid: str) -> SendToClient:
    return SendToClient(client, m.KeyCancelled(key, "cancelled", sid))


def scheduler(*workers: m.RegisterWorker, clients: tuple[str, ...] = ("c",),
              **kwargs: Any) -> SchedulerState:
    """A validating scheduler with these workers and clients registered (no output expected)."""
    s = SchedulerState(validate=True, **kwargs)
    for w in workers:
        assert s.handle(w) == []
    for c in clients:
        assert s.handle(m.RegisterClient(c, 0.0, f"hello-{c}")) == []
    return s


def states(s: SchedulerState, *keys: m.Key) -> dict[m.Key, str]:
    """The scheduler state of each key ("forgotten" if unknown)."""
    return {k: s.tasks[k].state if k in s.tasks else "forgotten" for k in keys}
