"""The idle workers' ring: the rotation order placement relies on, and its checks.

``IdleRing`` replaced an OrderedDict (append at the back, remove anywhere,
take from the front and move to the back). Placement's candidates, and so
every decision, depend on that order: the property test drives both with
the same operations and compares them after each.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teamster.core.scheduler.entities import IdleRing, WorkerInfo
from teamster.core.story import InvariantError

from .builders import A, B, C, register_worker, scheduler

#: ("add" | "remove", worker index) or ("rotate", k).
OPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "rotate"]),
                         st.integers(min_value=0, max_value=5)), max_size=60)


def worker(i: int) -> WorkerInfo:
    return WorkerInfo(f"tcp://w{i}:1", f"w{i}", 1, 2**30, {}, 0.0)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_the_ring_keeps_the_order_of_an_ordered_dict(ops: list[tuple[str, int]]) -> None:
    workers = [worker(i) for i in range(6)]
    ring, model = IdleRing(), OrderedDict[WorkerInfo, None]()
    for op, arg in ops:
        if op == "rotate":
            taken = []
            for _ in range(min(arg, len(model))):
                ws = next(iter(model))
                model.move_to_end(ws)
                taken.append(ws)
            assert ring.rotate(arg) == taken
        elif op == "add" and workers[arg] not in model:
            model[workers[arg]] = None
            ring.add(workers[arg])
        elif op == "remove" and workers[arg] in model:
            del model[workers[arg]]
            ring.remove(workers[arg])
        assert ring.workers() == list(model)
        assert len(ring) == len(model)
        assert [ws.is_idle for ws in workers] == [ws in model for ws in workers]
    for ws in workers:
        if not ws.is_idle:
            assert ws.idle_prev is None and ws.idle_next is None


def test_validation_catches_a_worker_marked_idle_outside_the_ring() -> None:
    s = scheduler(register_worker(A), register_worker(B), register_worker(C))
    assert s.idle.workers() == [s.workers[A], s.workers[B], s.workers[C]]
    s.idle.remove(s.workers[B])
    s.workers[B].is_idle = True
    with pytest.raises(InvariantError, match=r"idle ring and is_idle disagree on \['tcp://b:1'\]"):
        s.validate()


def test_validation_catches_a_ring_whose_links_do_not_mirror() -> None:
    s = scheduler(register_worker(A), register_worker(B), register_worker(C))
    s.workers[C].idle_prev = s.workers[A]  # B's next (C) no longer links back to B
    with pytest.raises(InvariantError, match="tcp://b:1's next does not link back"):
        s.validate()
