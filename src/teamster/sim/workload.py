"""What a simulation runs: a task graph with known costs, and a cluster's timeline.

A ``Workload`` is plain data, built once from a seed: every key with its
duration and output size, its dependencies (by index, always earlier in the
list, so the list is a topological order), the keys the client wants, data
scattered onto workers before the graph arrives, and when each worker joins
and leaves. Because every cost is known in advance, the lower bound on the
makespan is exact arithmetic rather than an estimate:

    lower_bound = max(work bound, critical path)

- *critical path*: the longest chain of durations through the graph;
- *work bound*: the earliest time by which the cluster's threads could have
  done all the work. With every worker present from t=0 that is
  ``total work / total threads``; with workers joining or leaving it is the
  first T at which the integral of available threads over [0, T] reaches the
  total work (the same bound, honest about capacity that was not there).

The list order is the order a client would give (dask.order-like: depth
first where it matters); the simulated client submits it as the priority.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from teamster.core.messages import Key


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    nthreads: int
    #: Virtual time the worker connects, seconds.
    join: float = 0.0
    #: Virtual time it disappears (its data and running tasks are lost); None: never.
    leave: float | None = None


@dataclass(eq=False)
class Workload:
    name: str
    seed: int
    description: str = ""
    keys: list[Key] = field(default_factory=list)
    #: Seconds each task runs (0 for scattered data).
    durations: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    #: Bytes of each output (or of each scattered value).
    nbytes: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    deps: list[tuple[int, ...]] = field(default_factory=list)
    #: Key index -> indices (into ``workers``) of the workers it is scattered to.
    scattered: dict[int, tuple[int, ...]] = field(default_factory=dict)
    wanted: list[int] = field(default_factory=list)
    workers: list[WorkerSpec] = field(default_factory=list)
    _index: dict[Key, int] | None = None

    # ------------------------------------------------------------ building

    def add(self, key: Key, duration: float, nbytes: int, deps: tuple[int, ...] = ()) -> int:
        """Append a task; its dependencies must already be in the list."""
        i = len(self.keys)
        self.keys.append(key)
        self.durations.append(duration)
        self.nbytes.append(nbytes)
        self.deps.append(deps)
        return i

    def scatter(self, key: Key, nbytes: int, holders: tuple[int, ...]) -> int:
        """Data placed on ``holders`` (worker indices) by the client before the graph."""
        i = self.add(key, 0.0, nbytes)
        self.scattered[i] = holders
        return i

    def want_sinks(self) -> None:
        """The client wants every task nothing else depends on (a graph's outputs)."""
        has_dependent = bytearray(len(self.keys))
        for d in self.deps:
            for j in d:
                has_dependent[j] = 1
        self.wanted = [i for i in range(len(self.keys))
                       if not has_dependent[i] and i not in self.scattered]

    # ------------------------------------------------------------ queries

    @property
    def index(self) -> dict[Key, int]:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        return self._index

    @property
    def n_tasks(self) -> int:
        return len(self.keys) - len(self.scattered)

    def task_indices(self) -> range | list[int]:
        if not self.scattered:
            return range(len(self.keys))
        return [i for i in range(len(self.keys)) if i not in self.scattered]

    def total_work(self) -> float:
        return float(sum(self.durations))

    def critical_path(self) -> float:
        finish = array("d", bytes(8 * len(self.keys)))
        durations = self.durations
        longest = 0.0
        for i, d in enumerate(self.deps):
            start = 0.0
            for j in d:
                if finish[j] > start:
                    start = finish[j]
            f = start + durations[i]
            finish[i] = f
            if f > longest:
                longest = f
        return longest

    def work_bound(self) -> float:
        """First T at which the threads available over [0, T] could do all the work."""
        work = self.total_work()
        if work <= 0:
            return 0.0
        changes: list[tuple[float, int]] = []
        for w in self.workers:
            changes.append((w.join, w.nthreads))
            if w.leave is not None:
                changes.append((w.leave, -w.nthreads))
        changes.sort()
        done, threads, t = 0.0, 0, 0.0
        for when, delta in changes:
            if threads > 0 and done + threads * (when - t) >= work:
                return t + (work - done) / threads
            done += threads * (when - t)
            threads += delta
            t = when
        if threads <= 0:
            return float("inf")
        return t + (work - done) / threads

    def lower_bound(self) -> float:
        return max(self.work_bound(), self.critical_path())

    def validate(self) -> None:
        """Structural checks on a built workload (the library's tests run
        them; ``build_workload`` runs them on a user's): ValueError saying
        what is wrong."""
        n = len(self.keys)
        if not (len(self.durations) == len(self.nbytes) == len(self.deps) == n):
            raise ValueError("workload arrays differ in length")
        if len(self.index) != n:
            raise ValueError("duplicate keys")
        for i, d in enumerate(self.deps):
            if any(not 0 <= j < i for j in d):
                raise ValueError(f"task {self.keys[i]!r} depends on a later or unknown task")
        if any(d < 0 for d in self.durations) or any(b < 0 for b in self.nbytes):
            raise ValueError("a negative duration or size")
        if not self.workers or any(w.nthreads < 1 for w in self.workers):
            raise ValueError("no workers, or a worker without threads")
        if len({w.name for w in self.workers}) != len(self.workers):
            raise ValueError("two workers share a name")
        for i, holders in self.scattered.items():
            if self.deps[i] or not holders:
                raise ValueError(f"scattered {self.keys[i]!r} needs holders and no deps")
            for h in holders:
                if not 0 <= h < len(self.workers) or self.workers[h].join != 0.0:
                    raise ValueError("scattered data must sit on workers present at t=0")
        if not self.wanted or any(not 0 <= i < n for i in self.wanted):
            raise ValueError("the client wants nothing, or a task that is not there")
        if not any(w.join == 0.0 for w in self.workers):
            raise ValueError("no worker at t=0")

    def summary(self) -> dict[str, Any]:
        return {
            "workload": self.name,
            "tasks": self.n_tasks,
            "scattered": len(self.scattered),
            "workers": len(self.workers),
            "threads": sum(w.nthreads for w in self.workers),
            "total_work": self.total_work(),
            "critical_path": self.critical_path(),
            "lower_bound": self.lower_bound(),
        }
