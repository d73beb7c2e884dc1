"""The utilisation timeline: exact binning, and busy time that adds up to
the work the run did (so a dip in it is idle threads, not bookkeeping)."""

from __future__ import annotations

import math

import pytest

from teamster.sim import Simulation, build_workload
from teamster.sim.timeline import BusyTimeline, sparkline, spread


def test_spread_splits_an_interval_over_the_bins_it_crosses() -> None:
    acc = [0.0] * 4  # bins of 1 s over [0, 4)
    spread(acc, 0.5, 2.25, 1.0)
    assert acc == [0.5, 1.0, 0.25, 0.0]
    spread(acc, 3.5, 9.0, 1.0, weight=2)  # clipped at the end, weighted
    assert acc == [0.5, 1.0, 0.25, 1.0]
    spread(acc, -1.0, 0.25, 1.0)  # clipped at 0
    assert acc == [0.75, 1.0, 0.25, 1.0]


def test_utilisation_counts_threads_only_while_their_worker_is_there() -> None:
    t = BusyTimeline()
    t.add(0.0, 2.0)  # one thread busy throughout
    t.add(1.0, 2.0)  # a second, joined at 1 s, busy from then on
    # Worker A: 1 thread from 0; worker B: 2 threads from 1 s to forever.
    assert t.utilisation([(0.0, math.inf, 1), (1.0, math.inf, 2)], 2.0, bins=2) == [
        1.0, pytest.approx(2 / 3),
    ]
    assert sparkline([0.0, 0.5, 1.0]) == " ▄█"


@pytest.mark.parametrize("name", ["balance-independent", "balance-growing",
                                  "balance-random-dag"])
def test_busy_time_in_the_timeline_adds_up_to_the_work_done(name: str) -> None:
    w = build_workload(name, workers=8, seed=3)
    r = Simulation(w).run()
    u = r["utilisation"]
    assert len(u) == 40 and all(0.0 <= x <= 1.0 for x in u)
    width = r["makespan"] / len(u)
    avail = [0.0] * len(u)
    for ws in w.workers:
        spread(avail, ws.join, math.inf if ws.leave is None else ws.leave, width, ws.nthreads)
    busy = sum(x * a for x, a in zip(u, avail, strict=True))
    assert r["reexecutions"] == 0
    assert busy == pytest.approx(r["total_work"], rel=1e-3)
