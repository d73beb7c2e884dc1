"""The scheduler core compiled with mypyc makes exactly the decisions of its source.

The benchmarks quote CPU per task for both builds (``--compiled``), and a
production install may compile the core (``TEAMSTER_COMPILE=1``, setup.py):
that is only sound if compiling changes nothing but speed. Each workload
runs twice through the ``teamster simulate`` CLI in child processes, once on
the sources and once with the compiled modules first on ``PYTHONPATH``; the
trace hash covers every event delivered to every core, in order, so equal
hashes mean the same instructions at the same virtual times. Validation is
on in both (after every event at these sizes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compiled_core  # noqa: E402

pytestmark = pytest.mark.slow

#: Placement and stealing (random DAG), transfers and replication (large
#: inputs), workers joining mid-run, a tree reduction by the data.
CASES = [
    ("balance-random-dag", 40, 2000),
    ("balance-large-inputs", 16, 256),
    ("balance-growing", 40, 1500),
    ("tree-reduce", 16, 600),
]


def simulate(workload: str, workers: int, tasks: int, env: dict[str, str] | None
             ) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "teamster.cli", "simulate", "--workload", workload,
           "--workers", str(workers), "--tasks", str(tasks), "--seed", "3", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def compiled_env() -> dict[str, str]:
    why_not = compiled_core.available()
    if why_not:
        pytest.skip(why_not)
    env = compiled_core.child_env(True)
    assert env is not None
    probe = subprocess.run(
        [sys.executable, "-c",
         "import teamster.core.scheduler.state as s, teamster.core.keys as k; "
         "print(s.__file__); print(k.__file__)"],
        capture_output=True, text=True, env=env, check=True)
    # The child really imports the C extensions, not the sources.
    assert all(line.endswith(".so") for line in probe.stdout.split()), probe.stdout
    return env


@pytest.mark.parametrize(("workload", "workers", "tasks"), CASES)
def test_compiled_core_makes_the_same_decisions(compiled_env: dict[str, str], workload: str,
                                                workers: int, tasks: int) -> None:
    source = simulate(workload, workers, tasks, None)
    compiled = simulate(workload, workers, tasks, compiled_env)
    assert source["trace_hash"] is not None
    for field in ("trace_hash", "makespan", "steals", "bytes_moved", "executions", "events"):
        assert compiled[field] == source[field], field


#: Core modules that stay Python (see pyproject.toml): records mypyc cannot
#: compile, and package markers.
PYTHON_ONLY = {"__init__.py", "events.py", "instructions.py"}


@pytest.mark.parametrize("package", ["scheduler", "worker"])
def test_every_state_machine_module_is_compiled(package: str) -> None:
    """A module left off the list runs interpreted inside the compiled core,
    every call into it crossing from C to Python, and nothing says so: the
    benchmarks' compiled figures would quietly include it as Python."""
    listed = set(compiled_core.compiled_modules())
    source = Path(compiled_core.SOURCE) / "teamster" / "core" / package
    missing = [p.name for p in sorted(source.glob("*.py"))
               if p.name not in PYTHON_ONLY
               and f"teamster/core/{package}/{p.name}" not in listed]
    assert missing == [], f"add to [tool.teamster] compiled-core in pyproject.toml: {missing}"


