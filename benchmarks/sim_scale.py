"""Scheduler CPU per task as the cluster grows, and a million tasks to completion.

    .venv/bin/python benchmarks/sim_scale.py [--workload million] [--tasks 100000]
        [--workers 10,100,1000] [--repeat 3] [--million-tasks 1000000]
        [--million-workers 1000] [--skip-million] [--ratios 100] [--check] [--json]

Everything runs on the simulator (``teamster simulate``), which drives the
production ``SchedulerState`` and ``WorkerState`` on a virtual clock. Each
measurement is a fresh child process running the CLI contract
(``teamster simulate ... --json --no-validate``), so runs do not share caches
or heap, and the peak RSS reported is that run's own.

1. **Scaling table.** The same workload (same seed, same task count) at 10,
   100 and 1,000 workers; scheduler CPU per task is the process CPU spent
   inside ``SchedulerState.handle`` over the whole run, divided by the tasks.
   Each cell is the minimum over ``--repeat`` runs: the machine is shared,
   and interference only ever adds time (the median is shown beside it).
   The runs go round by round, every size once per round (largest first in
   every other round), so that a drift in the machine's speed lands on all
   sizes alike. The growth judged is
   the median over rounds of each round's own ratio (largest cluster /
   smallest), a paired measure: the machine's speed has been seen to halve
   or double between runs minutes apart, which moves a ratio of minima
   taken from different rounds as much as any change to the code does.
   The ratio of the minima and of the medians are printed beside it.
   Validation is off (it is measured CPU too, and production runs without
   it).
   Each run also replays its scheduler events into a fresh ``SchedulerState``
   with nothing in between (``--replay``): the "replayed alone" column, what
   a dedicated scheduler process spends without the simulated workers
   evicting its data from the CPU caches.
2. **The million.** ``--million-tasks`` tasks of the ``million`` workload on
   ``--million-workers`` workers, to completion: wall time, peak RSS,
   scheduler CPU per task, ratio.
3. ``--ratios N``: makespan / lower bound of every workload at N workers.

Targets (``--check`` exits 1 unless met): at most 30 us of scheduler CPU per
task at every size including the million, and at most 1.3x growth (median
of the rounds' own ratios) from the smallest to the largest cluster in the
table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import compiled_core  # benchmarks/, next to this script

REPO_ROOT = Path(__file__).resolve().parent.parent
CPU_TARGET_US = 30.0
#: Environment of the child runs: None (this one), or the compiled core first (--compiled).
CHILD_ENV: dict[str, str] | None = None
GROWTH_TARGET = 1.3


def simulate(workload: str, workers: int, tasks: int | None, seed: int,
             threads: int = 1, timeout: float = 3600.0, replay: bool = False) -> dict[str, Any]:
    """One run of the CLI contract in a fresh process."""
    cmd = [sys.executable, "-m", "teamster.cli", "simulate", "--workload", workload,
           "--workers", str(workers), "--threads", str(threads), "--seed", str(seed),
           "--json", "--no-validate"] + (["--replay"] if replay else [])
    if tasks is not None:
        cmd += ["--tasks", str(tasks)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO_ROOT), env=CHILD_ENV)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr or proc.stdout}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def machine_speed(n: int = 1_000_000, repeat: int = 5) -> float:
    """Nanoseconds per iteration of a fixed pure-Python loop (the fastest of
    ``repeat``): this machine's speed today, printed beside the figures.

    The same code measured 1.8-2.5x slower here from one day to the next
    (stops 16 and 17); quoting a fixed loop's speed beside the figures lets
    tables from different days be compared.
    """
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time_ns()
        total = 0
        for i in range(n):
            total += i
        best = min(best, (time.process_time_ns() - t0) / n)
    return best


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the least scheduler CPU, annotated with all runs' figures."""
    best = min(runs, key=lambda r: r["scheduler_cpu_per_task_us"])
    cpus = [r["scheduler_cpu_per_task_us"] for r in runs]
    best["all_cpu_per_task_us"] = [round(c, 2) for c in cpus]
    best["median_cpu_per_task_us"] = statistics.median(cpus)
    isolated = [r["scheduler_cpu_per_task_us_isolated"] for r in runs
                if r.get("scheduler_cpu_per_task_us_isolated") is not None]
    best["isolated_min"] = min(isolated) if isolated else None
    return best


