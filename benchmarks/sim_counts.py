"""The scheduler's instructions and cache misses per task as the cluster grows, counted.

    .venv/bin/python benchmarks/sim_counts.py [--workload million] [--tasks 20000]
        [--workers 10,1000] [--seed 0] [--compiled] [--functions 25] [--keep DIR]
        [--in-sim] [--last-level 512K,8]

``sim_scale.py`` times the scheduler on the process clock, and on a shared
machine the clock moves: the same code, replayed alone, grew 1.19x from 10
to 1,000 workers one day and 1.42-1.57x the next (benchmarks/README.md, stop
17). This script counts instead. For each size it

1. runs the workload on the simulator (``teamster.sim``, validation off) and
   records every event the scheduler's core handled, in order;
2. replays those events into a fresh ``SchedulerState`` under Valgrind's
   callgrind with its cache simulator (an L2-sized last level, 512 KiB,
   8-way: the per-core cache of the dev machine's EPYC), counting only
   inside ``SchedulerState.handle``, and checks the replay emits as many
   instructions as the run did (the core is deterministic, so it re-makes
   every decision).

The replay calls ``handle`` through ``map()``, so that callgrind can switch
its counting on and off at a C function (``--toggle-collect=map_next``)
with the pure-Python core as with the compiled one; the core itself never
calls ``map``. Loading the events and the loop around them are not counted.

It prints instructions (Ir) and last-level misses (reads, writes) per task,
and each size against the smallest; ``--functions N`` adds the N functions
whose own misses per task grew most from the smallest size to the largest
(exclusive cost, from ``callgrind_annotate``). Replayed alone, nothing runs
between two events, as in a scheduler process of its own; what grows is the
scheduler's own work and the records it touches.

``--in-sim`` counts inside the running simulation instead (the simulator
calls ``handle`` through ``map`` there too): the events are fresh, as a
scheduler's server hands them over, and the simulated workers run between
two of them and evict the scheduler's data, as they do in ``sim_scale``'s
in-sim column. The difference between the two modes is the simulator's
share of the growth, not the scheduler's. (Nothing outside ``handle`` may
call ``map`` then: the simulator and the worker core do not; a test checks.)

The counts are the same on every run and every machine with the same
build: callgrind runs with ``PYTHONHASHSEED=0`` and, where ``setarch`` is
installed, without address-space randomisation. (Without them a random
string-hash seed laid out the scheduler's dicts differently and random
addresses moved records across cache sets: the same build counted 70.4
and 71.8 misses per task at 10 workers on two runs.) They do not say what
a miss costs here (that is the machine's, and
what ``sim_scale.py`` measures). A 20,000-task size takes 2-4 minutes under
callgrind, and two sizes run at a time. Needs ``valgrind``
(``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import compiled_core  # benchmarks/, next to this script

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The simulated last level: by default the L2 per core of the dev machine
#: (an EPYC of family 25, Zen 3: /sys/devices/system/cpu/cpu0/cache/index2
#: says 512K, 8-way; lscpu's "1 MiB (2 instances)" is the sum over cores).
#: ``--last-level 32M,16`` simulates its L3 instead: then a miss is one that
#: goes to memory, not to the L3. Lines are 64 bytes on both.
LAST_LEVEL = "512K,8"
LINE_BYTES = 64


def cache_spec(text: str) -> tuple[int, int]:
    """``SIZE[,WAYS]`` (``512K,8``, ``32M``; 16 ways unless given) as (bytes, ways).

    Callgrind needs a whole power of two of sets, so a size that gives
    anything else is refused here, with the reason, rather than by valgrind.
    """
    m = re.fullmatch(r"(\d+)([KM])(?:,(\d+))?", text.strip(), re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SIZE[,WAYS] with SIZE in K or M, e.g. 512K,8 or 32M,16")
    size = int(m[1]) * (1024 if m[2].upper() == "K" else 1024 * 1024)
    ways = int(m[3] or 16)
    if ways < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a cache has at least one way")
    sets, rest = divmod(size, ways * LINE_BYTES)
    if rest or sets < 1 or sets & (sets - 1):
        raise argparse.ArgumentTypeError(
            f"{text!r}: size / (ways * {LINE_BYTES} bytes) must be a power of two of "
            f"sets, as callgrind's cache simulator requires")
    return size, ways


def describe(cache: tuple[int, int]) -> str:
    size, ways = cache
    return (f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else
            f"{size // 1024} KiB") + f", {ways}-way"


#: ``LAST_LEVEL`` as (bytes, ways), parsed once.
DEFAULT_LAST_LEVEL: tuple[int, int] = cache_spec(LAST_LEVEL)

#: callgrind_annotate's columns: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
IR, DLMR, DLMW = 0, 7, 8
#: One count column: "1,234 ( 5.6%)", a bare "0", or "." (none).
COUNT = re.compile(r"\s*(?:([\d,]+)(?: \([^)]*\))?|\.)(?=\s)")

#: The start of both scripts that run a simulation: argv is workload,
#: workers, tasks, seed (then the script's own arguments).
BUILD_SIM = """
import sys
from teamster.sim import Simulation, build_workload
workload, workers, tasks, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4])
sim = Simulation(build_workload(workload, workers=workers, tasks=tasks, seed=seed),
                 validate=False, trace=False)
