"""Placement and work stealing: makespan / lower bound, teamster vs dask.distributed.

Six workloads (``teamster.sim.balance_workloads``; benchmarks/README.md
says what each is for), each on a real ``LocalCluster(processes=True,
threads_per_worker=1)`` of 8 workers (4 for large-inputs; 2 growing to 8
for growing), with sleep-based tasks so that 8 workers fit on two cores:

- ``independent``: 400 lognormal tasks (mean 50 ms, sigma 1) + 4 of 1 s;
- ``misestimated``: 400 tasks of one prefix, the first 16 5 ms, the rest 100 ms;
- ``small-input``: a 10 KB input on one worker, 400 ~50 ms tasks that need it;
- ``growing``: 600 lognormal tasks (mean 100 ms) on 2 workers, scaled to 8 at
  25% of the 8-worker work bound;
- ``large-inputs``: 8 x 50 MB numpy arrays on 2 of 4 workers, 64 readers of
  100-200 ms;
- ``random-dag``: 2,000 tasks sleeping 1, 20 or 200 ms, random dependencies.

lower bound = max(total planned sleep / threads, critical path of planned
sleeps), exact arithmetic on the plan (``Workload.lower_bound``); for
growing, the threads count only from when each new worker registered as
the client saw it. makespan = wall time from the first submit to the last
result on the client. Each run is a fresh child process
(``_balance_workload.py``, the same file for both sides), repeats interleave
teamster and dask, and the table shows medians with every run.

Usage::

    .venv/bin/python benchmarks/balance.py [--repeat 3] [--workloads a,b]
        [--only teamster|dask] [--dask-python PATH] [--json] [--check]

``--check`` exits 1 unless teamster's median ratio is at most 1.15 (1.5 on
random-dag and large-inputs) and below dask's on every workload.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT / "src"))  # teamster, if not installed in this python
sys.path.insert(0, str(HERE))

from throughput import default_dask_python, sides_to_run  # noqa: E402

from teamster.sim.balance_workloads import REAL_WORKERS, balance_tasks  # noqa: E402
from teamster.sim.workload import WorkerSpec, Workload  # noqa: E402
from teamster.sim.workloads import build_workload  # noqa: E402

WORKLOAD_FILE = HERE / "_balance_workload.py"
WORKLOADS = ("independent", "misestimated", "small-input", "growing", "large-inputs",
             "random-dag")
#: teamster's median makespan / lower bound must be at most this (--check) ...
TARGET = {name: 1.15 for name in WORKLOADS} | {"random-dag": 1.5, "large-inputs": 1.5}
# ... and below dask's on every workload.


def plan_of(name: str, seed: int) -> Workload:
    full = f"balance-{name}"
    workers = REAL_WORKERS[full]
    return build_workload(full, workers=workers, threads=1, tasks=balance_tasks(full, workers),
                          seed=seed)


def plan_json(w: Workload) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in w.keys):
        raise ValueError(f"{w.name}: the real benchmark needs string keys")
    return {
        "name": w.name, "seed": w.seed, "keys": list(w.keys),
        "durations": list(w.durations), "nbytes": list(w.nbytes),
        "deps": [list(d) for d in w.deps],
        "scattered": {str(i): list(h) for i, h in w.scattered.items()},
        "wanted": list(w.wanted),
        "workers": [{"nthreads": s.nthreads, "join": s.join} for s in w.workers],
    }


def lower_bound(w: Workload, joins: list[float] | None) -> dict[str, float]:
    """The plan's bound; with ``joins``, late workers count from when they registered."""
    if joins is not None:
        present = [s for s in w.workers if s.join == 0.0]
        late = [s for s in w.workers if s.join > 0.0]
        if len(joins) < len(late):
            raise ValueError(f"{len(late)} workers should have joined, {len(joins)} registered")
        w = Workload(w.name, w.seed, keys=w.keys, durations=w.durations, nbytes=w.nbytes,
                     deps=w.deps, scattered=w.scattered, wanted=w.wanted,
                     workers=present + [WorkerSpec(s.name, s.nthreads, join=t)
                                        for s, t in zip(late, sorted(joins), strict=False)])
    return {"lower_bound": w.lower_bound(), "work_bound": w.work_bound(),
            "critical_path": w.critical_path(), "total_work": w.total_work()}


