"""Which holders a ComputeTask names for each input: a bounded number, and a
different one first each time, so that copies of a replicated input are
pulled from all its holders, not all from the first."""

from __future__ import annotations

from tests.core.builders import A, B, compute, graph, register_worker, scheduler, spec

from teamster.core import messages as m
from teamster.core.scheduler.placement import HOLDERS_SENT

W = tuple(f"tcp://w{i}:1" for i in range(HOLDERS_SENT + 2))


def test_a_replicated_input_is_named_from_a_rotating_first_holder() -> None:
    s = scheduler(*[register_worker(w) for w in W])
    s.handle(m.ScatteredData("c", (("x", W, 8),), "sc"))
    out = s.handle(graph("c", *[spec(f"y{i}", "x") for i in range(3)], sid="g"))
    # (Each y runs where x is, on the next free worker; HOLDERS_SENT named.)
    assert out == [
        compute(W[i], f"y{i}", (0, 1, 0), "g", who_has=(("x", W[i:i + HOLDERS_SENT], 8),))
        for i in range(3)
    ]


def test_a_single_holder_is_named_alone() -> None:
    s = scheduler(register_worker(A), register_worker(B))
    s.handle(m.ScatteredData("c", (("x", (B,), 8),), "sc"))
    out = s.handle(graph("c", spec("y", "x"), spec("z", "x"), sid="g"))
    assert out == [
        compute(B, "y", (0, 1, 0), "g", who_has=(("x", (B,), 8),)),
        compute(A, "z", (0, 1, 0), "g", who_has=(("x", (B,), 8),)),
    ]