"""

#: Run in a child: the simulation, then its scheduler events into a pickle (argv[5]).
RECORD = BUILD_SIM + """
import pickle
sim.scheduler.recorded = []  # (SimScheduler appends every event it hands the core)
sim.run()
with open(sys.argv[5], "wb") as f:
    pickle.dump({"heartbeat_timeout": sim.heartbeat_timeout, "events": sim.scheduler.recorded,
                 "instructions": sim.scheduler.n_instructions}, f, protocol=5)
"""

#: Run under callgrind: load the events, then replay them, counted inside map_next only.
REPLAY = """
import gc, pickle, sys
from teamster.core.scheduler import SchedulerState
with open(sys.argv[1], "rb") as f:
    run = pickle.load(f)
gc.disable()  # as in the simulator (teamster.sim.run says why)
state = SchedulerState(validate=False, heartbeat_timeout=run["heartbeat_timeout"])
n = 0
for out in map(state.handle, run["events"]):
    n += len(out)
if n != run["instructions"]:
    sys.exit(f"the replay emitted {n} instructions, the run {run['instructions']}")
"""

#: Run under callgrind (``--in-sim``): the simulation itself, its scheduler's
#: ``handle`` called through ``map`` so that only the work inside it is
#: counted, with the simulated workers running between its events.
IN_SIM = BUILD_SIM + """
class CountedState:
    def __init__(self, state):
        self.state = state
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.state, name)

    def handle(self, event):
        self.calls += 1
        for out in map(self.state.handle, (event,)):
            return out

counted = sim.scheduler.state = CountedState(sim.scheduler.state)
sim.run()
executed = sum(w.executed for w in sim.workers.values())
print(f"handled {counted.calls} of {sim.scheduler.n_events} events; executed {executed}")
"""


def record(workload: str, workers: int, tasks: int, seed: int, out: Path,
           env: dict[str, str] | None) -> None:
    subprocess.run([sys.executable, "-c", RECORD, workload, str(workers), str(tasks), str(seed),
                    str(out)], check=True, cwd=REPO_ROOT, env=env)


def callgrind(script: str, args: list[str], out: Path, env: dict[str, str] | None,
              last_level: tuple[int, int] = DEFAULT_LAST_LEVEL) -> None:
    ll = f"--LL={last_level[0]},{last_level[1]},{LINE_BYTES}"
    cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes", ll, "--toggle-collect=map_next",
           f"--callgrind-out-file={out}", sys.executable, "-c", script, *args]
    if shutil.which("setarch"):  # (the same addresses every run: see the docstring)
        cmd = ["setarch", "-R", *cmd]
    env = {**(os.environ if env is None else env), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"callgrind failed ({out.name}):\n{proc.stderr[-3000:]}")


def functions(profile: Path) -> dict[str, list[int]]:
    """Exclusive counts per function (file prefix dropped), from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no",
                           "--threshold=100", str(profile)],
                          capture_output=True, text=True, check=True).stdout
    return parse_annotate(text)


def parse_annotate(text: str) -> dict[str, list[int]]:
    """The nine counts of each function line of callgrind_annotate's listing.

    A column is "1,234 ( 5.6%)", or a bare "0", or "." when the function has
    none of that event; a name may repeat (one per object file) and is summed.
    """
    rows: dict[str, list[int]] = {}
    for line in text.splitlines():
        values: list[int] = []
        pos = 0
        while len(values) < 9 and (m := COUNT.match(line, pos)) and m.end() > pos:
            values.append(int(m.group(1).replace(",", "")) if m.group(1) else 0)
            pos = m.end()
        rest = line[pos:].strip()
        if len(values) < 9 or not rest or "PROGRAM TOTALS" in rest:
            continue
        name = rest.rsplit(":", 1)[-1].split(" [")[0].strip()
        row = rows.setdefault(name, [0] * 9)
        for i, v in enumerate(values):
            row[i] += v
    return rows


def summary(profile: Path) -> list[int]:
    """The profile's totals: the nine counts, exactly as callgrind wrote them."""
    for line in profile.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return [int(x) for x in line.split()[1:10]]
    raise SystemExit(f"{profile}: no totals line (did callgrind finish?)")


