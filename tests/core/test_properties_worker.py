"""Properties of one ``WorkerState`` under random event sequences (tier 2).

As ``test_properties_scheduler.py`` does for the scheduler: hypothesis drives
the real worker state machine, ``validate=True``, with a simulated shell
(data store, executor, peers) and a simulated scheduler, runs it to
quiescence and checks what must then hold (``WorkerWorld.check_quiescent``).
On failure the message carries the last events and the key's story.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core import messages as m
from teamster.core.worker import WorkerState
from teamster.core.worker import events as wev
from teamster.core.worker.instructions import DeleteData, Execute, GatherDep, SendToScheduler

from .properties import (
    EXC,
    RUN,
    RUN2,
    SETTINGS,
    TIMEOUT_S,
    TracedWorld,
)

pytestmark = pytest.mark.timeout(TIMEOUT_S)


PEERS = ("tcp://p1", "tcp://p2", "tcp://p3")
ME = "tcp://me"


class WorkerWorld(TracedWorld):
    """One WorkerState, its shell's data store, executor and peers, simulated."""

    def __init__(self, nthreads: int, gpus: float) -> None:
        self.w = WorkerState(ME, nthreads, resources={"GPU": gpus} if gpus else None,
                             validate=True)
        super().__init__(self.w)
        #: The shell's data store.
        self.store: set[m.Key] = set()
        #: Execute instructions not yet completed.
        self.running: dict[m.Key, Execute] = {}
        #: GatherDep instructions not yet answered.
        self.gathers: dict[str, GatherDep] = {}
        #: What each peer really holds.
        self.peer_data: dict[str, set[m.Key]] = {p: set() for p in PEERS}
        #: Keys the scheduler (as simulated) assigned here and not yet freed,
        #: with the number of reports (finished/erred/rescheduled) since.
        self.assigned: dict[m.Key, int] = {}
        #: Key -> run_id of its latest ComputeTask; every report must echo it.
        self.run_ids: dict[m.Key, int] = {}
        self.n_runs = 0
        #: Key -> run_spec of its latest ComputeTask.
        self.run_specs: dict[m.Key, m.Serialized | None] = {}
        #: (key, run_spec) of the execution whose end is being handled.
        self.finishing: tuple[m.Key, m.Serialized | None] | None = None
        self.n_keys = 0

    def handle(self, event: Any) -> list[Any]:
        out = self.handle_traced(event)
        for instr in out:
            if isinstance(instr, Execute):
                if instr.key in self.running:
                    raise self.fail(f"executed twice at once: {instr}", instr.key)
                missing = [d for d in instr.dependencies if d not in self.store]
                if missing:
                    raise self.fail(f"Execute before inputs {missing} are stored", instr.key)
                self.running[instr.key] = instr
            elif isinstance(instr, GatherDep):
                if instr.worker in self.gathers:
                    raise self.fail(f"two requests in flight to {instr.worker}")
                if instr.worker == ME:
                    raise self.fail("gathering from itself")
                self.gathers[instr.worker] = instr
            elif isinstance(instr, DeleteData):
                for key in instr.keys:
                    self.store.discard(key)
            elif isinstance(instr, SendToScheduler):
                msg: Any = instr.msg
                if isinstance(msg, m.TaskFinished | m.TaskErred | m.RescheduleTask):
                    if msg.key in self.assigned:
                        if msg.run_id != self.run_ids[msg.key]:
                            raise self.fail(f"report for run {msg.run_id}, latest is "
                                            f"{self.run_ids[msg.key]}: {msg}", msg.key)
                        self.assigned[msg.key] += 1
                        ran = self.finishing
                        if (isinstance(msg, m.TaskFinished | m.TaskErred) and ran is not None
                                and ran[0] == msg.key and ran[1] != self.run_specs[msg.key]):
                            raise self.fail(f"reported another computation's result: {msg}",
                                            msg.key)
                        if self.assigned[msg.key] > 1:
                            raise self.fail(f"assignment reported twice: {msg}", msg.key)
                    if isinstance(msg, m.TaskFinished) and msg.key not in self.store:
                        raise self.fail(f"TaskFinished for a value not stored: {msg}", msg.key)
                reported = msg.keys if isinstance(msg, m.AddKeys) else (
                    [k for keys, _ in msg.transfers for k in keys]
                    if isinstance(msg, m.TaskFinished) else [])
                for key in reported:
                    if key not in self.store:
                        raise self.fail(f"a copy reported but not stored: {msg}", key)
            else:
                raise self.fail(f"unknown instruction {instr!r}")
        if len(self.running) > self.w.nthreads:
            raise self.fail(f"{len(self.running)} running on {self.w.nthreads} threads")
        return out

    # -------------------------------------------------------------- actions

    @staticmethod
    def rank(key: m.Key) -> int:
        """Dependencies always have a lower rank: graphs stay acyclic."""
        prefix, _, n = str(key).partition("-")
        return int(n) + (0 if prefix == "d" else 100)

    def compute(self, draw: Any) -> None:
        known = sorted(self.w.tasks, key=str)
        if known and draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(known))  # again, or a key it fetches or holds
        else:
            self.n_keys += 1
            key = f"t-{self.n_keys}"
        pool = sorted({k for k in known + [f"d-{i}" for i in range(6)]
                       if self.rank(k) < self.rank(key)}, key=str)
        deps = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
        who_has = []
        for dep in deps:
            holders = tuple(draw(st.lists(st.sampled_from(PEERS + (ME,)), max_size=2,
                                          unique=True)))
            for peer in holders:
                if peer != ME and draw(st.integers(0, 4)):
                    self.peer_data[peer].add(dep)  # usually the scheduler is right
            who_has.append((dep, holders, draw(st.sampled_from([10, 10**8]))))
        # The scheduler sends GPU tasks only to workers that have GPUs.
        gpu = bool(self.w.total_resources) and draw(st.integers(0, 4)) == 0
        priority = (draw(st.integers(-1, 1)), self.n_events)
        # A freed key may come back as a different computation (released,
        # forgotten and resubmitted under the same key by a client).
        # (Assigned and not freed, it is a duplicate: the same computation.)
        if key in self.assigned:
            run_spec = self.run_specs[key]
        else:
            run_spec = RUN2 if draw(st.integers(0, 3)) == 0 else RUN
        self.assigned[key] = 0
        self.n_runs += 1
        self.run_ids[key] = self.n_runs
        self.run_specs[key] = run_spec
        self.handle(m.ComputeTask(key, run_spec, tuple(who_has), priority,
                                  (("GPU", 1.0),) if gpu else None, self.n_runs,
                                  False, f"compute-{key}"))

    def free(self, keys: list[m.Key]) -> None:
        for key in keys:
            self.assigned.pop(key, None)
        self.handle(m.FreeKeys(tuple(keys), f"free-{self.n_events}"))

    def execute_done(self, key: m.Key, ok: bool) -> None:
        self.finishing = (key, self.running.pop(key).run_spec)
        if ok:
            self.store.add(key)  # the shell stores the value before telling the core
            self.handle(wev.ExecuteSuccess(key, 8, "int", 0.01, 1.0, f"ran-{key}"))
        else:
            self.handle(wev.ExecuteFailure(key, EXC, None, "boom", 0.01, f"failed-{key}"))
        self.finishing = None

    def gather_done(self, peer: str, mode: str) -> None:
        req = self.gathers.pop(peer)
        if mode == "network":
            self.handle(wev.GatherDepFailure(peer, req.keys, "connection reset",
                                             f"gather-failed-{peer}"))
            return
        have = self.peer_data[peer]
        received = [(k, 8) for k in req.keys if k in have]
        missing = [k for k in req.keys if k not in have]
        if mode == "partial" and received:
            received = received[:-1]  # a key neither sent nor reported missing
        for key, _ in received:
            self.store.add(key)
        self.handle(wev.GatherDepSuccess(peer, tuple(received), tuple(missing), 0.01,
                                         f"gathered-{peer}"))

    def put(self, key: m.Key) -> None:
        self.store.add(key)
        self.handle(wev.DataPut(((key, 8),), f"put-{key}"))

    # ------------------------------------------------------------ quiescence

    def run_to_quiescence(self) -> None:
        for _ in range(2000):
            if self.gathers:
                peer = sorted(self.gathers)[0]
                self.gather_done(peer, "ok")
            elif self.running:
                self.execute_done(sorted(self.running, key=str)[0], ok=True)
            else:
                return
        raise self.fail("no quiescence after 2000 rounds")

    def check_quiescent(self) -> None:
        w = self.w
        w.validate()
        # Nothing is left half-done: no fetch queued, nothing ready or waiting.
        stuck = {k: ts.state for k, ts in w.tasks.items() if ts.state != "memory"}
        if stuck:
            raise self.fail(f"tasks left unfinished at quiescence: {stuck}",
                            next(iter(stuck)))
        # Every task still assigned got exactly one report, or sits in memory
        # (reported when it got there).
        for key, reports in self.assigned.items():
            if reports == 0:
                raise self.fail(f"assigned {key!r} never reported", key)
        # The store holds exactly the values the state machine says it holds.
        in_memory = {k for k, ts in w.tasks.items() if ts.state == "memory"}
        if in_memory != self.store:
            raise self.fail(f"store {sorted(map(str, self.store))} != memory "
                            f"{sorted(map(str, in_memory))}",
                            next(iter(in_memory ^ self.store)))
        if w.available_resources != w.total_resources:
            raise self.fail(f"resources leaked: {w.available_resources}")


