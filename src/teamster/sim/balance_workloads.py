"""The placement and work-stealing workloads (issue 5), for the simulator and the real benchmark.

Six graphs, each aimed at one way placement goes wrong. They are the same
graphs ``benchmarks/balance.py`` runs on real clusters: that script builds
them here (at 8 workers, 4 for large-inputs), ships the plan to the worker
processes, which sleep each task's planned duration, and judges the result
with the same ``Workload.lower_bound()``. So a simulated ratio and a real
ratio of the same name measure the same thing.

Sizes scale with the cluster: ``tasks`` is the total as for every builder,
and ``balance_tasks(name, workers)`` gives the count at which a workload is
meant to run (``TASKS_PER_WORKER`` per worker: the real benchmark's size per
worker), so that a 1,000-worker run is the 8-worker one made wider, not a
handful of tasks on an idle cluster. ``default_tasks`` is the real
benchmark's size.

Every duration is planned and sleep-like (no CPU is modelled), outputs are
small unless the workload is about data, and durations carry a little
seeded jitter so that a seed names one graph.
"""

from __future__ import annotations

import random

from teamster.sim.workload import WorkerSpec, Workload
from teamster.sim.workloads import KB, MB, cluster, lognormal, register

#: Bytes of a task's output when the workload is not about data.
SMALL_OUTPUT = 100

#: Tasks per worker each workload is sized for (the real benchmark's size / its workers).
TASKS_PER_WORKER = {
    "balance-independent": 50.5,  # 400 short + 4 long on 8 workers
    "balance-misestimated": 50,
    "balance-small-input": 50,
    "balance-growing": 75,
    "balance-large-inputs": 16,  # 64 readers on 4 workers
    "balance-random-dag": 250,
}

#: The cluster size the real benchmark runs each workload on.
REAL_WORKERS = {name: (4 if name == "balance-large-inputs" else 8) for name in TASKS_PER_WORKER}


def balance_tasks(name: str, workers: int) -> int:
    """How many tasks ``name`` has at ``workers`` workers (its per-worker size, scaled)."""
    return max(1, round(TASKS_PER_WORKER[name] * workers))


def _real_size(name: str) -> int:
    return balance_tasks(name, REAL_WORKERS[name])