def measure(workload: str, sizes: list[int], tasks: int, seed: int, work: Path,
            env: dict[str, str] | None, in_sim: bool = False,
            last_level: tuple[int, int] = DEFAULT_LAST_LEVEL) -> list[dict[str, Any]]:
    """Record every size, then replay them under callgrind, two at a time (2 cores);
    or, ``in_sim``, count each size's simulation as it runs."""
    events = {n: work / f"events-{n}.pkl" for n in sizes}
    profiles = {n: work / f"callgrind-{n}.out" for n in sizes}
    with ThreadPoolExecutor(2) as pool:
        if in_sim:
            list(pool.map(lambda n: callgrind(
                IN_SIM, [workload, str(n), str(tasks), str(seed)], profiles[n], env,
                last_level), sizes))
        else:
            list(pool.map(lambda n: record(workload, n, tasks, seed, events[n], env), sizes))
            list(pool.map(lambda n: callgrind(REPLAY, [str(events[n])], profiles[n], env,
                                              last_level), sizes))
    results = []
    for n in sizes:
        t = summary(profiles[n])
        print(f"  {n} workers: {t[IR] / tasks:,.0f} Ir, "
              f"{(t[DLMR] + t[DLMW]) / tasks:.1f} LL misses per task", file=sys.stderr)
        results.append({"workers": n, "tasks": tasks, "profile": profiles[n],
                        "ir": t[IR] / tasks, "ll_read": t[DLMR] / tasks,
                        "ll_write": t[DLMW] / tasks})
    return results


def print_table(results: list[dict[str, Any]], workload: str, seed: int,
                in_sim: bool = False,
                last_level: tuple[int, int] = DEFAULT_LAST_LEVEL) -> None:
    base = results[0]
    how = "counted in the running simulation" if in_sim else "replayed alone under callgrind"
    print(f"\n## Scheduler work per task, {how}: {workload}, "
          f"{base['tasks']:,} tasks, seed {seed}, last level {describe(last_level)}\n")
    print("| workers | instructions | vs smallest | LL misses (read + write) | vs smallest |")
    print("|---:|---:|---:|---:|---:|")
    base_miss = base["ll_read"] + base["ll_write"]
    for r in results:
        miss = r["ll_read"] + r["ll_write"]
        print(f"| {r['workers']:,} | {r['ir']:,.0f} | {r['ir'] / base['ir']:.3f}x | "
              f"{miss:.1f} ({r['ll_read']:.1f} + {r['ll_write']:.1f}) | {miss / base_miss:.2f}x |")


def print_functions(small: dict[str, Any], large: dict[str, Any], n: int) -> None:
    a, b = functions(small["profile"]), functions(large["profile"])
    zero = [0] * 9
    ta, tb = small["tasks"], large["tasks"]

    def misses(row: list[int], tasks: int) -> float:
        return (row[DLMR] + row[DLMW]) / tasks

    growth = sorted(set(a) | set(b),
                    key=lambda k: misses(b.get(k, zero), tb) - misses(a.get(k, zero), ta),
                    reverse=True)
    print(f"\n### Functions whose own LL misses per task grew most, "
          f"{small['workers']:,} -> {large['workers']:,} workers\n")
    print("| function | Ir | Ir | LL misses | LL misses | growth |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in growth[:n]:
        x, y = a.get(k, zero), b.get(k, zero)
        print(f"| `{k[:80]}` | {x[IR] / ta:,.0f} | {y[IR] / tb:,.0f} | {misses(x, ta):.1f} | "
              f"{misses(y, tb):.1f} | {misses(y, tb) - misses(x, ta):+.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="million")
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--workers", default="10,1000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--functions", type=int, default=0, metavar="N",
                   help="list the N functions whose misses per task grew most")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep the event pickles and callgrind profiles in DIR")
    p.add_argument("--in-sim", action="store_true",
                   help="count the scheduler inside the running simulation instead of "
                        "replaying its events alone (the simulated workers then evict "
                        "its data between events, as in sim_scale's in-sim column)")
    p.add_argument("--last-level", type=cache_spec, default=DEFAULT_LAST_LEVEL,
                   metavar="SIZE[,WAYS]",
                   help=f"the simulated last-level cache ({LAST_LEVEL}: this machine's L2 "
                        "per core; 32M,16: its shared L3, so that misses are those to memory)")
    compiled_core.add_option(p)
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"sim_counts.py needs {tool}: apt-get install valgrind")
    env = compiled_core.child_env(args.compiled) or dict(os.environ)
    env["TEAMSTER_VALIDATE"] = "0"
    sizes = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="teamster-counts-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = measure(args.workload, sizes, args.tasks, args.seed, work, env, args.in_sim,
                          args.last_level)
        print_table(results, args.workload, args.seed, args.in_sim, args.last_level)
        if args.functions:
            print_functions(results[0], results[-1], args.functions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
