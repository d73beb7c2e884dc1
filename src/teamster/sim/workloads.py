"""The workload library: seedable graphs that each stress one part of placement.

Every builder takes ``(tasks, workers, threads, rng)`` and returns a
``Workload``; ``tasks`` is a target, met to within a few tasks (graph shapes
round it). All randomness comes from the ``random.Random`` passed in, so a
name and a seed name one workload exactly. ``teamster simulate --list`` prints
this registry.

Durations are in seconds and outputs in bytes. Keys follow the shapes real
clients send: ``client.map`` style strings (``"work-17"``) and dask style
tuples (``("load-1f2e3d4c", 17)``); ``core.keys.key_prefix`` groups both by
prefix, which is what the duration estimates learn from.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from teamster.sim.workload import WorkerSpec, Workload

Builder = Callable[[int, int, int, random.Random], Workload]


@dataclass(frozen=True)
class WorkloadEntry:
    name: str
    summary: str
    build: Builder
    default_tasks: int = 10_000


#: Every workload by name, in the order ``--list`` shows them.
WORKLOADS: dict[str, WorkloadEntry] = {}

KB, MB = 1_000, 1_000_000


def register(name: str, summary: str, default_tasks: int = 10_000) -> Callable[[Builder], Builder]:
    def deco(build: Builder) -> Builder:
        WORKLOADS[name] = WorkloadEntry(name, summary, build, default_tasks)
        return build
    return deco


def build_workload(name: str, *, workers: int, threads: int = 1, tasks: int | None = None,
                   seed: int = 0) -> Workload:
    """A library workload by name, or a user's: ``module:function`` or
    ``path/to/file.py:function``, a builder like the library's (see
    ``user_builder``)."""
    entry = WORKLOADS.get(name)
    users = entry is None
    if entry is None:
        if ":" not in name:
            raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)} "
                             "(or MODULE:FUNCTION, or FILE.py:FUNCTION, for your own)")
        entry = WorkloadEntry(name, f"user workload {name}", user_builder(name))
    if workers < 1 or threads < 1:
        raise ValueError("need at least one worker and one thread")
    n = entry.default_tasks if tasks is None else tasks
    if n < 1:
        raise ValueError("need at least one task")
    w = entry.build(n, workers, threads, random.Random(seed))
    if users:
        if not isinstance(w, Workload):
            raise ValueError(f"workload {name} returned {type(w).__name__}, "
                             "not a teamster.sim.Workload")
        try:
            w.validate()
        except (ValueError, IndexError) as exc:
            raise ValueError(f"workload {name}: {exc}") from None
    w.name, w.seed = name, seed
    w.description = w.description or entry.summary
    return w


def user_builder(spec: str) -> Builder:
    """The builder ``spec`` names: ``module:function`` (importable) or
    ``path/to/file.py:function``. It is called as the library's are, with
    ``(tasks, workers, threads, rng)``, and returns a ``Workload``: what-if
    runs of one's own graph on a cluster of any size (``cluster`` below
    makes the usual one; join and leave times are the builder's to set)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise ValueError(f"workload {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"workload {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(f"_teamster_workload_{path.stem}",
                                                             path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        # From the directory it is run in too, as ``python -m`` would: the
        # ``teamster`` script's own directory is what sys.path starts with.
        here = os.getcwd()
        added = here not in sys.path
        if added:
            sys.path.insert(0, here)
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(f"workload {spec!r}: cannot import {target}: {exc}") from None
        finally:
            if added:
                sys.path.remove(here)
    build = getattr(module, attr, None)
    if not callable(build):
        raise ValueError(f"workload {spec!r}: {target} has no function {attr!r}")
    return cast(Builder, build)


# ----------------------------------------------------------------- helpers


def cluster(n: int, threads: int) -> list[WorkerSpec]:
    """``n`` workers (``w0``, ``w1``, ...) of ``threads`` threads, there from t=0 on."""
    return [WorkerSpec(f"w{i}", threads) for i in range(n)]


def lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    """A lognormal draw with the given mean (sigma is the log-space spread)."""
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def token(rng: random.Random) -> str:
    """A dask-style hex token, so tuple keys look like a real collection's."""
    return f"{rng.getrandbits(32):08x}"


def reduction_tree(w: Workload, n_leaves: int, fanin: int, leaf: Callable[[int], int],
                   node: Callable[[int, int, tuple[int, ...]], int]) -> int:
    """Build leaves and a fan-in tree over them in post-order (dask.order-like:
    each group is reduced as soon as it is complete, so few leaves are alive
    at once). ``leaf(i)`` and ``node(level, j, children)`` append and return
    an index. Returns the root's index."""
    pending: list[list[int]] = [[]]
    counts = [0]
    for i in range(n_leaves):
        pending[0].append(leaf(i))
        level = 0
        while len(pending[level]) == fanin:
            if level + 1 == len(pending):
                pending.append([])
                counts.append(0)
            pending[level + 1].append(node(level + 1, counts[level + 1], tuple(pending[level])))
            counts[level + 1] += 1
            pending[level] = []
            level += 1
    level = 0
    while True:
        higher = any(pending[level + 1:])
        if not higher and len(pending[level]) == 1:
            return pending[level][0]
        if pending[level]:
            if level + 1 == len(pending):
                pending.append([])
                counts.append(0)
            pending[level + 1].append(node(level + 1, counts[level + 1], tuple(pending[level])))
            counts[level + 1] += 1
            pending[level] = []
        level += 1


# ----------------------------------------------------------------- library


@register("independent", "independent tasks, heavy-tailed (lognormal, sigma 1.5) durations, "
                         "mean 20 ms; the client wants every result (a client.map)")
