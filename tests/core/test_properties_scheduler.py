"""Properties of the scheduler under random event sequences (tier 2).

Hypothesis drives a small simulated world through the real ``SchedulerState``,
with ``validate=True`` so every index is cross-checked after every event:
random DAGs (several prefixes, some with restrictions, resources or
retries), clients submitting, releasing, cancelling and scattering, workers
joining, leaving, re-registering, heartbeating and going silent (Ticks with
advancing time), and simulated workers that finish, fail, give up or lose
the tasks the scheduler sent them, and workers retired gracefully (their
unique data copied elsewhere). Messages from the scheduler to each worker
wait in a FIFO inbox and are delivered at random moments, so every crossing
of messages on the wire (a result racing a FreeKeys, a stale AddKeys, ...)
is exercised. After the random phase the world is run to quiescence, and
liveness and consistency are checked (see ``SchedulerWorld.check_quiescent``).

On failure, the assertion message carries the last events and the story of
the key concerned; hypothesis prints the minimal example and the blob to
reproduce it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core import messages as m
from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.events import RetireWorkers, Tick
from teamster.core.scheduler.instructions import (
    CloseWorker,
    RetirementDone,
    SendToClient,
    SendToWorker,
)

from .properties import (
    EXC,
    RUN,
    SETTINGS,
    TIMEOUT_S,
    TracedWorld,
)

pytestmark = pytest.mark.timeout(TIMEOUT_S)

PREFIXES = ("load", "inc", "add", "sum")
HEARTBEAT_TIMEOUT = 10.0


@dataclass
class SimWorker:
    """What one worker process really holds and runs, as the test knows it."""

    address: str
    name: str
    nthreads: int
    resources: dict[str, float]
    #: ComputeTasks delivered and not yet finished, failed or freed.
    processing: dict[m.Key, m.ComputeTask] = field(default_factory=dict)
    #: Keys whose values this worker holds -> the run that made the value,
    #: FETCHED_COPY for a copy, -1 for a scattered value or a counted copy
    #: (what the worker's record says; a FreeKeys naming a run drops only a
    #: value from that run).
    memory: dict[m.Key, int] = field(default_factory=dict)
    #: Messages from the scheduler not yet delivered (FIFO, as on a TCP stream).
    inbox: deque[m.Message] = field(default_factory=deque)
    #: Its number at the scheduler (``TaskFinished.worker_slot``).
    slot: int = -1


class SchedulerWorld(TracedWorld):
    """A scheduler, simulated workers and clients, and the log of what was said."""

    def __init__(self) -> None:
        self.s = SchedulerState(validate=True, heartbeat_timeout=HEARTBEAT_TIMEOUT)
        super().__init__(self.s)
        self.now = 0.0
        self.workers: dict[str, SimWorker] = {}
        self.n_workers = 0
        self.n_keys = 0
        #: Every key ever submitted or scattered (dependencies may name any of them).
        self.known: list[m.Key] = []
        #: (event index, client, message) for every SendToClient.
        self.client_log: list[tuple[int, str, m.Message]] = []
        #: (client, key) -> index of the event that made the client want the key.
        self.wanted_since: dict[tuple[str, m.Key], int] = {}
        #: Retirement requests sent and not yet answered.
        self.retire_requests: set[str] = set()
        #: Workers drained without close: their manager stops them next.
        self.drained: list[str] = []

    # ---------------------------------------------------------------- driving

    def handle(self, event: Any) -> list[Any]:
        out = self.handle_traced(event)
        self._route(out)
        self._track_wants()
        while self.drained:
            address = self.drained.pop()
            if address in self.workers:
                self.remove_worker(address)
        self._check_no_doomed_replica()
        return out

    def _check_no_doomed_replica(self) -> None:
        """A replica the scheduler counts must not be one a FreeKeys already on its
        way to that worker will delete (the run_id race made such ghosts)."""
        for address, sim in self.workers.items():
            ws = self.s.workers.get(address)
            if ws is None or not sim.inbox:
                continue
            doomed = {k for msg in sim.inbox if isinstance(msg, m.FreeKeys) for k in msg.keys
                      if msg.run_id == -1 or sim.memory.get(k) == msg.run_id}
            ghosts = [ts.key for ts in ws.has_what if ts.key in doomed]
            if ghosts:
                raise self.fail(f"{address}: the scheduler counts replicas of {ghosts} that a "
                                "queued FreeKeys will delete", ghosts[0])

    def _route(self, out: list[Any]) -> None:
        s = self.s
        for instr in out:
            if isinstance(instr, SendToWorker):
                if instr.worker not in s.workers:
                    raise self.fail(f"message to a worker the scheduler does not know: {instr}")
                sim = self.workers.get(instr.worker)
                if sim is not None:
                    sim.inbox.append(instr.msg)
            elif isinstance(instr, SendToClient):
                msg: Any = instr.msg
                self.client_log.append((self.n_events, instr.client, msg))
                ts = s.tasks.get(msg.key)
                if isinstance(msg, m.KeyInMemory):
                    if ts is None or ts.state != "memory" or not msg.who_has:
                        raise self.fail(f"KeyInMemory for a key not in memory: {msg}", msg.key)
                    if set(msg.who_has) - set(s.workers):
                        raise self.fail(f"KeyInMemory names departed workers: {msg}", msg.key)
                elif isinstance(msg, m.KeyErred):
                    if ts is None or ts.state != "erred":
                        raise self.fail(f"KeyErred for a key not erred: {msg}", msg.key)
                    if not msg.exception_text and msg.exception is None:
                        raise self.fail(f"KeyErred without an error: {msg}", msg.key)
                if isinstance(msg, m.KeyInMemory | m.KeyErred):
                    cs = s.clients.get(instr.client)
                    if cs is None or ts not in cs.wants_what:
                        raise self.fail(f"report to a client that does not want it: {instr}",
                                        msg.key)
            elif isinstance(instr, CloseWorker):
                if instr.worker in s.workers:
                    raise self.fail(f"CloseWorker for a worker still registered: {instr}")
                self.workers.pop(instr.worker, None)
            elif isinstance(instr, RetirementDone):
                if instr.request_id not in self.retire_requests:
                    raise self.fail(f"answer to no retirement request: {instr}")
                self.retire_requests.discard(instr.request_id)
                for address, info in instr.retired:
                    if info["closed"] and address in s.workers:
                        raise self.fail(f"retired and closed but still registered: {instr}")
                    if not info["closed"]:
                        self.drained.append(address)
            else:
                raise self.fail(f"unknown instruction {instr!r}")

    def _track_wants(self) -> None:
        current = {
            (cid, ts.key) for cid, cs in self.s.clients.items() for ts in cs.wants_what
        }
        for pair in list(self.wanted_since):
            if pair not in current:
                del self.wanted_since[pair]
        for pair in current:
            self.wanted_since.setdefault(pair, self.n_events)

    def fresh_key(self, prefix: str) -> str:
        self.n_keys += 1
        return f"{prefix}-{self.n_keys}"

    # -------------------------------------------------------------- actions

    def add_worker(self, nthreads: int, gpu: bool, name_clash: bool, reuse: bool) -> None:
        if reuse and self.workers:
            address = sorted(self.workers)[0]  # a restarted worker at the same address
        else:
            self.n_workers += 1
            address = f"tcp://w{self.n_workers}"
        name = address
        if name_clash:
            others = sorted(ws.name for ws in self.s.workers.values() if ws.address != address)
            if others:
                name = others[0]
        resources = {"GPU": 1.0} if gpu else {}
        self.workers[address] = SimWorker(address, name, nthreads, resources)
        self.handle(m.RegisterWorker(address, name, nthreads, 2**30,
                                     tuple(resources.items()), self.now,
                                     f"register-{address}-{self.n_events}"))
        sim = self.workers.get(address)
        if sim is not None:  # (not refused: a name clash closes it)
            sim.slot = self.s.worker_slots.slot_of(address)

    def worker_slot(self, address: str) -> int:
        """The number a report from ``address`` carries: usually the worker's
        own; every third report -1 or any number (another worker's, a
        removed one's, none), as a stale one would be. The scheduler must
        tell them apart."""
        if self.n_events % 3:
            return self.workers[address].slot
        return self.n_events % 5 - 1

    def remove_worker(self, address: str) -> None:
        self.workers.pop(address, None)
        self.handle(m.RemoveWorker(address, "gone", self.now, f"remove-{address}"))

    def heartbeat(self, address: str) -> None:
        sim = self.workers.get(address)
        executing = tuple((k, 1.0) for k in list(sim.processing)[:1]) if sim else ()
        self.handle(m.Heartbeat(address, self.now, (("cpu", 0.5),), executing,
                                f"hb-{self.n_events}"))

    def tick(self, dt: float) -> None:
        self.now += dt
        self.handle(Tick(self.now, f"tick-{self.n_events}"))

    def submit(self, client: str, draw: Any) -> None:
        n_new = draw(st.integers(1, 5))
        specs: list[m.TaskSpec] = []
        new_keys: list[str] = []
        addresses = sorted(self.workers) + ["tcp://nobody"]
        alive = [k for k in self.known[-12:] if k in self.s.tasks]
        gone = [k for k in self.known[-12:] if k not in self.s.tasks]
        gone = gone[:1] if draw(st.integers(0, 9)) == 0 else []
        for i in range(n_new):
            key = self.fresh_key(draw(st.sampled_from(PREFIXES)))
            # Mostly on this graph's keys and live ones; rarely on a key the
            # scheduler has forgotten (the client's future was released).
            pool = new_keys * 3 + alive + gone
            deps = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
            kind = draw(st.sampled_from(["plain"] * 6 + ["workers", "loose", "gpu", "retry"]))
            workers = None
            if kind in ("workers", "loose"):
                workers = (draw(st.sampled_from(addresses)),)
            specs.append(m.TaskSpec(
                key, RUN if draw(st.integers(0, 9)) else (None if deps else RUN), tuple(deps),
                (draw(st.sampled_from([0, 0, 0, 1, -1])), i),
                workers, kind == "loose",
                (("GPU", 1.0),) if kind == "gpu" else None,
                1 if kind == "retry" else 0,
            ))
            new_keys.append(key)
        if self.known and draw(st.booleans()):
            # Re-submitting a known key: same key, same computation.
            old = draw(st.sampled_from(self.known))
            specs.append(m.TaskSpec(old, RUN, (), ()))
            new_keys.append(old)
        wanted = draw(st.lists(st.sampled_from(new_keys), min_size=1, unique=True))
        self.known += [k for k in new_keys if k not in self.known]
        self.handle(m.UpdateGraph(client, tuple(specs), tuple(wanted), self.now,
                                  f"graph-{self.n_events}"))

    def retire(self, workers: list[str], close: bool) -> None:
        request_id = f"retire-{self.n_events}"
        self.retire_requests.add(request_id)
        self.handle(RetireWorkers(tuple(workers), close, request_id, self.now, request_id))

    def release(self, client: str, keys: list[m.Key]) -> None:
        self.handle(m.ReleaseKeys(client, tuple(keys), f"release-{self.n_events}"))

    def cancel(self, client: str, keys: list[m.Key]) -> None:
        self.handle(m.CancelKeys(client, tuple(keys), f"cancel-{self.n_events}"))

    def remove_client(self, client: str) -> None:
        self.handle(m.RemoveClient(client, self.now, f"bye-{client}-{self.n_events}"))

    def register_client(self, client: str) -> None:
        self.handle(m.RegisterClient(client, self.now, f"hello-{client}-{self.n_events}"))

    def scatter(self, client: str, key: m.Key, holders: list[str]) -> None:
        for address in holders:
            # The client's PutData travels on its own connection; a FreeKeys
            # for the same key still queued from the scheduler would delete
            # the new value (a protocol race the core cannot see; see the
            # report). Model a worker that is caught up first.
            if address in self.workers:
                self.deliver(address, len(self.workers[address].inbox))
            sim = self.workers.get(address)
            if sim is not None:
                sim.memory[key] = -1
        if key not in self.known:
            self.known.append(key)
        self.handle(m.ScatteredData(client, ((key, tuple(holders), 100),),
                                    f"scatter-{self.n_events}"))

    def deliver(self, address: str, n: int) -> None:
        sim = self.workers[address]
        for _ in range(min(n, len(sim.inbox))):
            msg = sim.inbox.popleft()
            if isinstance(msg, m.ComputeTask):
                if msg.key in sim.memory:
                    # A worker asked to compute what it holds reports it at once.
                    sim.memory[msg.key] = msg.run_id
                    self.handle(m.TaskFinished(address, msg.key, 8, "int", 0.0, 0.0, msg.run_id,
                                               (), f"have-{msg.key}-{self.n_events}",
                                               self.worker_slot(address)))
                else:
                    sim.processing[msg.key] = msg
            elif isinstance(msg, m.FreeKeys):
                for key in msg.keys:
                    if msg.run_id != -1:
                        compute = sim.processing.get(key)
                        if sim.memory.get(key, msg.run_id) != msg.run_id or (
                                compute is not None and compute.run_id != msg.run_id):
                            continue  # another run's value, a copy or a scatter
                    sim.processing.pop(key, None)
                    sim.memory.pop(key, None)
            elif isinstance(msg, m.StealRequest):
                # Queued work is given up; anything else (finished, unknown) refused.
                stolen = sim.processing.pop(msg.key, None) is not None
                self.handle(m.StealResponse(address, msg.key, msg.steal_id, stolen,
                                            "ready" if stolen else "memory",
                                            f"steal-{msg.key}-{self.n_events}"))
            elif isinstance(msg, m.AcquireReplicas):
                self._acquire(sim, msg)
            else:
                raise self.fail(f"unexpected message to a worker: {msg!r}")
            if self.workers.get(address) is not sim:
                return  # it was closed by the reaction to its own message

    def _acquire(self, sim: SimWorker, msg: m.AcquireReplicas) -> None:
        """Copy keys off a retiring worker as a real worker would."""
        added: list[m.Key] = []
        failed: list[m.Key] = []
        for key, holders, _ in msg.who_has:
            peer = next((self.workers[h] for h in holders if h in self.workers), None)
            if key in sim.memory:
                sim.memory[key] = -1  # counted as a copy now
                added.append(key)
                continue
            if peer is not None and key in peer.memory:
                sim.memory[key] = m.FETCHED_COPY
                added.append(key)
                continue
            if peer is not None:
                self.handle(m.MissingData(sim.address, key, peer.address,
                                          f"missing-{key}-{self.n_events}"))
            failed.append(key)
        if added and self.workers.get(sim.address) is sim:
            self.handle(m.AddKeys(sim.address, tuple(added), "", 0, 0.0, f"add-{self.n_events}"))
        if failed and self.workers.get(sim.address) is sim:
            self.handle(m.ReplicasNotAcquired(sim.address, tuple(failed),
                                              f"not-acquired-{self.n_events}"))

    def _fetch_inputs(self, sim: SimWorker, msg: m.ComputeTask, added: list[m.Key]) -> bool:
        """Gather the task's inputs as a real worker would; False if it gave up.

        The copies it made are put in ``added`` for the caller to report.
        """
        ok = True
        for dep, holders, _ in msg.who_has:
            if dep in sim.memory:
                continue
            got = False
            for holder in holders:
                peer = self.workers.get(holder)
                if peer is not None and dep in peer.memory:
                    sim.memory[dep] = m.FETCHED_COPY
                    added.append(dep)
                    got = True
                    break
                if peer is not None:
                    self.handle(m.MissingData(sim.address, dep, holder,
                                              f"missing-{dep}-{self.n_events}"))
                    if self.workers.get(sim.address) is not sim:
                        return False
            if not got:
                ok = False
        return ok

    def finish(self, address: str, key: m.Key, duration: float, piggyback: bool = False) -> None:
        """Run ``key``; report the inputs it copied with AddKeys first, or
        (``piggyback``) with the TaskFinished, as a real worker does small ones."""
        sim = self.workers[address]
        msg = sim.processing[key]
        added: list[m.Key] = []
        ok = self._fetch_inputs(sim, msg, added)
        if added and (not ok or not piggyback) and self.workers.get(address) is sim:
            self.handle(m.AddKeys(address, tuple(added), "", 0, 0.0, f"add-{self.n_events}"))
            added = []
        if not ok:
            if self.workers.get(address) is sim and key in sim.processing:
                del sim.processing[key]
                self.handle(m.RescheduleTask(address, key, msg.run_id,
                                             f"give-up-{key}-{self.n_events}"))
            return
        if self.workers.get(address) is not sim or key not in sim.processing:
            return
        del sim.processing[key]
        sim.memory[key] = msg.run_id
        transfers = ((tuple(added), 8 * len(added)),) if added else ()
        self.handle(m.TaskFinished(address, key, 8, "int", duration, self.now + duration,
                                   msg.run_id, transfers, f"done-{key}-{self.n_events}",
                                   self.worker_slot(address)))

    def err(self, address: str, key: m.Key) -> None:
        msg = self.workers[address].processing.pop(key)
        self.handle(m.TaskErred(address, key, EXC, None, "RuntimeError('boom')", 0.01,
                                msg.run_id, f"err-{key}-{self.n_events}"))

    def give_up(self, address: str, key: m.Key) -> None:
        msg = self.workers[address].processing.pop(key)
        self.handle(m.RescheduleTask(address, key, msg.run_id,
                                     f"resched-{key}-{self.n_events}"))

    def lose(self, fetcher: str, holder: str, key: m.Key) -> None:
        """The holder lost a value (a bad disk); a peer finds out and says so."""
        self.workers[holder].memory.pop(key, None)
        self.handle(m.MissingData(fetcher, key, holder, f"lost-{key}-{self.n_events}"))

    # ------------------------------------------------------------ quiescence

    def run_to_quiescence(self) -> None:
        if not self.workers:
            self.add_worker(4, gpu=True, name_clash=False, reuse=False)
        for _ in range(5000):
            if not self.workers:  # the last one was retired: its manager starts another
                self.add_worker(4, gpu=True, name_clash=False, reuse=False)
            for address in sorted(self.workers):
                if address in self.workers:
                    self.deliver(address, len(self.workers[address].inbox))
            busy = [(a, k) for a, sim in sorted(self.workers.items()) for k in sim.processing]
            if not busy and not any(sim.inbox for sim in self.workers.values()):
                if not self.workers:
                    continue  # (one is started at the top of the loop)
                if not self.retire_requests:
                    return
                # A retirement finished by a release is noticed at the next tick.
                self.handle(Tick(self.now, f"tick-{self.n_events}"))
                if not any(sim.inbox for sim in self.workers.values()) \
                        and self.retire_requests:
                    raise self.fail(f"retirements never answered: {self.retire_requests}")
                continue
            for address, key in busy:
                sim = self.workers.get(address)
                if sim is not None and key in sim.processing:
                    self.finish(address, key, 0.01)
        raise self.fail("no quiescence after 5000 rounds (livelock?)")

    def _blocked(self, ts: Any, seen: set[Any]) -> bool:
        """Waiting, ultimately, on a restricted task no connected worker may run."""
        if ts in seen:
            return False
        seen.add(ts)
        if ts.state == "no-worker":
            valid = self.s.placement.valid_workers(ts)
            if valid is not None and list(valid):
                raise self.fail("no-worker task with a valid worker connected", ts.key)
            return True
        if ts.state == "waiting":
            return any(self._blocked(d, seen) for d in ts.dependencies if d.state != "memory")
        return False

    def check_quiescent(self) -> None:
        s = self.s
        s.validate()
        counts = s.counts()
        if counts.get("processing") or counts.get("queued") or s.n_queued:
            raise self.fail(f"quiescent but tasks still processing or queued: {counts}")
        # Liveness: every wanted key is in memory, erred, or waits on a task no
        # connected worker may run.
        for cid, cs in s.clients.items():
            for ts in cs.wants_what:
                if ts.state in ("memory", "erred"):
                    pass
                elif not self._blocked(ts, set()):
                    raise self.fail(f"wanted by {cid} but stuck in {ts.state}", ts.key)
                else:
                    continue
                # The client heard about it since it (last) started wanting it,
                # and the last word matches the final state.
                since = self.wanted_since[(cid, ts.key)]
                said = [msg for i, c, msg in self.client_log
                        if c == cid and i >= since and msg.key == ts.key]
                if not said:
                    raise self.fail(f"{cid} never told about {ts.key!r} ({ts.state})", ts.key)
                expected = m.KeyInMemory if ts.state == "memory" else m.KeyErred
                if not isinstance(said[-1], expected):
                    raise self.fail(f"{cid}'s last word on {ts.key!r} is {said[-1]!r} but it is "
                                    f"{ts.state}", ts.key)
        # No forgotten-worthy records linger: every task is wanted, or is
        # lineage/cause of a task that is.
        for ts in s.tasks.values():
            if not ts.who_wants and not ts.dependents:
                raise self.fail(f"task record leaked: {ts.key!r} in {ts.state}", ts.key)
        # The scheduler's map of data matches what workers hold: nothing lost,
        # nothing leaked.
        for address, sim in self.workers.items():
            ws = s.workers.get(address)
            if ws is None:
                raise self.fail(f"sim worker {address} unknown to the scheduler")
            believed = {ts.key for ts in ws.has_what}
            held = set(sim.memory)
            if believed != held:
                raise self.fail(
                    f"{address}: scheduler believes it holds {sorted(map(str, believed))}, "
                    f"it holds {sorted(map(str, held))}",
                    next(iter(believed ^ held)),
                )
        if set(s.workers) != set(self.workers):
            raise self.fail(f"scheduler workers {sorted(s.workers)} != {sorted(self.workers)}")


def _scheduler_step(world: SchedulerWorld, draw: Any) -> None:
    clients = ("c0", "c1")
    sims = sorted(world.workers)
    busy = [(a, k) for a in sims for k in world.workers[a].processing]
    with_inbox = [a for a in sims if world.workers[a].inbox]
    holders = [(a, k) for a in sims for k in sorted(world.workers[a].memory, key=str)]
    # Weights: mostly work being submitted, delivered and finished; some churn.
    actions = ["submit"] * 3 + ["add_worker"] * (3 if len(sims) < 2 else 1) + [
        "tick", "scatter", "register_client"]
    if sims:
        actions += ["remove_worker", "heartbeat"]
    if with_inbox:
        actions += ["deliver"] * 6
    if busy:
        actions += ["finish"] * 8 + ["err", "give_up", "start", "start"]
    if holders and len(sims) > 1:
        actions += ["lose"]
    if sims:
        actions += ["retire"]
    wanted = [(cid, ts.key) for cid, cs in sorted(world.s.clients.items())
              for ts in cs.wants_what]
    if wanted:
        actions += ["release", "release", "cancel", "remove_client"]
    action = draw(st.sampled_from(actions))
    if action == "submit":
        world.submit(draw(st.sampled_from(clients)), draw)
    elif action == "add_worker":
        world.add_worker(draw(st.integers(1, 3)), draw(st.booleans()),
                         name_clash=draw(st.integers(0, 9)) == 0,
                         reuse=draw(st.integers(0, 9)) == 0)
    elif action == "remove_worker":
        world.remove_worker(draw(st.sampled_from(sims)))
    elif action == "heartbeat":
        world.heartbeat(draw(st.sampled_from(sims)))
    elif action == "tick":
        world.tick(draw(st.sampled_from([0.0, 1.0, 4.0, 11.0])))
    elif action == "scatter":
        client = draw(st.sampled_from(clients))
        candidates = [k for k in world.known if k not in world.s.tasks
                      or world.s.tasks[k].state in ("memory", "released")]
        if candidates and draw(st.booleans()):
            key = draw(st.sampled_from(candidates))
        else:
            key = world.fresh_key("data")
        departed = ["tcp://departed"] if draw(st.integers(0, 4)) == 0 or not sims else []
        targets = draw(st.lists(st.sampled_from(sims + departed), min_size=1,
                                max_size=2, unique=True))
        world.scatter(client, key, targets)
    elif action == "retire":
        targets = draw(st.lists(st.sampled_from(sims + ["tcp://nobody"]), min_size=1,
                                max_size=2, unique=True))
        world.retire(targets, close=draw(st.integers(0, 3)) > 0)
    elif action == "register_client":
        world.register_client(draw(st.sampled_from(clients)))
    elif action == "deliver":
        world.deliver(draw(st.sampled_from(with_inbox)), draw(st.integers(1, 3)))
    elif action == "finish":
        address, key = draw(st.sampled_from(busy))
        world.finish(address, key, draw(st.sampled_from([1e-4, 0.01, 0.5, 2.0])),
                     piggyback=draw(st.booleans()))
    elif action == "start":
        # Start notices, now and then one for a key the worker was not given
        # (a notice that crossed a release on the wire).
        address, key = draw(st.sampled_from(busy))
        keys = [key] + ([world.fresh_key("stale")] if draw(st.integers(0, 3)) == 0 else [])
        world.handle(m.TasksStarted(address, tuple(keys), f"start-{world.n_events}"))
    elif action == "err":
        world.err(*draw(st.sampled_from(busy)))
    elif action == "give_up":
        world.give_up(*draw(st.sampled_from(busy)))
    elif action == "lose":
        holder, key = draw(st.sampled_from(holders))
        world.lose(draw(st.sampled_from([a for a in sims if a != holder])), holder, key)
    elif action == "release":
        cid, _ = draw(st.sampled_from(wanted))
        mine = [k for c, k in wanted if c == cid]
        world.release(cid, draw(st.lists(st.sampled_from(mine), min_size=1, unique=True)))
    elif action == "cancel":
        cid, key = draw(st.sampled_from(wanted))
        world.cancel(cid, [key])
    elif action == "remove_client":
        world.remove_client(draw(st.sampled_from(sorted({c for c, _ in wanted}))))


@SETTINGS
@given(st.data())
def test_scheduler_random_events(data: st.DataObject) -> None:
    world = SchedulerWorld()
    n_steps = data.draw(st.integers(10, 60), label="steps")
    for _ in range(n_steps):
        _scheduler_step(world, data.draw)
    world.run_to_quiescence()
    world.check_quiescent()
