"""Chaos: a 5,000-task graph computed while workers are SIGKILLed about once a second.

Each run builds a seeded random DAG (layers of tasks, each depending on 1-3
random tasks of the layer before, plus chunked sums of every layer and a
total of totals), submits it through the futures API on a LocalCluster of
worker processes, and meanwhile a killer thread SIGKILLs a random worker
every 0.5-1.5 s and starts a replacement. Every held result must equal the
same graph computed locally, and each run must finish within its deadline;
if one does not, the failure shows the scheduler's story of the stuck keys.

Run alone (the summary line goes to the terminal)::

    .venv/bin/python -m pytest -q -s tests/e2e/test_chaos.py
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from teamster import Client, LocalCluster, wait

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HERE = Path(__file__).resolve().parent

N_RUNS = 20
N_WORKERS = 4
LAYERS = 8
WIDTH = 600
CHUNK = 30
MOD = 1_000_003
#: Seconds each task sleeps: long enough that a run lasts several kills, short
#: enough that 20 runs fit in about six minutes on two cores.
TASK_SECONDS = 0.003
#: Kills per run (drawn per seed).
MIN_KILLS, MAX_KILLS = 5, 8
#: A run that has not finished by then is stuck (normally 5-15 s).
RUN_DEADLINE = 60.0

SUMMARY = {"runs": 0, "kills": 0, "tasks": 0, "seconds": 0.0}


# --------------------------------------------------------------------- the graph


def mix(j, inputs):
    return (j * 7919 + sum(inputs)) % MOD


def combine(j, inputs):
    time.sleep(TASK_SECONDS)
    return mix(j, inputs)


def chunk_sum(*xs):
    return sum(xs) % MOD


def build_plan(seed):
    """The DAG as plain data: for each layer, each task's dependency indices."""
    rng = random.Random(seed)
    layers = [[[] for _ in range(WIDTH)]]
    for _ in range(1, LAYERS):
        layers.append([sorted(rng.sample(range(WIDTH), rng.randint(1, 3)))
                       for _ in range(WIDTH)])
    return layers


def compute_locally(plan):
    values = []
    previous: list[int] = []
    for deps_of in plan:
        layer = [mix(j, [previous[d] for d in deps]) for j, deps in enumerate(deps_of)]
        values.append(layer)
        previous = layer
    chunks = [[chunk_sum(*layer[i:i + CHUNK]) for i in range(0, WIDTH, CHUNK)]
              for layer in values]
    totals = [chunk_sum(*c) for c in chunks]
    return values[-1], chunks, totals, chunk_sum(*totals)


def submit_plan(client, plan, seed):
    """Submit layer by layer (one UpdateGraph each); hold only what is checked."""
    previous = None
    chunks, n_tasks = [], 0
    for depth, deps_of in enumerate(plan):
        args = [[previous[d] for d in deps] for deps in deps_of] if previous else \
            [[] for _ in deps_of]
        layer = client.map(combine, range(WIDTH), args,
                           key=[f"s{seed}-l{depth}-{j}" for j in range(WIDTH)])
        chunks.append([client.submit(chunk_sum, *layer[i:i + CHUNK],
                                     key=f"s{seed}-c{depth}-{i}")
                       for i in range(0, WIDTH, CHUNK)])
        n_tasks += len(layer) + len(chunks[-1])
        previous = layer
    totals = [client.submit(chunk_sum, *c, key=f"s{seed}-t{d}") for d, c in enumerate(chunks)]
    final = client.submit(chunk_sum, *totals, key=f"s{seed}-final")
    n_tasks += len(totals) + 1
    return previous, chunks, totals, final, n_tasks


# -------------------------------------------------------------------- the killer


class Killer(threading.Thread):
    """SIGKILLs a random worker every 0.5-1.5 s and starts a replacement, up to
    ``budget`` times: under endless kills a graph whose held results have deep
    lineage need never finish (each kill can cost more recomputation than a
    second of work), which is physics, not a bug."""

    def __init__(self, cluster, seed):
        super().__init__(name="chaos-killer", daemon=True)
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.budget = self.rng.randint(MIN_KILLS, MAX_KILLS)
        self.stop = threading.Event()
        self.kills = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            while self.kills < self.budget and not self.stop.wait(self.rng.uniform(0.5, 1.5)):
                victim = self.rng.choice(sorted(self.cluster.workers))
                self.cluster.kill_worker(victim)
                self.kills += 1
                self.cluster.scale(N_WORKERS)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc


def stuck_story(client, futures):
    pending = [f.key for f in futures if not f.done()][:5]
    lines = [f"tasks: {client.scheduler_info()['tasks']}", f"stuck keys: {pending}"]
    if pending:
        story = client._loop.run(client._request("story", {"keys": pending}), 30)
        lines += [f"  {entry}" for entry in story[-40:]]
    return "\n".join(lines)


# ------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def importable_tasks():
    current = os.environ.get("PYTHONPATH", "")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE)] + ([current] if current else [])))
        yield
    print(f"\nchaos summary: runs={SUMMARY['runs']} kills={SUMMARY['kills']} "
          f"tasks={SUMMARY['tasks']} (each run ~{SUMMARY['tasks'] // max(SUMMARY['runs'], 1)}"
          f") seconds={SUMMARY['seconds']:.1f}")


@pytest.mark.parametrize("seed", range(N_RUNS))
def test_graph_is_computed_exactly_while_workers_are_killed(seed, importable_tasks):
    plan = build_plan(seed)
    expected_last, expected_chunks, expected_totals, expected_final = compute_locally(plan)
    start = time.monotonic()
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1) as cluster, \
            Client(cluster, timeout=30) as client:
        killer = Killer(cluster, seed)
        last, chunks, totals, final, n_tasks = submit_plan(client, plan, seed)
        killer.start()
        held = [*last, *(f for c in chunks for f in c), *totals, final]
        try:
            wait(held, timeout=RUN_DEADLINE)
            stuck = ""
        except TimeoutError:
            stuck = stuck_story(client, held)
        finally:
            killer.stop.set()
            killer.join(30)
        assert killer.error is None, f"the killer failed: {killer.error!r}"
        assert not stuck, (f"run {seed} stuck after {RUN_DEADLINE}s and {killer.kills} "
                           f"kills:\n{stuck}")
        assert client.gather(last) == expected_last
        assert [client.gather(c) for c in chunks] == expected_chunks
        assert client.gather(totals) == expected_totals
        assert final.result() == expected_final
    elapsed = time.monotonic() - start
    SUMMARY["runs"] += 1
    SUMMARY["kills"] += killer.kills
    SUMMARY["tasks"] += n_tasks
    SUMMARY["seconds"] += elapsed
    print(f"chaos run {seed}: {n_tasks} tasks, {killer.kills} kills, {elapsed:.1f}s")
    assert killer.kills >= 3, "the run ended before the chaos did anything; slow the tasks"
