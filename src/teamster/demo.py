"""`teamster demo`: a real mixed workload on a LocalCluster, and how well it was placed.

The workload is a two-level graph with skewed durations: many leaf tasks
whose sleep times follow a heavy-tailed (lognormal) law, a few stragglers
ten times longer, partial reductions that each read a group of leaves, and a
final reduction. Sleep-based tasks make the lower bound exact: it is
max(total work / total threads, critical path), both known in advance.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass


def leaf(i: int, seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return {"i": i, "work": seconds}


def combine(parts: list[dict[str, float]], seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return {"i": -1, "work": seconds + sum(p["work"] for p in parts)}


@dataclass
class Plan:
    leaves: list[float]
    groups: list[list[int]]
    group_durations: list[float]
    final_duration: float

    @property
    def total_work(self) -> float:
        return sum(self.leaves) + sum(self.group_durations) + self.final_duration

    @property
    def critical_path(self) -> float:
        longest = max(
            max(self.leaves[i] for i in g) + d for g, d in zip(self.groups, self.group_durations, strict=True)
        )
        return longest + self.final_duration

    @property
    def n_tasks(self) -> int:
        return len(self.leaves) + len(self.groups) + 1


def make_plan(n_tasks: int, seed: int, mean: float = 0.01) -> Plan:
    rng = random.Random(seed)
    group_size = 16
    n_leaves = max(group_size, n_tasks - n_tasks // (group_size + 1) - 1)
    sigma = 1.0
    mu = math.log(mean) - sigma**2 / 2  # lognormal with the requested mean
    leaves = [rng.lognormvariate(mu, sigma) for _ in range(n_leaves)]
    for i in rng.sample(range(n_leaves), max(1, n_leaves // 200)):
        leaves[i] = 10 * mean * (1 + rng.random())  # stragglers
    order = list(range(n_leaves))
    groups = [order[i:i + group_size] for i in range(0, n_leaves, group_size)]
    group_durations = [rng.uniform(0.5, 1.5) * mean for _ in groups]
    return Plan(leaves, groups, group_durations, 2 * mean)


def main(n_workers: int = 4, threads: int = 1, n_tasks: int = 2000, seed: int = 0) -> None:
    from teamster import Client, LocalCluster
    from teamster.client.balance import format_report

    plan = make_plan(n_tasks, seed)
    print(f"teamster demo: {plan.n_tasks} tasks (lognormal leaves, stragglers, reductions) "
          f"on {n_workers} workers x {threads} thread(s)")
    t_start = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads) as cluster, \
            Client(cluster) as client:
        startup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        leaves = [client.submit(leaf, i, d, pure=False) for i, d in enumerate(plan.leaves)]
        partials = [
            client.submit(combine, [leaves[i] for i in g], d, pure=False)
            for g, d in zip(plan.groups, plan.group_durations, strict=True)
        ]
        final = client.submit(combine, partials, plan.final_duration, pure=False)
        result = final.result()
        makespan = time.perf_counter() - t0
        report = client.balance_report()
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    if abs(result["work"] - plan.total_work) > 1e-6 * plan.total_work:
        raise SystemExit(f"wrong result: {result['work']} != {plan.total_work}")
    total_threads = n_workers * threads
    lower = max(plan.total_work / total_threads, plan.critical_path)
    print(f"cluster startup      {startup:8.2f} s")
    print(f"tasks                {plan.n_tasks:8d}")
    print(f"total work           {plan.total_work:8.2f} s   critical path {plan.critical_path:.2f} s")
    print(f"lower bound          {lower:8.2f} s   (max(work / {total_threads} threads, "
          "critical path))")
    print(f"makespan             {makespan:8.2f} s")
    print(f"makespan / bound     {makespan / lower:8.2f}")
    print("\nthe scheduler's balance report (durations measured on the workers):")
    print(format_report(report, names))
