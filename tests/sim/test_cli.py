"""`teamster simulate`: the contract scripts depend on."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from teamster.cli import main
from teamster.sim import WORKLOADS

CONTRACT = {"makespan", "lower_bound", "ratio", "bytes_moved", "steals",
            "scheduler_cpu_per_task_us", "wall_s", "events"}


def test_list_names_every_workload(capsys: pytest.CaptureFixture[str]) -> None:
    main(["simulate", "--list"])
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == list(WORKLOADS)


def test_json_is_one_object_with_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    main(["simulate", "--workload", "tree-reduce", "--workers", "4", "--threads", "2",
          "--tasks", "200", "--seed", "3", "--json"])
    out = capsys.readouterr().out
    r = json.loads(out)
    assert CONTRACT <= set(r)
    assert r["workload"] == "tree-reduce" and r["seed"] == 3 and r["workers"] == 4
    assert r["ratio"] == pytest.approx(r["makespan"] / r["lower_bound"])


def test_human_report(capsys: pytest.CaptureFixture[str]) -> None:
    main(["simulate", "--workload", "independent", "--workers", "2", "--tasks", "50"])
    out = capsys.readouterr().out
    assert "ratio" in out and "us/task" in out and "after every event" in out


def test_unknown_workload_exits_with_a_message() -> None:
    with pytest.raises(SystemExit, match="unknown workload"):
        main(["simulate", "--workload", "nope", "--json"])


USER_WORKLOAD = '''
from teamster.sim import Workload, WorkerSpec, cluster


def fan_in(tasks, workers, threads, rng):
    """Leaves of skewed durations into one sink, and a worker joining late."""
    w = Workload("mine", 0, workers=cluster(workers, threads) + [WorkerSpec("late", 2, join=0.5)])
    leaves = tuple(w.add(("leaf", i), rng.expovariate(10.0), 1_000) for i in range(tasks - 1))
    w.add("sink", 0.01, 8, leaves)
    w.want_sinks()
    return w


def not_a_workload(tasks, workers, threads, rng):
    return 42


def out_of_order(tasks, workers, threads, rng):
    w = Workload("bad", 0, workers=cluster(workers, threads))
    w.add("a", 0.1, 8, (1,))
    w.add("b", 0.1, 8)
    w.wanted = [0]
    return w
'''


def test_a_users_own_workload_runs_from_its_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What-if runs of one's own graph: ``FILE.py:FUNCTION`` builds it."""
    path = tmp_path / "my_graph.py"
    path.write_text(USER_WORKLOAD)
    main(["simulate", "--workload", f"{path}:fan_in", "--workers", "3", "--tasks", "200",
          "--seed", "1", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert CONTRACT <= set(r)
    assert r["workload"] == f"{path}:fan_in" and r["tasks"] == 200 and r["workers"] == 4
    assert r["executions"] == 200 and r["ratio"] >= 1.0


def test_a_workload_from_an_importable_module() -> None:
    from teamster.sim import build_workload

    w = build_workload("teamster.sim.workloads:independent", workers=2, tasks=30)
    assert w.n_tasks == 30 and w.name == "teamster.sim.workloads:independent"


def test_a_module_in_the_directory_it_is_run_in_imports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``teamster simulate --workload my_graph:fan_in`` from my_graph.py's
    directory: the console script's sys.path does not start there."""
    from teamster.sim import build_workload

    (tmp_path / "my_graph_here.py").write_text(USER_WORKLOAD)
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    try:
        w = build_workload("my_graph_here:fan_in", workers=2, tasks=20)
    finally:
        sys.modules.pop("my_graph_here", None)  # (no module of a tmp dir outlives the test)
    assert w.n_tasks == 20 and sys.path == path_before


@pytest.mark.parametrize(("target", "message"), [
    ("missing.py:fan_in", "no file"),
    ("{path}:nothing_here", "has no function 'nothing_here'"),
    ("{path}:not_a_workload", "returned int, not a teamster.sim.Workload"),
    ("{path}:out_of_order", "depends on a later or unknown task"),
    ("no_such_module_here:build", "cannot import no_such_module_here"),
    ("{path}:", "expected MODULE:FUNCTION or FILE.py:FUNCTION"),
])
def test_a_bad_user_workload_is_refused_with_the_reason(
        tmp_path: Path, target: str, message: str) -> None:
    path = tmp_path / "my_graph.py"
    path.write_text(USER_WORKLOAD)
    with pytest.raises(SystemExit, match=re.escape(message)):
        main(["simulate", "--workload", target.format(path=path), "--json"])
