"""benchmarks/sim_scale.py judges growth round by round: each round's largest
cluster against its smallest, run back to back, in alternating order."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sim_scale  # noqa: E402


def test_rounds_alternate_the_order_and_growth_pairs_each_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    # CPU per task: 10 us at 10 workers and 13 at 1,000 in each round, the
    # whole machine twice as slow from the third round on.
    def fake_simulate(workload: str, workers: int, tasks: int | None, seed: int,
                      threads: int = 1, timeout: float = 0.0,
                      replay: bool = False) -> dict[str, Any]:
        calls.append(workers)
        slow = 2.0 if len(calls) > 4 else 1.0
        return {"workload": workload, "workers": workers, "tasks": tasks, "seed": seed,
                "scheduler_cpu_per_task_us": slow * (10.0 if workers == 10 else 13.0),
                "scheduler_cpu_per_task_us_isolated": None}

    monkeypatch.setattr(sim_scale, "simulate", fake_simulate)
    rows = sim_scale.scaling_table("million", 1000, [10, 1000], repeat=3, seed=0)
    assert calls == [10, 1000, 1000, 10, 10, 1000]
    assert [r["all_cpu_per_task_us"] for r in rows] == [[10.0, 10.0, 20.0], [13.0, 13.0, 26.0]]
    # The slowdown lands on both sizes of its round: every round says 1.3x.
    assert sim_scale.round_growths(rows) == pytest.approx([1.3, 1.3, 1.3])
