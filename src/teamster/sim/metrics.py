"""What a run reports, and how it reads.

Definitions (all virtual time unless marked wall or CPU):

- ``makespan``: from the client's submission (t=0) to the moment the
  scheduler marks the last wanted key in memory.
- ``lower_bound`` = max(work bound, critical path) (see ``workload.py``);
  ``ratio`` = makespan / lower_bound, 1.0 being perfect. The bound ignores
  the network, so even a perfect scheduler scores a little above 1.
- ``bytes_moved``: bytes delivered worker to worker by ``GatherDep``
  replies (scattering and results reported to the client are not counted).
- ``peak_stored_bytes``: the most bytes any one worker held at once
  (``_mean``: averaged over workers).
- ``steals``: steal requests the scheduler sent (see ``scheduler.py``).
- ``scheduler_cpu_per_task_us``: process CPU inside ``SchedulerState.handle``
  over the whole run (submission, every completion, ticks, heartbeats, the
  final release), less the clock's own cost inside each timed window
  (``clock_overhead_us_per_event``, see ``scheduler.py``), divided by the
  number of tasks; ``_raw`` without that correction; ``_per_event_us``
  divides by the events the scheduler handled.
- ``scheduler_cpu_per_task_us_isolated`` (with ``replay``): the same, for
  the run's scheduler events replayed into a fresh ``SchedulerState`` with
  nothing running in between (see ``scheduler.replay``): what a dedicated
  scheduler process spends, without the simulator's cache pollution.
- ``events``: events delivered to any core (scheduler, workers) -- the
  length of the trace; ``heap_events``: everything the loop ran.
- ``utilisation``: the makespan in ``TIMELINE_BINS`` equal bins, each the
  share of the connected workers' threads that were busy (see
  ``timeline.py``): where the time above the lower bound was lost.
- ``wall_s``: wall-clock seconds of the run (workload build excluded,
  ``build_s``); ``peak_rss_mb``: the process's peak resident memory so far.
"""

from __future__ import annotations

import math
import resource
import sys
from typing import TYPE_CHECKING, Any

from teamster.sim.scheduler import calibrate_clock
from teamster.sim.timeline import sparkline

if TYPE_CHECKING:
    from teamster.sim.run import Simulation


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def report(sim: Simulation) -> dict[str, Any]:
    w = sim.workload
    sched = sim.scheduler
    work_bound = w.work_bound()
    critical = w.critical_path()
    lower = max(work_bound, critical)
    makespan = sched.last_result_at
    n_tasks = max(1, w.n_tasks)
    workers = list(sim.workers.values())
    peaks = [ws.peak_bytes for ws in workers] or [0]
    core_events = sim.n_core_events
    clock_ns = calibrate_clock()
    by_type = {
        name: {"events": n, "cpu_us_per_event": round(max(0.0, ns / max(1, n) - clock_ns) / 1e3, 3)}
        for name, (n, ns) in sorted(sched.cpu_by_type.items())
    }
    cpu_ns = max(0.0, sched.cpu_ns - clock_ns * sched.n_events)
    runs = sim.runs
    executions = sum(runs)
    return {
        "workload": w.name,
        "seed": w.seed,
        "workers": len(w.workers),
        "threads": w.workers[0].nthreads if w.workers else 0,
        "total_threads": sum(s.nthreads for s in w.workers),
        "tasks": w.n_tasks,
        "makespan": makespan,
        "lower_bound": lower,
        "ratio": makespan / lower if lower > 0 else float("nan"),
        "total_work": w.total_work(),
        "critical_path": critical,
        "work_bound": work_bound,
        "bytes_moved": sim.network.bytes_moved,
        "transfers": sim.network.transfers,
        "peak_stored_bytes": max(peaks),
        "peak_stored_bytes_mean": sum(peaks) / len(peaks),
        "steals": sched.steals,
        "executions": executions,
        "reexecutions": executions - w.n_tasks,
        "workers_lost": sim.workers_left,
        "scheduler_cpu_s": cpu_ns / 1e9,
        "scheduler_cpu_per_task_us": cpu_ns / 1e3 / n_tasks,
        "scheduler_cpu_per_task_us_raw": sched.cpu_ns / 1e3 / n_tasks,
        "scheduler_cpu_per_event_us": cpu_ns / 1e3 / max(1, sched.n_events),
        # With validate_every == 1 the core validates inside handle(): the CPU
        # figures then include it (use --no-validate, or --replay, to measure).
        "scheduler_cpu_includes_validation": sim.validate_every == 1,
        "clock_overhead_us_per_event": clock_ns / 1e3,
        "scheduler_cpu_per_task_us_isolated": (
            None if sim.replay_cpu_ns is None else sim.replay_cpu_ns / 1e3 / n_tasks),
        "scheduler_events": sched.n_events,
        "scheduler_cpu_by_event": by_type,
        "events": core_events,
        "heap_events": sim.engine.n_run,
        "messages": sum(s.from_scheduler.messages + s.to_scheduler.messages for s in workers)
        + sim.client.to_scheduler.messages + sim.client.from_scheduler.messages,
        "validate_every": sim.validate_every,
        "gc_enabled": sim.gc_enabled,
        "gc_collected": sim.gc_collected,
        "trace_hash": sim.engine.trace_hash() if sim.engine.trace_enabled else None,
        "wall_s": sim.wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "utilisation": [round(u, 4) for u in sim.busy.utilisation(
            ((ws.join, math.inf if ws.leave is None else ws.leave, ws.nthreads)
             for ws in w.workers), makespan)],
    }


