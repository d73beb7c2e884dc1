"""One simulation: a workload, a network, the production cores, a virtual clock.

``run_simulation(workload, workers, threads, tasks, seed, ...)`` builds the
workload, runs it to completion and returns the report (see ``metrics.py``).
``Simulation`` is the same thing in pieces, for tests that want to look
inside (the cores, the workers' stores, the trace).

Validation (ARCHITECTURE.md rule 4): on by default, switched off only by
``validate=False`` or ``TEAMSTER_VALIDATE=0`` (read here, in the entry point,
never by the core).

- A *small* run (at most ``SMALL_RUN`` tasks) builds the cores with
  ``validate=True``: after every event each core checks every task the event
  touched, and amortises a full cross-check of all its indices (see
  docs/design.md, "Validation"). ``validate_every`` is reported as 1.
- A *large* run builds them with ``validate=False``, and every
  ``validate_every`` (k) events delivered to any core the simulator runs the
  full ``validate()`` of the scheduler and of every live worker, and once
  more at the end. The default k keeps validation to about a tenth of the
  run's cost; it is reported.

Any exception from a core (an ``InvariantError``, an ``InvalidTransition``)
stops the run with a ``SimulationError`` that names the workload, the seed,
the virtual time and the event, and tells the story of the key concerned,
from the scheduler and from every worker that knows it. So does a run that
stops making progress (only ticks and heartbeats left, nothing wanted
arriving), and a run that ends with a task lost, run twice, or anything left
behind in the scheduler or a worker after the client released its keys.
"""

from __future__ import annotations

import gc
import os
import time
from array import array
from typing import Any

from teamster.core.scheduler import SchedulerState
from teamster.sim.client import SimClient
from teamster.sim.engine import Engine
from teamster.sim.metrics import report
from teamster.sim.network import BATCH_INTERVAL, DEFAULT_BANDWIDTH, DEFAULT_LATENCY, Network
from teamster.sim.scheduler import SimScheduler
from teamster.sim.scheduler import replay as replay_events
from teamster.sim.timeline import BusyTimeline
from teamster.sim.workers import SimWorker, ident
from teamster.sim.workload import WorkerSpec, Workload
from teamster.sim.workloads import build_workload

#: Runs with at most this many tasks validate after every event.
SMALL_RUN = 20_000
#: Transition-log entries kept across all workers together (stories stay
#: useful, memory stays bounded at a thousand workers).
WORKER_LOG_BUDGET = 2_000_000


class SimulationError(AssertionError):
    """A core raised, an invariant broke, or the run stalled; carries seed and story."""


def validation_from_env(default: bool = True) -> bool:
    value = os.environ.get("TEAMSTER_VALIDATE")
    if value is None:
        return default
    return value not in ("", "0", "false", "False")