def scaling_table(workload: str, tasks: int, sizes: list[int], repeat: int, seed: int
                  ) -> list[dict[str, Any]]:
    """``repeat`` rounds, each running every size once, in turn.

    Round by round rather than size by size: the machine's speed drifts
    over minutes (other tenants), and measuring all of one size before the
    next turned that drift into a difference between sizes. Every other
    round runs the sizes largest first, so that a drift within rounds (the
    machine has sped up 2x over one table) favours neither end.
    """
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for i in range(repeat):
        for n in (sizes if i % 2 == 0 else sizes[::-1]):
            r = simulate(workload, n, tasks, seed, replay=True)
            runs[n].append(r)
            print(f"  round {i + 1}, {n} workers: {r['scheduler_cpu_per_task_us']:.2f} us/task",
                  file=sys.stderr, flush=True)
    return [summarize(runs[n]) for n in sizes]


def round_growths(rows: list[dict[str, Any]]) -> list[float]:
    """Each round's largest-cluster CPU per task over its smallest-cluster one."""
    first, last = rows[0]["all_cpu_per_task_us"], rows[-1]["all_cpu_per_task_us"]
    return [b / a for a, b in zip(first, last, strict=True)]


def print_scaling(rows: list[dict[str, Any]]) -> None:
    base = rows[0]["scheduler_cpu_per_task_us"]
    print(f"\n## Scheduler CPU per task: {rows[0]['workload']}, {rows[0]['tasks']:,} tasks, "
          f"seed {rows[0]['seed']} (min of {len(rows[0]['all_cpu_per_task_us'])} runs)\n")
    iso_base = rows[0]["isolated_min"]
    med_base = rows[0]["median_cpu_per_task_us"]
    print("| workers | CPU us/task in sim | vs smallest | median | vs smallest "
          "| replayed alone us/task | vs smallest "
          "| CPU us/event | scheduler events | makespan s | ratio | wall s | all runs us/task |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cpu = r["scheduler_cpu_per_task_us"]
        iso = r["isolated_min"]
        iso_cells = ("- | -" if iso is None or iso_base is None
                     else f"{iso:.2f} | {iso / iso_base:.2f}x")
        med = r["median_cpu_per_task_us"]
        print(f"| {r['workers']:,} | {cpu:.2f} | {cpu / base:.2f}x | {med:.2f} | "
              f"{med / med_base:.2f}x | {iso_cells} | "
              f"{r['scheduler_cpu_per_event_us']:.2f} | {r['scheduler_events']:,} | "
              f"{r['makespan']:.3f} | {r['ratio']:.3f} | {r['wall_s']:.1f} | "
              f"{r['all_cpu_per_task_us']} |")


def print_million(r: dict[str, Any]) -> None:
    print(f"\n## {r['tasks']:,} tasks ({r['workload']}) on {r['workers']:,} workers\n")
    print(f"- wall time: {r['wall_s']:.1f} s simulating (+ {r['build_s']:.1f} s building the "
          f"workload; {r['process_wall_s']:.1f} s for the whole process)")
    print(f"- peak RSS: {r['peak_rss_mb']:,.0f} MB")
    print(f"- scheduler CPU: {r['scheduler_cpu_per_task_us']:.2f} us/task, "
          f"{r['scheduler_cpu_per_event_us']:.2f} us/event "
          f"({r['scheduler_cpu_s']:.1f} s over {r['scheduler_events']:,} events)"
          + ("" if r.get("scheduler_cpu_per_task_us_isolated") is None else
             f"; replayed alone {r['scheduler_cpu_per_task_us_isolated']:.2f} us/task"))
    by = r["scheduler_cpu_by_event"]
    print("- by event: " + ", ".join(
        f"{k} {v['events']:,} x {v['cpu_us_per_event']:.2f} us" for k, v in by.items()))
    print(f"- makespan {r['makespan']:.3f} s virtual, lower bound {r['lower_bound']:.3f} s, "
          f"ratio {r['ratio']:.3f}; {r['events']:,} core events; "
          f"{r['bytes_moved'] / 1e9:.1f} GB moved")


def ratios(workers: int, seed: int) -> list[dict[str, Any]]:
    from teamster.sim.workloads import WORKLOADS

    rows = []
    for name, entry in WORKLOADS.items():
        tasks = None if entry.default_tasks <= 10_000 else 100_000
        r = simulate(name, workers, tasks, seed)
        rows.append(r)
        print(f"  measured {name}", file=sys.stderr, flush=True)
    print(f"\n## Makespan / lower bound at {workers} workers x 1 thread (seed {seed})\n")
    print("| workload | tasks | makespan s | lower bound s | ratio | GB moved | "
          "peak stored MB/worker | CPU us/task |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['tasks']:,} | {r['makespan']:.3f} | "
              f"{r['lower_bound']:.3f} | {r['ratio']:.3f} | {r['bytes_moved'] / 1e9:.2f} | "
              f"{r['peak_stored_bytes'] / 1e6:,.0f} | {r['scheduler_cpu_per_task_us']:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="million")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--workers", default="10,100,1000")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--million-tasks", type=int, default=1_000_000)
    p.add_argument("--million-workers", type=int, default=1000)
    p.add_argument("--skip-million", action="store_true")
    p.add_argument("--million-replay", action="store_true",
                   help="replay the million's scheduler events alone too (its peak RSS "
                        "then includes the recorded events)")
    p.add_argument("--ratios", type=int, default=0, metavar="N",
                   help="also run every workload at N workers and print the ratios")
    compiled_core.add_option(p)
    p.add_argument("--check", action="store_true", help="exit 1 unless the targets are met")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = p.parse_args(argv)
    global CHILD_ENV
    CHILD_ENV = compiled_core.child_env(args.compiled)

    sizes = [int(x) for x in args.workers.split(",")]
    speed_before = machine_speed()
    rows = scaling_table(args.workload, args.tasks, sizes, args.repeat, args.seed)
    speed_after = machine_speed()
    print(f"\nMachine speed: {speed_before:.1f} ns per pure-Python loop iteration before the "
          f"table, {speed_after:.1f} after (lower is faster).")
    print_scaling(rows)
    million = None
    if not args.skip_million:
        million = simulate("million", args.million_workers, args.million_tasks, args.seed,
                           replay=args.million_replay)
        print_million(million)
    ratio_rows = ratios(args.ratios, args.seed) if args.ratios else []

    cpus = [r["scheduler_cpu_per_task_us"] for r in rows]
    per_round = round_growths(rows)
    growth = statistics.median(per_round)
    medians = [r["median_cpu_per_task_us"] for r in rows]
    print(f"\nGrowth from {sizes[0]} to {sizes[-1]} workers, round by round: "
          + ", ".join(f"{g:.2f}" for g in per_round)
          + f" (median {growth:.2f}x); ratio of the minima {cpus[-1] / cpus[0]:.2f}x, "
          f"of the medians {medians[-1] / medians[0]:.2f}x")
    worst = max(cpus + ([million["scheduler_cpu_per_task_us"]] if million else []))
    ok = worst <= CPU_TARGET_US and growth <= GROWTH_TARGET
    print(f"\nTargets: <= {CPU_TARGET_US:g} us/task (worst {worst:.2f}), growth <= "
          f"{GROWTH_TARGET:g}x from {sizes[0]} to {sizes[-1]} workers (median of the rounds' "
          f"{growth:.2f}x): {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps({"scaling": rows, "million": million, "ratios": ratio_rows,
                          "machine_speed_ns": [speed_before, speed_after]}))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