def format_report(r: dict[str, Any]) -> str:
    """A human-readable summary (the CLI without --json)."""
    mb = 1e6
    lines = [
        f"workload {r['workload']} (seed {r['seed']}): {r['tasks']:,} tasks on "
        f"{r['workers']:,} workers x {r['threads']} threads",
        f"  makespan      {r['makespan']:.4f} s   lower bound {r['lower_bound']:.4f} s   "
        f"ratio {r['ratio']:.3f}",
        f"                (work bound {r['work_bound']:.4f} s, critical path "
        f"{r['critical_path']:.4f} s)",
        f"  bytes moved   {r['bytes_moved'] / mb:,.1f} MB in {r['transfers']:,} transfers; "
        f"peak stored per worker {r['peak_stored_bytes'] / mb:,.1f} MB (max), "
        f"{r['peak_stored_bytes_mean'] / mb:,.1f} MB (mean)",
        f"  steals        {r['steals']}   re-executions {r['reexecutions']}   "
        f"workers lost {r['workers_lost']}",
        f"  scheduler CPU {r['scheduler_cpu_per_task_us']:.2f} us/task, "
        f"{r['scheduler_cpu_per_event_us']:.2f} us/event over {r['scheduler_events']:,} "
        f"events ({r['scheduler_cpu_s']:.3f} s)"
        + ("" if r.get("scheduler_cpu_per_task_us_isolated") is None else
           f"; replayed alone {r['scheduler_cpu_per_task_us_isolated']:.2f} us/task")
        + (" (includes the core's validation)" if r["scheduler_cpu_includes_validation"]
           else ""),
        f"  simulation    {r['events']:,} core events, wall {r['wall_s']:.2f} s, "
        f"peak RSS {r['peak_rss_mb']:,.0f} MB, validation "
        + ("off" if not r["validate_every"] else
           "after every event" if r["validate_every"] == 1 else
           f"every {r['validate_every']:,} events"),
        f"  trace hash    {r['trace_hash']}",
    ]
    if r.get("utilisation"):
        u = r["utilisation"]
        lines.insert(3, f"  threads busy  |{sparkline(u)}| (t=0 to the makespan; "
                        f"lowest {min(u):.0%}, mean {sum(u) / len(u):.0%})")
    return "\n".join(lines)