def _spread(n: int, count: int) -> set[int]:
    """``count`` distinct positions spread evenly over the first half of ``range(n)``."""
    out: set[int] = set()
    for j in range(count):
        p = min(n - 1, (2 * j + 1) * n // (4 * count))
        while p in out:
            p = (p + 1) % n
        out.add(p)
    return out


@register("balance-independent",
          "independent tasks, lognormal (mean 50 ms, sigma 1, clipped at 0.25 s), plus one "
          "1-second task per two "
          "workers spread over the first half: queues behind the long ones must move",
          default_tasks=_real_size("balance-independent"))
def balance_independent(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("balance-independent", 0, workers=cluster(workers, threads))
    # The long tasks sit in the first half of the submission order: late
    # enough that short ones went first and taught the estimate, early enough
    # that a balancing scheduler can still hide them behind the rest.
    long_positions = _spread(n, min(n, max(1, workers // 2)))
    for i in range(n):
        # Short tasks are clipped at 0.25 s (5x their mean). Unclipped, the
        # 50,000 draws at 1,000 workers bring hundreds of 0.5-2 s "short"
        # tasks nobody can tell apart in advance; even ideal list scheduling
        # in submission order (no overhead, perfect balance) then ends 15%
        # past the bound at 1,000 workers and 2% at 8: the ratio would
        # measure the draw, not the placement. Clipped: 7% and 2%.
        duration = 1.0 if i in long_positions else min(0.25, lognormal(rng, 0.05, 1.0))
        w.add(f"work-{i}", duration, SMALL_OUTPUT)
    w.wanted = list(range(n))
    return w


@register("balance-misestimated",
          "one prefix whose first 2 tasks per worker take 5 ms and the rest 100 ms (+-10%): "
          "the estimate learnt from the first ones is 20x too short",
          default_tasks=_real_size("balance-misestimated"))
def balance_misestimated(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("balance-misestimated", 0, workers=cluster(workers, threads))
    n_short = min(n, 2 * workers)
    for i in range(n):
        mean = 0.005 if i < n_short else 0.1
        w.add(f"load-{i}", mean * rng.uniform(0.9, 1.1), SMALL_OUTPUT)
    w.wanted = list(range(n))
    return w


@register("balance-small-input",
          "a 10 KB input held by one worker and tasks of ~50 ms that all need it: copy the "
          "input rather than queue everything on its holder",
          default_tasks=_real_size("balance-small-input"))
def balance_small_input(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("balance-small-input", 0, workers=cluster(workers, threads))
    source = w.scatter("input-0", 10 * KB, (0,))
    for i in range(n):
        w.add(f"use-{i}", rng.uniform(0.045, 0.055), SMALL_OUTPUT, (source,))
    w.wanted = [i for i in range(len(w.keys)) if i not in w.scattered]
    return w


@register("balance-growing",
          "independent tasks (lognormal, mean 100 ms, sigma 0.5) on a quarter of the workers; "
          "the rest join together at 25% of the full cluster's work bound",
          default_tasks=_real_size("balance-growing"))
def balance_growing(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    durations = [lognormal(rng, 0.1, 0.5) for _ in range(n)]
    early = max(1, workers // 4)
    join = 0.25 * sum(durations) / (workers * threads)
    specs = [WorkerSpec(f"w{i}", threads, join=0.0 if i < early else join)
             for i in range(workers)]
    w = Workload("balance-growing", 0, workers=specs)
    for i, d in enumerate(durations):
        w.add(f"grow-{i}", d, SMALL_OUTPUT)
    w.wanted = list(range(n))
    return w


@register("balance-large-inputs",
          "one 50 MB input per 8 readers, held by half the workers; readers sleep 100-200 ms "
          "and return little: the bound ignores transfers, so moving 50 MB costs real time",
          default_tasks=_real_size("balance-large-inputs"))
def balance_large_inputs(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("balance-large-inputs", 0, workers=cluster(workers, threads))
    holders = max(1, workers // 2)
    n_inputs = max(1, n // 8)
    inputs = [w.scatter(f"input-{j}", 50 * MB, (j % holders,)) for j in range(n_inputs)]
    for i in range(n):
        w.add(f"read-{i}", rng.uniform(0.1, 0.2), SMALL_OUTPUT, (inputs[i % n_inputs],))
    w.wanted = [i for i in range(len(w.keys)) if i not in w.scattered]
    return w


#: (prefix, seconds, probability) of balance-random-dag's three kinds of task.
DAG_KINDS = (("fast", 0.001, 0.5), ("medium", 0.02, 0.4), ("slow", 0.2, 0.1))


@register("balance-random-dag",
          "a random DAG of three prefixes sleeping 1, 20 and 200 ms (half, 40%, 10% of the "
          "tasks), each depending on 1-3 recent tasks (10% are roots); small outputs",
          default_tasks=_real_size("balance-random-dag"))
def balance_random_dag(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("balance-random-dag", 0, workers=cluster(workers, threads))
    window = max(64, n // 10)  # dependencies come from recent tasks: real graphs are local
    names = [k[0] for k in DAG_KINDS]
    weights = [k[2] for k in DAG_KINDS]
    seconds = {k[0]: k[1] for k in DAG_KINDS}
    for i in range(n):
        prefix = rng.choices(names, weights)[0]
        if i < 4 or rng.random() < 0.1:
            deps: tuple[int, ...] = ()
        else:
            lo = max(0, i - window)
            deps = tuple(sorted(rng.sample(range(lo, i), min(rng.randint(1, 3), i - lo))))
        w.add(f"{prefix}-{i}", seconds[prefix], SMALL_OUTPUT, deps)
    w.want_sinks()
    return w
