"""Task throughput: teamster vs dask.distributed, in one invocation.

Runs two workloads of N (default 10,000) tasks on a
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``:

- ``map``:   ``client.gather(client.map(inc, data))``, no-op tasks;
- ``graph``: N futures submitted one by one, half leaves and half tasks
  that each consume two earlier futures, then gathered;

against teamster (this venv's python) and against dask.distributed (a
separate venv's python, so ``distributed`` is never imported here), and
prints tasks/s for both and the ratio. Target: teamster >= 5x dask.

Each side runs in a fresh child process per repeat (``_workload.py``, the same
file for both sides); repeats alternate teamster, dask, teamster, dask, ... so
machine noise hits both. Cluster startup and a warm-up are excluded from the
timings. Medians are reported, with every individual run.

Usage::

    .venv/bin/python benchmarks/throughput.py [--repeat 3] [--tasks 10000]
        [--dask-python PATH] [--only teamster|dask] [--json] [--check]

The dask python defaults to ``$TEAMSTER_DASK_PYTHON``, else
``<repo>/.bench-venv-dask/bin/python`` (made by ``make bench``), else
``/work/dask-venv/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORKLOAD = HERE / "_workload.py"
WORKLOADS = ("map", "graph")
TARGET_RATIO = 5.0
DASK_VERSION = "2026.8.0"
FALLBACK_DASK_PYTHON = Path("/work/dask-venv/bin/python")
HOW_TO_MAKE_DASK_VENV = (
    f"python3.11 -m venv /work/dask-venv && "
    f"/work/dask-venv/bin/pip install distributed=={DASK_VERSION}"
)


def default_dask_python() -> Path:
    env = os.environ.get("TEAMSTER_DASK_PYTHON")
    if env:
        return Path(env)
    local = REPO_ROOT / ".bench-venv-dask" / "bin" / "python"
    if local.exists():
        return local
    return FALLBACK_DASK_PYTHON


def sides_to_run(only: str | None, dask_python: Path) -> tuple[list[str], list[str]]:
    """The sides a benchmark runs ("teamster", "dask"), and why one was skipped."""
    sides: list[str] = []
    notes: list[str] = []
    if only != "dask":
        sides.append("teamster")
    if only != "teamster":
        problem = check_dask_python(dask_python)
        if problem is None:
            sides.append("dask")
        else:
            notes.append(problem)
            print(problem, file=sys.stderr)
    return sides, notes


def check_dask_python(python: Path) -> str | None:
    """None if ``python`` can import distributed, else a message saying how to fix it."""
    if not python.exists():
        problem = f"no python at {python}"
    else:
        probe = subprocess.run(
            [str(python), "-c", "import distributed; print(distributed.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode == 0:
            return None
        problem = f"{python} cannot import distributed ({probe.stderr.strip().splitlines()[-1:]})"
    return (
        f"dask side skipped: {problem}.\n"
        f"  Create the dask venv with:\n    {HOW_TO_MAKE_DASK_VENV}\n"
        f"  or point --dask-python / $TEAMSTER_DASK_PYTHON at a python that has "
        f"distributed (`make bench` makes {REPO_ROOT / '.bench-venv-dask'})."
    )


def run_side(python: str, api: str, tasks: int, run_id: int, timeout: float) -> dict:
    """One child process: start a cluster, warm up, time each workload once."""
    env = dict(os.environ)
    # The workers import _workload (task functions pickle by reference) and,
    # for teamster, src/ (in case teamster is not installed into the venv).
    paths = [str(HERE)] + ([str(REPO_ROOT / "src")] if api == "teamster" else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    cmd = [
        python,
        str(WORKLOAD),
        "--api",
        api,
        "--tasks",
        str(tasks),
        "--run-id",
        str(run_id),
        "--workloads",
        ",".join(WORKLOADS),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO_ROOT)
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return {"error": f"exit {proc.returncode}:\n{tail}"}
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"no JSON result line; last line: {lines[-1][:300]!r}"}
    result["process_wall_s"] = wall
    return result


def median_rate(runs: list[dict], workload: str) -> float | None:
    rates = [r["workloads"][workload]["tasks_per_s"] for r in runs if "workloads" in r]
    return statistics.median(rates) if rates else None


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="teamster vs dask.distributed task throughput (tasks/s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per workload")
    parser.add_argument(
        "--dask-python",
        type=Path,
        default=None,
        help="python of a venv with distributed (default: $TEAMSTER_DASK_PYTHON, "
        "<repo>/.bench-venv-dask/bin/python, /work/dask-venv/bin/python)",
    )
    parser.add_argument(
        "--teamster-python",
        default=sys.executable,
        help="python of teamster's venv (default: this one)",
    )
    parser.add_argument("--only", choices=["teamster", "dask"], help="run one side only")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child run")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of tables"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 unless teamster reaches {TARGET_RATIO:g}x dask on every workload",
    )
    args = parser.parse_args(argv)

    dask_python = args.dask_python or default_dask_python()
    sides, notes = sides_to_run(args.only, dask_python)

    pythons = {"teamster": args.teamster_python, "dask": str(dask_python)}
    apis = {"teamster": "teamster", "dask": "distributed"}
    runs: dict[str, list[dict]] = {s: [] for s in ("teamster", "dask")}
    for i in range(args.repeat):
        for side in sides:  # interleaved: teamster, dask, teamster, dask, ...
            if not args.json:
                print(f"[{i + 1}/{args.repeat}] {side} ...", file=sys.stderr, flush=True)
            result = run_side(pythons[side], apis[side], args.tasks, i, args.timeout)
            result["repeat"] = i + 1
            runs[side].append(result)
            if "error" in result:
                print(f"  {side} run {i + 1} failed: {result['error']}", file=sys.stderr)

    summary = {}
    for w in WORKLOADS:
        t = median_rate(runs["teamster"], w)
        d = median_rate(runs["dask"], w)
        summary[w] = {
            "teamster_tasks_per_s": t,
            "dask_tasks_per_s": d,
            "ratio": (t / d) if (t and d) else None,
        }

    doc = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "processes": True},
        "target_ratio": TARGET_RATIO,
        "dask_python": str(dask_python),
        "summary": summary,
        "runs": runs,
        "notes": notes,
    }

    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(
            f"Throughput, {args.tasks:,} tasks per workload, LocalCluster(n_workers=2, "
            f"threads_per_worker=1, processes=True), median of {args.repeat}"
        )
        header = f"{'workload':<10}{'teamster tasks/s':>18}{'dask tasks/s':>15}{'ratio':>9}  target {TARGET_RATIO:g}x"
        print(header)
        print("-" * len(header))
        for w, s in summary.items():
            ratio = s["ratio"]
            verdict = "-" if ratio is None else ("met" if ratio >= TARGET_RATIO else "NOT met")
            print(
                f"{w:<10}{fmt_rate(s['teamster_tasks_per_s']):>18}"
                f"{fmt_rate(s['dask_tasks_per_s']):>15}"
                f"{('-' if ratio is None else f'{ratio:.2f}x'):>9}  {verdict}"
            )
        print()
        print("Individual runs (tasks/s; startup excluded from rates):")
        for side in ("teamster", "dask"):
            for r in runs[side]:
                if "error" in r:
                    last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
                    print(f"  {side:<9} run {r['repeat']}: FAILED ({last.strip()})")
                    continue
                rates = "  ".join(
                    f"{w}={r['workloads'][w]['tasks_per_s']:>8,.0f}" for w in WORKLOADS
                )
                print(
                    f"  {side:<9} run {r['repeat']}: {rates}   "
                    f"(cluster startup {r['startup_s']:.2f} s, {r.get('version')})"
                )
        for note in notes:
            print()
            print(note)

    failed = any("error" in r for side in sides for r in runs[side])
    if args.check:
        ok = all(s["ratio"] is not None and s["ratio"] >= TARGET_RATIO for s in summary.values())
        return 0 if ok and not failed else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