class Simulation:
    def __init__(
        self,
        workload: Workload,
        *,
        latency: float = DEFAULT_LATENCY,
        bandwidth: float = DEFAULT_BANDWIDTH,
        links: dict[tuple[str, str], tuple[float, float]] | None = None,
        batch_interval: float = BATCH_INTERVAL,
        validate: bool | None = None,
        validate_every: int | None = None,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 60.0,
        tick_interval: float = 1.0,
        trace: bool = True,
        keep_trace: bool = False,
        record_placement: bool | None = None,
        gc_enabled: bool = False,
        replay: bool = False,
    ) -> None:
        self.workload = workload
        self.seed = workload.seed
        self.engine = Engine(trace=trace, keep_trace=keep_trace)
        self.network = Network(self.engine, latency=latency, bandwidth=bandwidth,
                               batch_interval=batch_interval, links=links)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.tick_interval = tick_interval
        validate = validation_from_env() if validate is None else validate
        small = workload.n_tasks <= SMALL_RUN
        if not validate:
            k = 0
        elif validate_every is not None:
            k = max(1, validate_every)
        elif small:
            k = 1
        else:
            # A full check costs about as much per task as handling a few
            # events; every n_tasks/2 events is ~10 checks per run.
            k = max(10_000, workload.n_tasks // 2)
        #: Full validation every k core events (1: the cores' own, after every event; 0: off).
        self.validate_every = k
        self._core_validate = k == 1
        self._log_length = max(1_000, min(100_000, WORKER_LOG_BUDGET // max(1, len(workload.workers))))
        self.scheduler = SimScheduler(self, SchedulerState(
            validate=self._core_validate, heartbeat_timeout=heartbeat_timeout), record=replay)
        #: Replay the scheduler's events in isolation after the run (see scheduler.replay).
        self.replay = replay
        #: CPU ns of that replay, once done.
        self.replay_cpu_ns: int | None = None
        self.workers: dict[str, SimWorker] = {}
        self.client = SimClient(self)
        #: Completed (not cancelled) executions per key index.
        self.runs = array("i", bytes(4 * len(workload.keys)))
        #: Every execution's (start, end), for the utilisation timeline.
        self.busy = BusyTimeline()
        record = small if record_placement is None else record_placement
        #: Key index -> the workers that ran it, when recording (small runs).
        self.ran_on: dict[int, list[str]] | None = {} if record else None
        self.n_core_events = 0
        self.workers_left = 0
        self.wall_s = 0.0
        self.finished = False
        #: Leave Python's cyclic GC on during the run (see ``run``).
        self.gc_enabled = gc_enabled
        #: Objects the cyclic GC found unreachable after the run (0: nothing leaked in cycles).
        self.gc_collected = 0

    # ------------------------------------------------------------ lifecycle

    def _join(self, spec: WorkerSpec) -> None:
        ws = SimWorker(self, spec, validate=self._core_validate, log_length=self._log_length)
        self.workers[ws.address] = ws
        ws.to_scheduler.send(ws.register_message())
        # Heartbeats staggered over the interval (a fixed golden-ratio spread:
        # deterministic, and no two workers in lockstep).
        phase = (len(self.workers) * 0.6180339887) % 1.0
        self.engine.background(self.engine.now + self.heartbeat_interval * (0.5 + phase) / 1.5,
                               ws.heartbeat)

    def _leave(self, address: str) -> None:
        ws = self.workers.get(address)
        if ws is None or not ws.alive:
            return
        ws.die()
        self.workers_left += 1
        self.network.forget(address)
        # The scheduler notices when the connection drops: one latency later.
        self.engine.at(self.engine.now + self.network.latency(address, "scheduler"),
                       lambda _: self.scheduler.worker_lost(address))

    def close_worker(self, address: str) -> None:
        """The scheduler told a worker to go (CloseWorker); it already forgot it."""
        ws = self.workers.get(address)
        if ws is not None and ws.alive:
            ws.die()
            self.workers_left += 1
            self.network.forget(address)

    def record_run(self, i: int, ws: SimWorker) -> None:
        self.runs[i] += 1
        if self.ran_on is not None:
            self.ran_on.setdefault(i, []).append(ws.address)

    def after_core_event(self) -> None:
        self.n_core_events += 1
        k = self.validate_every
        if k > 1 and self.n_core_events % k == 0:
            self.validate_all()

    def validate_all(self) -> None:
        try:
            self.scheduler.state.validate()
            for ws in self.workers.values():
                if ws.alive:
                    ws.state.validate()
        except Exception as exc:
            self.fail(exc, None)

    # ----------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Run to completion and return the report.

        The cyclic GC is off during the run unless ``gc_enabled``: the
        simulator keeps a thousand workers' states, the workload and its own
        queues in the same process as the scheduler, and a full collection
        scans all of it, wherever it happens to trigger -- most often inside
        ``SchedulerState.handle``, billing the scheduler for the
        simulator's heap (at 100,000 tasks it doubled the figure, and grew
        with the number of simulated workers). Neither core creates reference
        cycles per task, so nothing accumulates; ``gc_collected`` in the
        report (a collection after the run) shows it.
        """
        was_enabled = gc.isenabled()
        if not self.gc_enabled:
            gc.disable()
        try:
            self._run()
        finally:
            if was_enabled:
                gc.enable()
        self.gc_collected = gc.collect()
        self._check_end()
        if self.replay:
            self._replay()
        return report(self)

    def _replay(self) -> None:
        events = self.scheduler.recorded
        assert events is not None
        self.scheduler.recorded = None
        was_enabled = gc.isenabled()
        if not self.gc_enabled:
            gc.disable()
        try:
            cpu_ns, n_out = replay_events(events, heartbeat_timeout=self.heartbeat_timeout)
        finally:
            if was_enabled:
                gc.enable()
        if n_out != self.scheduler.n_instructions:
            self.fail(None, None, what=f"the replayed scheduler emitted {n_out} instructions, "
                      f"the simulated one {self.scheduler.n_instructions}: nondeterminism")
        self.replay_cpu_ns = cpu_ns

    def _run(self) -> None:
        engine = self.engine
        wall0 = time.perf_counter()
        for spec in self.workload.workers:
            engine.at(spec.join, self._join, spec)
        for spec in self.workload.workers:
            if spec.leave is not None:
                engine.at(spec.leave, self._leave, f"sim://{spec.name}")
        engine.at(0.0, self.client.submit)
        engine.background(self.tick_interval, self.scheduler.tick)
        while True:
            engine.run_while_foreground()
            if self.client.released:
                break
            # Only ticks and heartbeats are left. They may still unblock the
            # run (a silent worker timing out); give them that long, no more.
            horizon = engine.now + self.heartbeat_timeout + 2 * self.tick_interval
            while not engine.n_foreground:
                nxt = engine.next_time()
                if nxt is None or nxt > horizon:
                    self.fail(None, None, what="the simulation stalled: no progress for "
                              f"{self.heartbeat_timeout + 2 * self.tick_interval:g} s "
                              "of virtual time with wanted keys outstanding")
                engine.step()
        self.wall_s = time.perf_counter() - wall0
        self.finished = True

    def _check_end(self) -> None:
        if self.validate_every:
            self.validate_all()
        w = self.workload
        client = self.client
        if client.erred:
            key, text = next(iter(client.erred.items()))
            self.fail(None, None, what=f"{len(client.erred)} wanted keys erred; first "
                      f"{key!r}: {text}", key=key)
        sched = self.scheduler.state
        if sched.tasks:
            key = next(iter(sched.tasks))
            self.fail(None, None, key=key, what=f"{len(sched.tasks)} tasks left in the "
                      "scheduler after the client released everything")
        for ws in self.workers.values():
            if ws.alive and (ws.store or ws.state.tasks):
                key = next(iter(ws.store or ws.state.tasks))
                self.fail(None, None, key=key, what=f"worker {ws.address} still holds "
                          f"{len(ws.store)} values / {len(ws.state.tasks)} tasks at the end")
        runs = self.runs
        for i in w.task_indices():
            if runs[i] == 0:
                self.fail(None, None, key=w.keys[i], what="a task never ran (lost)")
            if runs[i] > 1 and not self.workers_left:
                self.fail(None, None, key=w.keys[i],
                          what=f"a task ran {runs[i]} times with no worker lost")

    # ------------------------------------------------------------- failure

    def fail(self, exc: BaseException | None, event: Any, *, worker: SimWorker | None = None,
             what: str = "", key: Any = None) -> None:
        """Stop the run: raise SimulationError with the seed and the key's story."""
        if key is None:
            key = getattr(exc, "key", None)
        if key is None and event is not None:
            key = ident(event)
        w = self.workload
        lines = [
            what or f"{type(exc).__name__}: {exc}",
            f"workload={w.name} seed={self.seed} workers={len(w.workers)} tasks={w.n_tasks} "
            f"t={self.engine.now:.6f} core events={self.n_core_events}",
        ]
        if event is not None:
            where = worker.address if worker is not None else "scheduler"
            lines.append(f"while {where} handled {event!r:.400}")
        lines.extend(self.story_lines(key))
        raise SimulationError("\n".join(lines)) from exc

    def story_lines(self, key: Any) -> list[str]:
        if key is None:
            return []
        out = [f"story of {key!r} (scheduler):"]
        sched = self.scheduler.state
        ts = sched.tasks.get(key)
        out.append(f"  now: {ts.state if ts is not None else 'forgotten'}")
        out += [f"  {e.start} -> {e.finish} ({e.stimulus_id})" for e in sched.story(key)[-20:]]
        for ws in self.workers.values():
            story = ws.state.story(key)
            if story or key in ws.state.tasks:
                wts = ws.state.tasks.get(key)
                out.append(f"story of {key!r} on {ws.address} "
                           f"({'alive' if ws.alive else 'gone'}, now "
                           f"{wts.state if wts is not None else 'forgotten'}):")
                out += [f"  {e.start} -> {e.finish} ({e.stimulus_id})" for e in story[-10:]]
        return out


def run_simulation(
    workload: str | Workload,
    workers: int = 10,
    threads: int = 1,
    tasks: int | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Build (if named) and run one workload; return the report dict."""
    t0 = time.perf_counter()
    if isinstance(workload, str):
        workload = build_workload(workload, workers=workers, threads=threads, tasks=tasks,
                                  seed=seed)
    build_s = time.perf_counter() - t0
    sim = Simulation(workload, **options)
    result = sim.run()
    result["build_s"] = build_s
    return result