def independent(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("independent", 0, workers=cluster(workers, threads))
    for i in range(n):
        w.add(f"work-{i}", lognormal(rng, 0.02, 1.5), int(lognormal(rng, 2 * KB, 1.0)))
    w.wanted = list(range(n))
    return w


@register("misestimated", "one prefix whose first 5% of tasks take ~1 ms and the rest ~100 ms: "
                          "the first measurements mislead the estimate and the prefetch depth")
def misestimated(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("misestimated", 0, workers=cluster(workers, threads))
    n_short = max(1, n // 20)
    for i in range(n):
        mean = 0.001 if i < n_short else 0.1
        w.add(f"load-{i}", lognormal(rng, mean, 0.3), 10 * KB)
    w.wanted = list(range(n))
    return w


@register("large-inputs", "a few 256 MB inputs scattered onto a few workers; every task reads "
                          "one of them and computes ~20 ms: run by the data or move it?")
def large_inputs(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("large-inputs", 0, workers=cluster(workers, threads))
    k = min(4, workers)
    inputs = [w.scatter(f"input-{j}", 256 * MB, (j * workers // k,)) for j in range(k)]
    for i in range(n):
        w.add(f"analyse-{i}", lognormal(rng, 0.02, 0.5), 10 * KB, (inputs[i % k],))
    w.wanted = [i for i in range(len(w.keys)) if i not in w.scattered]
    return w


@register("late-join", "independent tasks (mean 50 ms, sigma 1) on a quarter of the workers; "
                       "the rest join one by one during the first half of the run")
def late_join(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    durations = [lognormal(rng, 0.05, 1.0) for _ in range(n)]
    early = max(1, workers // 4)
    # Joins spread over [10%, 60%] of what the makespan would be with everyone present.
    horizon = sum(durations) / (workers * threads)
    joins = sorted(rng.uniform(0.1, 0.6) * horizon for _ in range(workers - early))
    specs = [WorkerSpec(f"w{i}", threads) for i in range(early)]
    specs += [WorkerSpec(f"w{early + i}", threads, join=t) for i, t in enumerate(joins)]
    w = Workload("late-join", 0, workers=specs)
    for i, d in enumerate(durations):
        w.add(f"work-{i}", d, 5 * KB)
    w.wanted = list(range(n))
    return w


#: (prefix, mean duration s, output bytes, fan-in range) of random-dag's task kinds.
DAG_KINDS = (
    ("clean", 0.005, 1 * MB, (1, 1)),
    ("transform", 0.02, 512 * KB, (1, 2)),
    ("join", 0.03, 2 * MB, (2, 4)),
    ("aggregate", 0.002, 10 * KB, (2, 6)),
)


@register("random-dag", "a random DAG of five prefixes (load, clean, transform, join, aggregate) "
                        "with different durations (2-50 ms) and outputs (10 KB-4 MB)")
def random_dag(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("random-dag", 0, workers=cluster(workers, threads))
    window = max(64, n // 10)  # dependencies come from recent tasks: real graphs are local
    for i in range(n):
        if i < 4 or rng.random() < 0.15:
            w.add(f"load-{i}", lognormal(rng, 0.05, 0.7), 4 * MB)
            continue
        prefix, mean, out, (lo, hi) = DAG_KINDS[rng.randrange(len(DAG_KINDS))]
        lo_idx = max(0, i - window)
        k = min(rng.randint(lo, hi), i - lo_idx)
        deps = tuple(sorted(rng.sample(range(lo_idx, i), k)))
        w.add(f"{prefix}-{i}", lognormal(rng, mean, 0.7), out, deps)
    w.want_sinks()
    return w


@register("tree-reduce", "a fan-in 8 tree reduction over leaves with 16 MB outputs (leaves "
                         "~100 ms, reductions ~20 ms): reductions should run where the data is")
def tree_reduce(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("tree-reduce", 0, workers=cluster(workers, threads))
    fanin = 8
    n_leaves = max(1, n - n // fanin)
    tok = token(rng)

    def leaf(i: int) -> int:
        return w.add((f"leaf-{tok}", i), lognormal(rng, 0.1, 0.5), 16 * MB)

    def node(level: int, j: int, children: tuple[int, ...]) -> int:
        return w.add((f"reduce-{tok}", level, j), lognormal(rng, 0.02, 0.3), 16 * MB, children)

    w.wanted = [reduction_tree(w, n_leaves, fanin, leaf, node)]
    return w


@register("shuffle", "an all-to-all shuffle: p partitions (64 MB) each split p ways, p outputs "
                     "each combining one piece of every partition (p + p^2 + p tasks)")
def shuffle(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("shuffle", 0, workers=cluster(workers, threads))
    p = max(1, int(math.sqrt(n + 1) - 1))
    tok = token(rng)
    size = 64 * MB
    splits: list[list[int]] = []
    for i in range(p):
        part = w.add((f"partition-{tok}", i), lognormal(rng, 0.05, 0.5), size)
        splits.append([w.add((f"split-{tok}", i, j), lognormal(rng, 0.001, 0.3), size // p,
                             (part,)) for j in range(p)])
    w.wanted = [w.add((f"combine-{tok}", j), lognormal(rng, 0.03, 0.5), size,
                      tuple(splits[i][j] for i in range(p))) for j in range(p)]
    return w


@register("million", "a dask-array-like map-reduce at scale: load -> process chains and a "
                     "fan-in 16 sum tree (default 1,000,000 tasks)", default_tasks=1_000_000)
def million(n: int, workers: int, threads: int, rng: random.Random) -> Workload:
    w = Workload("million", 0, workers=cluster(workers, threads))
    fanin = 16
    n_chunks = max(1, int(n / (2 + 1 / (fanin - 1))))
    load, process, total = f"load-{token(rng)}", f"process-{token(rng)}", f"sum-{token(rng)}"
    mu_load, mu_proc, sigma = math.log(0.02) - 0.125, math.log(0.01) - 0.125, 0.5
    draw = rng.lognormvariate
    add = w.add

    def leaf(i: int) -> int:
        j = add((load, i), draw(mu_load, sigma), 1 * MB)
        return add((process, i), draw(mu_proc, sigma), 100 * KB, (j,))

    def node(level: int, j: int, children: tuple[int, ...]) -> int:
        return add((total, level, j), 0.001, 1 * KB, children)

    w.wanted = [reduction_tree(w, n_chunks, fanin, leaf, node)]
    return w


# The placement and stealing workloads (issue 5) register themselves from their own module.
from teamster.sim import balance_workloads  # noqa: E402, F401