def _worker_step(world: WorkerWorld, draw: Any) -> None:
    actions = ["compute"] * 4 + ["put"]
    if world.w.tasks:
        actions += ["free"] * 2
    if world.running:
        actions += ["execute"] * 4
    if world.gathers:
        actions += ["gather"] * 4
    action = draw(st.sampled_from(actions))
    if action == "compute":
        world.compute(draw)
    elif action == "put":
        known = sorted(world.w.tasks, key=str)
        key = draw(st.sampled_from(known)) if known and draw(st.booleans()) else "d-9"
        world.put(key)
    elif action == "free":
        keys = draw(st.lists(st.sampled_from(sorted(world.w.tasks, key=str)), min_size=1,
                             max_size=3, unique=True))
        world.free(keys)
    elif action == "execute":
        world.execute_done(draw(st.sampled_from(sorted(world.running, key=str))),
                           draw(st.integers(0, 4)) > 0)
    elif action == "gather":
        world.gather_done(draw(st.sampled_from(sorted(world.gathers))),
                          draw(st.sampled_from(["ok", "ok", "ok", "network", "partial"])))


@SETTINGS
@given(st.data())
def test_worker_random_events(data: st.DataObject) -> None:
    world = WorkerWorld(nthreads=data.draw(st.integers(1, 3), label="nthreads"),
                        gpus=data.draw(st.sampled_from([0.0, 1.0, 2.0]), label="gpus"))
    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        _worker_step(world, data.draw)
    world.run_to_quiescence()
    world.check_quiescent()
