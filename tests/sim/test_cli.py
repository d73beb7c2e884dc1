"""`teamster simulate`: the contract scripts depend on."""

from __future__ import annotations

import json

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
