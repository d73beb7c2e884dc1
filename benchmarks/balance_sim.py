"""The placement workloads in the simulator: makespan / lower bound at 100 and 1,000 workers.

    .venv/bin/python benchmarks/balance_sim.py [--workers 100,1000] [--workloads a,b]
        [--seed 0] [--repeat 1] [--check] [--json]

Runs every ``balance-*`` workload (``teamster.sim.balance_workloads``, the
same graphs ``benchmarks/balance.py`` runs on real clusters) at each cluster
size, sized by ``balance_tasks(name, workers)`` (the real benchmark's tasks
per worker, so a 1,000-worker run is the 8-worker one made wider). Each run
is a fresh child process of the CLI contract (``teamster simulate ... --json
--no-validate``), as in ``sim_scale.py``. Printed per run: makespan / lower
bound, steal requests, bytes moved between workers, and scheduler CPU per
task (the minimum over ``--repeat`` runs: interference only adds; the
virtual-time figures do not depend on it); then each run's threads-busy
timeline (``teamster.sim.timeline``): when the time above the bound was lost.

Targets (``--check`` exits 1 unless met): every ratio at most 1.10 at the
largest size (1,000 workers by default) and at most 30 us of scheduler CPU
per task at every size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))  # teamster, if not installed in this python

import compiled_core  # noqa: E402 - benchmarks/, next to this script

from teamster.sim.balance_workloads import TASKS_PER_WORKER, balance_tasks  # noqa: E402
from teamster.sim.timeline import sparkline  # noqa: E402

RATIO_TARGET = 1.10
CPU_TARGET_US = 30.0
#: Environment of the child runs: None (this one), or the compiled core first (--compiled).
CHILD_ENV: dict[str, str] | None = None


def simulate(workload: str, workers: int, seed: int, timeout: float) -> dict[str, Any]:
    """One run of the CLI contract in a fresh process."""
    tasks = balance_tasks(workload, workers)
    cmd = [sys.executable, "-m", "teamster.cli", "simulate", "--workload", workload,
           "--workers", str(workers), "--tasks", str(tasks), "--seed", str(seed),
           "--json", "--no-validate"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO_ROOT), env=CHILD_ENV)
    except subprocess.TimeoutExpired:
        return {"workload": workload, "workers": workers, "error": f"timed out ({timeout:.0f} s)"}
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        result = {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    result.setdefault("workload", workload)
    result.setdefault("workers", workers)
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def best_of(repeat: int, workload: str, workers: int, seed: int, timeout: float
            ) -> dict[str, Any]:
    runs = [simulate(workload, workers, seed, timeout) for _ in range(repeat)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    best = min(good, key=lambda r: r["scheduler_cpu_per_task_us"])
    best["all_cpu_per_task_us"] = [round(r["scheduler_cpu_per_task_us"], 2) for r in good]
    return best


def print_table(rows: list[dict[str, Any]], repeat: int) -> None:
    print(f"\n## Placement workloads in the simulator (makespan / lower bound; "
          f"CPU min of {repeat})\n")
    print("| workload | workers | tasks | makespan s | lower bound s | ratio | steals | "
          "GB moved | CPU us/task | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            last = r["error"].strip().splitlines()[0] if r["error"].strip() else "?"
            print(f"| {r['workload']} | {r['workers']:,} | FAILED: {last[:100]} |||||||")
            continue
        print(f"| {r['workload']} | {r['workers']:,} | {r['tasks']:,} | {r['makespan']:.3f} | "
              f"{r['lower_bound']:.3f} | {r['ratio']:.3f} | {r['steals']:,} | "
              f"{r['bytes_moved'] / 1e9:.2f} | {r['scheduler_cpu_per_task_us']:.2f} | "
              f"{r['wall_s']:.1f} |")
    print("\nThreads busy over each run (40 equal bins from t=0 to the makespan; "
          "blank: idle, full block: all busy):\n")
    for r in rows:
        u = r.get("utilisation")
        if u:
            print(f"    {r['workload']:<22} {r['workers']:>6,} |{sparkline(u)}| "
                  f"lowest {min(u):.0%}, mean {sum(u) / len(u):.0%}")


def verdicts(rows: list[dict[str, Any]], largest: int) -> list[str]:
    """What misses a target (empty: all met)."""
    misses = []
    for r in rows:
        name = f"{r['workload']} at {r['workers']:,} workers"
        if "error" in r:
            misses.append(f"{name}: the run failed")
            continue
        if r["workers"] == largest and r["ratio"] > RATIO_TARGET:
            misses.append(f"{name}: ratio {r['ratio']:.3f} > {RATIO_TARGET:g}")
        if r["scheduler_cpu_per_task_us"] > CPU_TARGET_US:
            misses.append(f"{name}: {r['scheduler_cpu_per_task_us']:.1f} us/task > "
                          f"{CPU_TARGET_US:g}")
    return misses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="100,1000", help="cluster sizes (comma-separated)")
    p.add_argument("--workloads", default=",".join(TASKS_PER_WORKER),
                   help="comma-separated balance-* workloads (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per cell; the CPU figure is their minimum (default 1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child run")
    compiled_core.add_option(p)
    p.add_argument("--check", action="store_true", help="exit 1 unless the targets are met")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = p.parse_args(argv)
    global CHILD_ENV
    CHILD_ENV = compiled_core.child_env(args.compiled)

    sizes = [int(x) for x in args.workers.split(",") if x.strip()]
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    names = [n if n.startswith("balance-") else f"balance-{n}" for n in names]
    unknown = [n for n in names if n not in TASKS_PER_WORKER]
    if unknown or not names or not sizes or min(sizes) < 1 or args.repeat < 1:
        p.error(f"need workloads from {', '.join(TASKS_PER_WORKER)} (got unknown {unknown}), "
                "sizes >= 1 and --repeat >= 1")

    rows = []
    for name in names:
        for n in sizes:
            r = best_of(args.repeat, name, n, args.seed, args.timeout)
            rows.append(r)
            status = r["error"].splitlines()[0] if "error" in r else (
                f"ratio {r['ratio']:.3f}, {r['scheduler_cpu_per_task_us']:.2f} us/task, "
                f"{r['wall_s']:.1f} s wall")
            print(f"  measured {name} at {n} workers: {status}", file=sys.stderr, flush=True)
    print_table(rows, args.repeat)
    misses = verdicts(rows, max(sizes))
    print(f"\nTargets: ratio <= {RATIO_TARGET:g} at {max(sizes):,} workers, <= "
          f"{CPU_TARGET_US:g} us/task everywhere: " + ("met" if not misses else "NOT met"))
    for miss in misses:
        print(f"  - {miss}")
    if args.json:
        print(json.dumps(rows))
    return 1 if misses and (args.check or any("error" in r for r in rows)) else 0


if __name__ == "__main__":
    sys.exit(main())
