"""One run of one placement workload, identically against teamster and dask.distributed.

This file is run as a child process by ``benchmarks/balance.py``: with
teamster's venv python for ``--api teamster`` and with a separate venv's
python for ``--api distributed``, so that ``distributed`` is never imported
into teamster's environment. The only difference between the two sides is
the import line (and two dask-only LocalCluster options that keep its
dashboard and logs out of the way).

The graph comes as a *plan* (a JSON file written by ``balance.py`` from
``teamster.sim.balance_workloads``): every key with its planned sleep, its
dependencies, and which worker holds each input. One invocation:

1. start ``LocalCluster(n_workers=<workers present at t=0>, threads_per_worker,
   processes=True)`` and ``Client(cluster)``; warm up with a small map
   (not timed);
2. create the inputs on their planned holders (a task restricted to that
   worker; not timed);
3. start the clock, submit the graph (``client.map`` with explicit keys when
   every task needs at most one input and nothing else, else one
   ``client.get`` of the whole graph: one graph update either way), and stop
   it when the last wanted result is on the client;
4. for a growing cluster: ``cluster.scale(total)`` from a thread at the
   planned join time, while another thread polls ``client.nthreads()`` and
   records when each new worker *registered* as the client sees it (what the
   lower bound must count, not when scale was called);
5. check every result against the plan.

The last line of stdout is a JSON object; everything else is informational.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from typing import Any

# (Run as a script from benchmarks/, like _workload.py: the same API switch.)
from _workload import _import_api

#: Results are numbers mod this prime (small outputs, and wrong ones show).
MODULUS = 1_000_003


def weight(value: Any) -> int:
    """What a dependency contributes to its dependent's result: an int, or its size."""
    if isinstance(value, int):
        return value
    nbytes = getattr(value, "nbytes", None)
    return int(nbytes) if nbytes is not None else len(value)


def result_of(i: int, dep_weights: list[int]) -> int:
    return (31 * i + sum(dep_weights)) % MODULUS


def sleep_task(duration: float, i: int, *deps: Any) -> int:
    """The planned work: sleep (8 workers share two cores), read the inputs, return little."""
    time.sleep(duration)
    return result_of(i, [weight(d) for d in deps])