def run_side(python: str, api: str, plan_file: Path, timeout: float) -> dict[str, Any]:
    """One child process: start a cluster, warm up, run the plan once."""
    env = dict(os.environ)
    # Workers import _balance_workload (task functions pickle by reference)
    # and, for teamster, src/ (in case teamster is not installed into the venv).
    paths = [str(HERE)] + ([str(REPO_ROOT / "src")] if api == "teamster" else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    cmd = [python, str(WORKLOAD_FILE), "--api", api, "--plan", str(plan_file)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return {"error": f"exit {proc.returncode}:\n{tail}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"no JSON result line; last line: {lines[-1][:300]!r}"}
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def judge(result: dict[str, Any], w: Workload) -> None:
    """Add the lower bound and the ratio to a successful run's result."""
    if "error" in result:
        return
    joins = result.get("joins_s") if any(s.join > 0 for s in w.workers) else None
    try:
        result.update(lower_bound(w, joins))
    except ValueError as exc:
        result["error"] = str(exc)
        return
    result["ratio"] = result["makespan_s"] / result["lower_bound"]


def median_ratio(runs: list[dict[str, Any]]) -> float | None:
    ratios = [r["ratio"] for r in runs if "ratio" in r]
    return statistics.median(ratios) if ratios else None


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def fmt_count(x: Any) -> str:
    return "-" if x is None else f"{x:,}"


def print_tables(doc: dict[str, Any]) -> None:
    print()
    print(f"Makespan / lower bound (1.0 is perfect; lower is better), median of "
          f"{doc['repeat']}, LocalCluster(processes=True, threads_per_worker=1)")
    header = (f"{'workload':<14}{'teamster':>10}{'dask':>9}{'teamster/dask':>15}"
              f"{'target':>8}  verdict")
    print(header)
    print("-" * len(header))
    for name, s in doc["summary"].items():
        print(f"{name:<14}{fmt(s['teamster_ratio']):>10}{fmt(s['dask_ratio']):>9}"
              f"{fmt(s['teamster_over_dask']):>15}{s['target']:>8.2f}  {s['verdict']}")
    for name in doc["summary"]:
        print(f"\n{name}: every run (makespan s / lower bound s = ratio; steals; MB moved)")
        for side in ("teamster", "dask"):
            for r in doc["runs"][name][side]:
                if "error" in r:
                    last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
                    print(f"  {side:<9} run {r['repeat']}: FAILED ({last.strip()})")
                    continue
                moved = r.get("bytes_moved")
                extra = ""
                if "joins_s" in r:
                    extra = (f"; scale called at {r['scale_called_s']:.2f} s, new workers "
                             f"registered {r['joins_s'][0]:.2f}-{r['joins_s'][-1]:.2f} s")
                print(f"  {side:<9} run {r['repeat']}: {r['makespan_s']:.3f} / "
                      f"{r['lower_bound']:.3f} = {r['ratio']:.3f}; steals "
                      f"{fmt_count(r.get('steals'))}; "
                      f"{'-' if moved is None else f'{moved / 1e6:,.1f}'} MB{extra}")
    for note in doc["notes"]:
        print()
        print(note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--dask-python", type=Path, default=None,
                        help="python of a venv with distributed (default: "
                             "$TEAMSTER_DASK_PYTHON, <repo>/.bench-venv-dask/bin/python, "
                             "/work/dask-venv/bin/python)")
    parser.add_argument("--teamster-python", default=sys.executable,
                        help="python of teamster's venv (default: this one)")
    parser.add_argument("--only", choices=["teamster", "dask"], help="run one side only")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child run")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of tables")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless teamster meets its ratio target and beats dask "
                             "on every workload")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    dask_python = args.dask_python or default_dask_python()
    sides, notes = sides_to_run(args.only, dask_python)

    pythons = {"teamster": args.teamster_python, "dask": str(dask_python)}
    apis = {"teamster": "teamster", "dask": "distributed"}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        n: {"teamster": [], "dask": []} for n in names}
    with tempfile.TemporaryDirectory(prefix="teamster-balance-") as tmp:
        for i in range(args.repeat):
            for name in names:
                # The same plan (seed = repeat) for both sides of a repeat.
                w = plan_of(name, seed=i)
                plan_file = Path(tmp) / f"{name}-{i}.json"
                plan_file.write_text(json.dumps(plan_json(w)))
                for side in sides:  # interleaved: teamster, dask, teamster, dask, ...
                    if not args.json:
                        print(f"[{i + 1}/{args.repeat}] {name} {side} ...", file=sys.stderr,
                              flush=True)
                    result = run_side(pythons[side], apis[side], plan_file, args.timeout)
                    result["repeat"] = i + 1
                    judge(result, w)
                    runs[name][side].append(result)
                    if "error" in result:
                        print(f"  {name} {side} run {i + 1} failed: {result['error']}",
                              file=sys.stderr)

    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        t, d = median_ratio(runs[name]["teamster"]), median_ratio(runs[name]["dask"])
        met = t is not None and t <= TARGET[name] and (d is None or t < d)
        summary[name] = {
            "teamster_ratio": t, "dask_ratio": d,
            "teamster_over_dask": (t / d) if (t and d) else None,
            "target": TARGET[name],
            "verdict": "-" if t is None else ("met" if met and d is not None else
                                              "NOT met" if not met else "met (no dask)"),
        }
    doc = {"repeat": args.repeat, "dask_python": str(dask_python), "summary": summary,
           "runs": runs, "notes": notes}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_tables(doc)

    failed = any("error" in r for n in names for s in sides for r in runs[n][s])
    if args.check:
        ok = all(s["teamster_ratio"] is not None and s["dask_ratio"] is not None
                 and s["teamster_ratio"] <= s["target"]
                 and s["teamster_ratio"] < s["dask_ratio"] for s in summary.values())
        return 0 if ok and not failed else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