def run_compiled(code: str, env: dict[str, str]) -> None:
    """Run ``code`` on the compiled build; it must pass and print a module's path there."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(".so"), proc.stdout


def test_native_messages_are_values_when_compiled(compiled_env: dict[str, str]) -> None:
    """Compiled, a native class would pickle by building itself without
    arguments, and a float field would turn an int into a float: the
    messages must still round-trip and compare (tests/core covers the source)."""
    code = (
        "import pickle, teamster.core.messages as m, teamster.core.native_messages as n\n"
        "t = m.TaskFinished('tcp://w:1', ('x', 0), 8, 'int', 1, 2.5, 3, ((('a',), 8),), 's')\n"
        "assert pickle.loads(pickle.dumps(t)) == t and hash(pickle.loads(pickle.dumps(t))) == hash(t)\n"
        "assert t.duration == 1 and t == m.TaskFinished(*t.values())\n"
        "assert repr(m.FreeKeys(('x',), 's')) == \"FreeKeys(keys=('x',), stimulus_id='s', run_id=-1)\"\n"
        "assert m.MESSAGE_TYPES[m.ComputeTask.tag] is m.ComputeTask\n"
        "print(n.__file__)\n"
    )
    run_compiled(code, compiled_env)


def test_the_transition_log_and_ready_queue_work_when_compiled(
        compiled_env: dict[str, str]) -> None:
    """Their index arithmetic is compiled C (tests/core covers the source):
    the log must keep the last entries in order across chunks and wrap-around,
    and the queue must pop in priority order after removals."""
    code = (
        "import random\n"
        "import teamster.core.transition_log as t\n"
        "from teamster.core.scheduler.entities import TaskPrefix, TaskState\n"
        "from teamster.core.scheduler.intake import set_priority\n"
        "from teamster.core.scheduler.ready_queue import ReadyQueue\n"
        "rng = random.Random(0)\n"
        "for maxlen in (1, 7, t._CHUNK - 1, t._CHUNK + 3):\n"
        "    log, entries = t.TransitionLog(maxlen), []\n"
        "    for n in range(2 * t._CHUNK + 5):\n"
        "        e = (rng.randrange(3), 'a', 'b', str(n))\n"
        "        entries.append(e)\n"
        "        log.append(*e)\n"
        "    assert [tuple(e) for e in log.story(0, 1, 2)] == entries[-maxlen:], maxlen\n"
        "q, p = ReadyQueue(), TaskPrefix('t')\n"
        "tasks = [TaskState(('t', i), p, None) for i in range(300)]\n"
        "for ts in tasks:\n"
        "    set_priority(ts, (rng.randrange(3), rng.randrange(50)), 1)\n"
        "    q.push(ts)\n"
        "for ts in tasks[::3]:\n"
        "    q.remove(ts)\n"
        "left = [ts for i, ts in enumerate(tasks) if i % 3]\n"
        "left.sort(key=lambda ts: (ts.q_user, ts.q_order, ts.queue_seq))\n"
        "out = []\n"
        "while (ts := q.pop()) is not None:\n"
        "    out.append(ts)\n"
        "assert out == left\n"
        "print(t.__file__)\n"
    )
    run_compiled(code, compiled_env)


def test_compiled_task_and_worker_records_start_on_cache_lines(
        compiled_env: dict[str, str]) -> None:
    """``TaskState``'s and ``WorkerInfo``'s field orders group what each access
    reads into whole cache lines (entities.py says which): that holds only
    while a compiled record with the collector's 16-byte header, rounded up
    to pymalloc's 16-byte size classes, is a multiple of 64 bytes: every
    block then starts 48 bytes into a line (a pool's header is 48 bytes),
    every record on one. Two bools placed side by side, or a field added,
    silently break it."""
    code = (
        "from teamster.core.scheduler import entities as e\n"
        "p = e.TaskPrefix('t')\n"
        "made = {e.TaskState: lambda i: e.TaskState(('t', i), p, None),\n"
        "        e.WorkerInfo: lambda i: e.WorkerInfo(f'w{i}', 'n', 1, 0, {}, 0.0)}\n"
        "for cls, make in made.items():\n"
        "    size = (cls.__basicsize__ + 16 + 15) // 16 * 16\n"
        "    assert size % 64 == 0, f'a {cls.__name__} takes {size} bytes, not a multiple of 64'\n"
        "    records = [make(i) for i in range(500)]\n"
        "    off = sorted({id(r) % 64 for r in records})\n"
        "    assert off == [0], f'{cls.__name__} records start at offsets {off} within a line'\n"
        "print(e.__file__)\n"
    )
    run_compiled(code, compiled_env)