def make_input(nbytes: int, j: int) -> Any:
    """An input of ``nbytes`` bytes: a numpy array when large, else bytes."""
    if nbytes >= 1_000_000 and nbytes % 8 == 0:
        import numpy as np

        return np.full(nbytes // 8, float(j))
    return bytes(nbytes)


def inc(x: int) -> int:
    return x + 1


# ------------------------------------------------------------------ counters


def _dask_steals(client) -> int | None:
    """Steal requests dask's work-stealing extension has sent so far (None if unavailable)."""
    try:
        return int(client.run_on_scheduler(
            lambda dask_scheduler: sum(
                dask_scheduler.extensions["stealing"].metrics["request_count_total"].values())))
    except Exception:
        return None


def _dask_bytes_sent(client) -> int | None:
    """Bytes all dask workers have sent to peers so far (None if unavailable)."""
    try:
        per_worker = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
        return int(sum(per_worker.values()))
    except Exception:
        return None


def counters(api: str, client) -> dict[str, Any]:
    """Steals and bytes moved so far, where the API offers them cheaply."""
    if api == "distributed":
        return {"steals": _dask_steals(client), "bytes_moved": _dask_bytes_sent(client)}
    report = getattr(client, "balance_report", None)  # teamster's, once the policy has it
    if report is None:
        return {}
    try:
        got = dict(report())
    except Exception as exc:
        return {"balance_report_error": f"{type(exc).__name__}: {exc}"}
    return {"balance_report": got, "steals": got.get("steals"),
            "bytes_moved": got.get("bytes_moved")}


# ------------------------------------------------------------------ growing


class Grower:
    """Scale the cluster at a planned time and record when each new worker registered."""

    def __init__(self, cluster, client, total: int, at: float, start: float) -> None:
        self.cluster, self.client, self.total, self.at, self.start = (
            cluster, client, total, at, start)
        self.known = set(client.nthreads())
        self.joins: list[float] = []
        self.scale_called: float | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self._threads = [threading.Thread(target=self._scale, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]

    def begin(self) -> None:
        for t in self._threads:
            t.start()

    def _scale(self) -> None:
        delay = self.start + self.at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # a timer, not synchronisation: scale at the planned moment
        self.scale_called = time.perf_counter() - self.start
        try:
            self.cluster.scale(self.total)
        except Exception as exc:
            self.error = f"scale failed: {type(exc).__name__}: {exc}"

    def _watch(self) -> None:
        deadline = time.perf_counter() + 300
        while len(self.known) < self.total and time.perf_counter() < deadline:
            try:
                now_known = set(self.client.nthreads())
            except Exception as exc:
                self.error = f"polling workers failed: {type(exc).__name__}: {exc}"
                break
            seen = time.perf_counter() - self.start
            for _ in now_known - self.known:
                self.joins.append(seen)
            self.known |= now_known
            time.sleep(0.01)  # polling period: a registration is seen within ~10 ms + one RPC
        self.done.set()


# ------------------------------------------------------------------ one run


def run(api: str, plan: dict[str, Any]) -> dict[str, Any]:
    Client, LocalCluster, wait, extra = _import_api(api)
    if api == "teamster" and "distributed" in sys.modules:
        raise SystemExit("teamster imported distributed")
    keys: list[str] = plan["keys"]
    durations: list[float] = plan["durations"]
    nbytes: list[int] = plan["nbytes"]
    deps: list[list[int]] = plan["deps"]
    scattered = {int(i): h for i, h in plan["scattered"].items()}
    wanted: list[int] = plan["wanted"]
    joins_planned = [w["join"] for w in plan["workers"]]
    threads = plan["workers"][0]["nthreads"]
    initial = sum(1 for t in joins_planned if t == 0.0)
    total = len(joins_planned)

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=initial, threads_per_worker=threads, processes=True,
                           **extra)
    client = Client(cluster)
    out: dict[str, Any] = {"api": api, "workload": plan["name"], "seed": plan["seed"],
                           "startup_s": time.perf_counter() - t0}
    try:
        deadline = time.perf_counter() + 60
        while len(client.nthreads()) < initial:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {len(client.nthreads())} of {initial} workers came up")
            time.sleep(0.05)
        # Warm-up: connections, function caches, worker imports (the sleep
        # task too). Keys no measured task uses.
        client.gather(client.map(inc, range(4 * initial), key=[f"warm-{i}" for i in range(4 * initial)]))
        client.gather(client.map(sleep_task, [0.0] * initial, range(initial),
                                 key=[f"warmsleep-{i}" for i in range(initial)]))
        addresses = sorted(client.nthreads())

        # Inputs on their planned holders, before the clock.
        futures: dict[int, Any] = {}
        for i, holders in scattered.items():
            futures[i] = client.submit(make_input, nbytes[i], i, key=keys[i],
                                       workers=[addresses[h] for h in holders],
                                       allow_other_workers=False)
        if futures:
            wait(list(futures.values()))
            who_has = client.who_has(list(futures.values()))
            for i, holders in scattered.items():
                if set(who_has[keys[i]]) != {addresses[h] for h in holders}:
                    raise RuntimeError(f"input {keys[i]} is on {who_has[keys[i]]}, "
                                       f"not on its planned holders {holders}")
        before = counters(api, client)

        tasks = [i for i in range(len(keys)) if i not in scattered]
        map_mode = all(len(deps[i]) <= 1 and all(d in scattered for d in deps[i]) for i in tasks)
        ndeps = {len(deps[i]) for i in tasks}
        map_mode = map_mode and len(ndeps) == 1 and set(wanted) == set(tasks)
        grower = None

        start = time.perf_counter()
        if initial < total:
            grower = Grower(cluster, client, total, min(t for t in joins_planned if t > 0),
                            start)
            grower.begin()
        if map_mode:
            iterables = [[durations[i] for i in tasks], tasks]
            if ndeps == {1}:
                iterables.append([futures[deps[i][0]] for i in tasks])
            results_futures = client.map(sleep_task, *iterables, key=[keys[i] for i in tasks])
            values = client.gather(results_futures)
            got = dict(zip(tasks, values, strict=True))
        else:
            dsk = {keys[i]: (sleep_task, durations[i], i,
                             *(futures[d] if d in scattered else keys[d] for d in deps[i]))
                   for i in tasks}
            values = client.get(dsk, [keys[i] for i in wanted])
            got = dict(zip(wanted, values, strict=True))
        makespan = time.perf_counter() - start

        if grower is not None:
            grower.done.wait(300)
            if grower.error:
                raise RuntimeError(grower.error)
            out["scale_called_s"] = grower.scale_called
            out["joins_s"] = sorted(grower.joins)
        after = counters(api, client)

        # Correctness, after the clock stopped.
        expected: dict[int, int] = {}
        for i in range(len(keys)):
            if i in scattered:
                expected[i] = nbytes[i]
            else:
                expected[i] = result_of(i, [expected[d] for d in deps[i]])
        wrong = [keys[i] for i, v in got.items() if v != expected[i]]
        if wrong or set(got) != set(wanted):
            raise AssertionError(f"{len(wrong)} wrong results (first {wrong[:3]}), "
                                 f"{len(set(wanted) - set(got))} missing")
        out["makespan_s"] = makespan
        out["tasks"] = len(tasks)
        out["mode"] = "map" if map_mode else "get"
        for name in ("steals", "bytes_moved"):
            b, a = before.get(name), after.get(name)
            out[name] = None if a is None or b is None else a - b
        if "balance_report" in after:
            out["balance_report"] = after["balance_report"]
    finally:
        client.close()
        cluster.close()

    mod = sys.modules.get(api)
    out["version"] = getattr(mod, "__version__", None)
    out["python"] = platform.python_version()
    out["pid"] = os.getpid()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=["teamster", "distributed"], required=True)
    parser.add_argument("--plan", required=True, help="the plan (JSON) balance.py wrote")
    args = parser.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    print(json.dumps(run(args.api, plan)))
    return 0


if __name__ == "__main__":
    # Re-import this file under its module name so that the task functions
    # pickle by reference as ``_balance_workload.sleep_task`` (workers import
    # it via PYTHONPATH), the way a library's functions travel.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _balance_workload

    sys.exit(_balance_workload.main())
