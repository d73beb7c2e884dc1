"""`teamster simulate`: run a workload on a simulated cluster and report.

Contract (scripts depend on it): with ``--json`` the only thing printed on
stdout is one JSON object holding at least ``makespan``, ``lower_bound``,
``ratio``, ``bytes_moved``, ``steals``, ``scheduler_cpu_per_task_us``,
``wall_s`` and ``events``. ``--list`` prints one workload per line: its name,
a tab, its summary. A run that fails (an invariant, a stall, a lost task)
exits with status 1; with ``--json`` it prints ``{"error": ..., "seed": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="run a workload on a simulated cluster (virtual time) and report",
        description="Run the production scheduler and workers on a virtual clock.")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--workload", default="random-dag",
                   help="a library workload (see --list), or your own: MODULE:FUNCTION or "
                        "FILE.py:FUNCTION, called as FUNCTION(tasks, workers, threads, rng) "
                        "and returning a teamster.sim.Workload")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--tasks", type=int, default=None,
                   help="number of tasks (default: the workload's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--latency", type=float, default=None, help="one-way latency, seconds")
    p.add_argument("--bandwidth", type=float, default=None, help="link bandwidth, bytes/s")
    p.add_argument("--validate", dest="validate", action="store_true", default=None,
                   help="validate the cores (the default; TEAMSTER_VALIDATE=0 turns it off)")
    p.add_argument("--no-validate", dest="validate", action="store_false")
    p.add_argument("--validate-every", type=int, default=None, metavar="K",
                   help="full validation every K events (default: every event on small "
                        "runs, automatic on large ones)")
    p.add_argument("--gc", action="store_true",
                   help="leave Python's cyclic GC on during the run (off by default: its "
                        "pauses scan the simulator's own heap and land in the scheduler)")
    p.add_argument("--replay", action="store_true",
                   help="also replay the scheduler's events alone and report its CPU "
                        "without the simulator around it")
    p.set_defaults(func=simulate)
    return p


def simulate(args: argparse.Namespace) -> None:
    from teamster.sim.workloads import WORKLOADS

    if args.list:
        for entry in WORKLOADS.values():
            print(f"{entry.name}\t{entry.summary}")
        return
    from teamster.sim.metrics import format_report
    from teamster.sim.run import SimulationError, run_simulation

    options: dict[str, Any] = {"validate": args.validate, "validate_every": args.validate_every,
                               "replay": args.replay, "gc_enabled": args.gc}
    if args.latency is not None:
        options["latency"] = args.latency
    if args.bandwidth is not None:
        options["bandwidth"] = args.bandwidth
    try:
        result = run_simulation(args.workload, workers=args.workers, threads=args.threads,
                                tasks=args.tasks, seed=args.seed, **options)
    except ValueError as exc:
        raise SystemExit(f"teamster simulate: {exc}") from None
    except SimulationError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "seed": args.seed, "workload": args.workload}))
        else:
            print(f"teamster simulate: the run failed\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
