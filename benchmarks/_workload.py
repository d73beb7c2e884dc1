"""The throughput workloads, run identically against teamster and dask.distributed.

This file is run as a child process by ``benchmarks/throughput.py``: with
teamster's venv python for ``--api teamster`` and with a separate venv's python
for ``--api distributed``, so that ``distributed`` is never imported into
teamster's environment. The only difference between the two sides is the
import line (and two dask-only LocalCluster options that keep its dashboard
and logs out of the way).

One invocation = one cluster = one measurement of each workload:

1. start ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` and
   ``Client(cluster)`` (not timed);
2. warm up: a few tasks through submit, map and gather (not timed);
3. ``map``: ``client.gather(client.map(inc, data))`` over N distinct inputs;
4. ``graph``: N tasks submitted one by one with ``client.submit``, half of
   them leaves ``inc(i)`` and half ``add(x[i], x[i-1])``, each consuming two
   leaf futures, then gathered.

tasks/s = N / wall time from the first submit to gather's return. Results are
checked against the expected values after the clock stops.

The last line of stdout is a JSON object; everything else is informational.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def _import_api(api: str):
    if api == "teamster":
        from teamster import Client, LocalCluster, wait

        extra: dict = {}
    elif api == "distributed":
        from distributed import Client, LocalCluster, wait

        # No dashboard (needs bokeh, binds a port) and no INFO logging.
        extra = {"dashboard_address": None, "silence_logs": logging.ERROR}
    else:
        raise SystemExit(f"unknown --api {api!r}")
    return Client, LocalCluster, wait, extra


def run_map(client, n: int, offset: int) -> float:
    data = range(offset, offset + n)
    start = time.perf_counter()
    futures = client.map(inc, data)
    results = client.gather(futures)
    elapsed = time.perf_counter() - start
    if results != [x + 1 for x in data]:
        raise AssertionError("map workload returned wrong results")
    del futures, results
    return elapsed


def run_graph(client, n: int, offset: int) -> float:
    leaves = n // 2
    inners = n - leaves
    start = time.perf_counter()
    xs = [client.submit(inc, offset + i) for i in range(leaves)]
    # Each inner task depends on two leaves (i and i-1, wrapping at 0), so
    # every inner task waits for results computed by other tasks, often on the
    # other worker.
    ys = [client.submit(add, xs[i % leaves], xs[(i - 1) % leaves]) for i in range(inners)]
    results = client.gather(ys)
    elapsed = time.perf_counter() - start
    expected = [(offset + i % leaves + 1) + (offset + (i - 1) % leaves + 1) for i in range(inners)]
    if results != expected:
        raise AssertionError("graph workload returned wrong results")
    del xs, ys, results
    return elapsed


WORKLOADS = {"map": run_map, "graph": run_graph}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=["teamster", "distributed"], required=True)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workloads", default="map,graph")
    parser.add_argument(
        "--run-id", type=int, default=0, help="makes inputs (so keys) unique per run"
    )
    args = parser.parse_args(argv)

    Client, LocalCluster, _, extra = _import_api(args.api)
    if args.api == "teamster" and "distributed" in sys.modules:
        raise SystemExit("teamster imported distributed")

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **extra)
    client = Client(cluster)
    startup = time.perf_counter() - t0
    out: dict = {"api": args.api, "tasks": args.tasks, "startup_s": startup, "workloads": {}}
    try:
        # Warm-up: connections, function caches, worker imports. Inputs are
        # negative so no warm-up key matches a measured one.
        warm = client.map(inc, range(-20, 0))
        client.gather(warm)
        w = client.submit(inc, -100)
        client.submit(add, w, w).result()
        del warm, w

        # Inputs of each workload (so their pure keys) are distinct from every
        # other workload's and run's.
        base = 1_000_000_000 * (args.run_id + 1)
        for i, name in enumerate(w for w in args.workloads.split(",") if w):
            elapsed = WORKLOADS[name](client, args.tasks, base + i * 10 * args.tasks)
            out["workloads"][name] = {"seconds": elapsed, "tasks_per_s": args.tasks / elapsed}
    finally:
        client.close()
        cluster.close()

    mod = sys.modules.get(args.api)
    out["version"] = getattr(mod, "__version__", None)
    out["python"] = platform.python_version()
    out["pid"] = os.getpid()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    # Re-import this file under its module name so that inc/add pickle by
    # reference as ``_workload.inc`` (workers import it via PYTHONPATH), the
    # way a user's library functions travel, rather than by value from __main__.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _workload

    sys.exit(_workload.main())
