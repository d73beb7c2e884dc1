"""The simulated worker shell: one production ``WorkerState`` per worker.

It carries out the core's instructions the way ``runtime/worker_server.py``
does, with virtual time in place of threads and sockets:

- ``Execute``: the task "runs" for the duration the workload gives its key
  and then yields an output of the workload's size: an ``ExecuteSuccess``
  event at ``now + duration``. The value is stored *before* the event is
  handled, exactly as the real shell stores it before telling the core.
- ``GatherDep``: a request to the peer (one latency), the peer's reply queued
  on its outbound link (see ``network.py``), and a ``GatherDepSuccess`` (or
  ``GatherDepFailure`` if the peer is gone) when the bytes arrive.
- ``SendToScheduler``: onto this worker's batched stream to the scheduler.
- ``DeleteData``: drop the values from the store.

The store holds sizes, not values; ``peak_bytes`` is the most it ever held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teamster.core import messages as m
from teamster.core.worker import WorkerState
from teamster.core.worker import events as ev
from teamster.core.worker.instructions import DeleteData, Execute, GatherDep, SendToScheduler
from teamster.sim.network import Stream
from teamster.sim.workload import WorkerSpec

if TYPE_CHECKING:
    from teamster.sim.run import Simulation


def ident(event: Any) -> Any:
    """What a trace line names an event by: its key, else its keys, worker or client."""
    key = getattr(event, "key", None)
    if key is not None:
        return key
    keys = getattr(event, "keys", None)
    if keys is not None:
        return keys if len(keys) <= 4 else (len(keys), keys[0])
    for attr in ("worker", "address", "client"):
        who = getattr(event, attr, None)
        if who is not None:
            return who
    return None


class SimWorker:
    __slots__ = ("sim", "spec", "address", "state", "store", "stored_bytes", "peak_bytes",
                 "alive", "left_at", "to_scheduler", "from_scheduler", "executed",
                 "n_events", "running", "_stim")

    def __init__(self, sim: Simulation, spec: WorkerSpec, *, validate: bool,
                 log_length: int) -> None:
        self.sim = sim
        self.spec = spec
        self.address = f"sim://{spec.name}"
        self.state = WorkerState(self.address, spec.nthreads, validate=validate,
                                 transition_log_length=log_length)
        #: Key -> bytes of the values held here.
        self.store: dict[m.Key, int] = {}
        self.stored_bytes = 0
        self.peak_bytes = 0
        self.alive = True
        self.left_at: float | None = None
        net = sim.network
        self.to_scheduler: Stream = net.stream(self.address, "scheduler", sim.scheduler.receive)
        self.from_scheduler: Stream = net.stream("scheduler", self.address, self.handle)
        #: Tasks whose execution completed here (results kept, not cancelled).
        self.executed = 0
        self.n_events = 0
        #: Key -> virtual time its execution started (for heartbeats).
        self.running: dict[m.Key, float] = {}
        self._stim = 0

    def _stimulus(self, what: str) -> str:
        self._stim += 1
        return f"{what}-{self.spec.name}-{self._stim}"

    # ---------------------------------------------------------------- events

    def handle(self, event: Any) -> None:
        sim = self.sim
        sim.engine.trace(self.spec.name, type(event).__name__, ident(event))
        self.n_events += 1
        if type(event) is m.Reply:  # (the acknowledgement of its registration)
            event = ev.Registered(event.result["worker_slot"], self._stimulus("registered"))
        try:
            out = self.state.handle(event)
        except Exception as exc:
            sim.fail(exc, event, worker=self)
            raise
        for instr in out:
            kind = type(instr)
            if kind is SendToScheduler:
                self.to_scheduler.send(instr.msg)  # type: ignore[union-attr]
            elif kind is Execute:
                self._execute(instr)  # type: ignore[arg-type]
            elif kind is GatherDep:
                self._gather(instr)  # type: ignore[arg-type]
            elif kind is DeleteData:
                store = self.store
                for key in instr.keys:  # type: ignore[union-attr]
                    size = store.pop(key, None)
                    if size is not None:
                        self.stored_bytes -= size
            else:  # pragma: no cover - the core's instruction set is closed
                raise TypeError(f"unknown instruction {instr!r}")
        sim.after_core_event()

    def _put(self, key: m.Key, nbytes: int) -> None:
        old = self.store.get(key)
        if old is not None:
            self.stored_bytes -= old
        self.store[key] = nbytes
        self.stored_bytes += nbytes
        if self.stored_bytes > self.peak_bytes:
            self.peak_bytes = self.stored_bytes

    def put_scattered(self, key: m.Key, nbytes: int) -> None:
        """A client scattered a value here (runtime: ``_put_data``)."""
        self._put(key, nbytes)
        self.handle(ev.DataPut(((key, nbytes),), self._stimulus("put-data")))

    # -------------------------------------------------------------- execute

    def _execute(self, instr: Execute) -> None:
        sim = self.sim
        i = sim.workload.index[instr.key]
        self.running[instr.key] = sim.engine.now
        sim.engine.at(sim.engine.now + sim.workload.durations[i], self._executed, i)

    def _executed(self, i: int) -> None:
        if not self.alive:
            return
        sim = self.sim
        w = sim.workload
        key = w.keys[i]
        started = self.running.pop(key, None)
        if started is not None:
            sim.busy.add(started, sim.engine.now)
        ts = self.state.tasks.get(key)
        if ts is not None and ts.state == "executing":
            self.executed += 1
            sim.record_run(i, self)
        nbytes = w.nbytes[i]
        self._put(key, nbytes)
        self.handle(ev.ExecuteSuccess(key, nbytes, "bytes", w.durations[i], sim.engine.now,
                                      self._stimulus("execute")))

    # --------------------------------------------------------------- gather

    def _gather(self, instr: GatherDep) -> None:
        sim = self.sim
        peer = sim.workers.get(instr.worker)
        latency = sim.network.latency(self.address, instr.worker)
        sim.engine.at(sim.engine.now + latency, self._request_arrives,
                      (peer, instr, sim.engine.now))

    def _request_arrives(self, arg: tuple[SimWorker | None, GatherDep, float]) -> None:
        """At the peer: read what it has, and queue the reply on its link."""
        peer, instr, asked = arg
        sim = self.sim
        net = sim.network
        now = sim.engine.now
        if peer is None or not peer.alive:
            back = now + net.latency(instr.worker, self.address)
            sim.engine.at(back, self._gather_failed, instr)
            return
        store = peer.store
        received = tuple((k, store[k]) for k in instr.keys if k in store)
        missing = tuple(k for k in instr.keys if k not in store)
        nbytes = sum(size for _, size in received)
        done = net.transfer_done_at(peer.address, self.address, now, nbytes)
        back = done + net.latency(peer.address, self.address)
        sim.engine.at(back, self._reply_arrives, (peer, done, received, missing, asked))

    def _reply_arrives(self, arg: tuple[SimWorker, float, tuple[tuple[m.Key, int], ...],
                                        tuple[m.Key, ...], float]) -> None:
        peer, done, received, missing, asked = arg
        if not self.alive:
            return
        if peer.left_at is not None and peer.left_at < done:
            # The peer died mid-transfer: the connection broke.
            self.handle(ev.GatherDepFailure(peer.address, tuple(k for k, _ in received)
                                            + missing, "peer left", self._stimulus("gather")))
            return
        sim = self.sim
        for key, size in received:
            self._put(key, size)
            sim.network.bytes_moved += size
        sim.network.transfers += 1
        self.handle(ev.GatherDepSuccess(peer.address, received, missing, sim.engine.now - asked,
                                        self._stimulus("gather")))

    def _gather_failed(self, instr: GatherDep) -> None:
        if self.alive:
            self.handle(ev.GatherDepFailure(instr.worker, instr.keys, "peer unreachable",
                                            self._stimulus("gather-failed")))

    # ------------------------------------------------------------ lifecycle

    def register_message(self) -> m.RegisterWorker:
        return m.RegisterWorker(self.address, self.spec.name, self.spec.nthreads, 0, (),
                                self.sim.engine.now, f"register-{self.spec.name}")

    def heartbeat(self, _: Any = None) -> None:
        if not self.alive:
            return
        sim = self.sim
        metrics = (("executing", float(len(self.state.executing))),
                   ("in_memory", float(len(self.store))))
        now = sim.engine.now
        executing = tuple((key, now - t) for key, t in self.running.items())
        self.to_scheduler.send(m.Heartbeat(self.address, now, metrics, executing,
                                           self._stimulus("heartbeat")))
        sim.engine.background(sim.engine.now + sim.heartbeat_interval, self.heartbeat)

    def die(self) -> None:
        """Gone: in-flight messages to and from it are dropped, its data is lost."""
        self.alive = False
        self.left_at = self.sim.engine.now
        self.to_scheduler.close()
        self.from_scheduler.close()
        self.store.clear()
        self.running.clear()
        self.stored_bytes = 0
