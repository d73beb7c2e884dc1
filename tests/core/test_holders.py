"""A result's holders: up to two held directly, more in a dict; either way
in the order they got it, as the dict of them kept before gave it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core.scheduler import SchedulerState
from teamster.core.scheduler.entities import TaskPrefix, TaskState, WorkerInfo
from teamster.core.scheduler.placement import HOLDERS_SENT

_PREFIX = TaskPrefix("t")


def _workers(n: int) -> list[WorkerInfo]:
    return [WorkerInfo(f"tcp://w{i}", f"w{i}", 1, 0, {}, 0.0) for i in range(n)]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=40))
def test_holders_match_a_dict_of_them(ops: list[tuple[bool, int]]) -> None:
    """(True, i) adds holder i; (False, i) removes it if held."""
    ts = TaskState("x", _PREFIX, None)
    workers = _workers(5)
    model: dict[WorkerInfo, None] = {}
    for add, i in ops:
        ws = workers[i]
        if add:
            assert ts.add_holder(ws) == (ws not in model)
            model[ws] = None
        elif ws in model:
            ts.remove_holder(ws)
            del model[ws]
        assert list(ts.who_has) == list(model)
        assert ts.n_holders() == len(model)
        assert all(ts.has_holder(w) == (w in model) for w in workers)
        # Never two ways at once: more_holders, when there, holds them all;
        # holder2 only beside a different holder.
        assert ts.more_holders is None or (
            ts.holder is None and ts.holder2 is None and ts.more_holders)
        assert ts.holder2 is None or ts.holder not in (None, ts.holder2)


def test_removing_a_worker_that_does_not_hold_it_is_an_error() -> None:
    ts = TaskState("x", _PREFIX, None)
    a, b, c = _workers(3)
    with pytest.raises(KeyError):
        ts.remove_holder(a)
    ts.add_holder(a)
    with pytest.raises(KeyError):
        ts.remove_holder(b)
    ts.add_holder(b)
    with pytest.raises(KeyError):
        ts.remove_holder(c)


def test_holders_named_to_fetch_from_rotate_and_survive_removals() -> None:
    """Down to one holder kept in ``more_holders``, and back up: each
    ComputeTask still names the holders, the first of them rotating."""
    ts = TaskState("x", _PREFIX, None)
    workers = _workers(HOLDERS_SENT + 2)
    placement = SchedulerState().placement
    assert placement.holders_to_fetch_from(ts) == ()
    ts.add_holder(workers[0])
    assert placement.holders_to_fetch_from(ts) == ("tcp://w0",)
    ts.add_holder(workers[1])  # two, kept in the fields: they rotate too
    assert placement.holders_to_fetch_from(ts) == ("tcp://w0", "tcp://w1")
    assert placement.holders_to_fetch_from(ts) == ("tcp://w1", "tcp://w0")
    assert list(ts.who_has) == workers[:2]
    for ws in workers[2:]:
        ts.add_holder(ws)
    named = [placement.holders_to_fetch_from(ts) for _ in workers]
    assert [n[0] for n in named] == [ws.address for ws in workers]
    assert all(len(n) == HOLDERS_SENT for n in named)
    for ws in workers[1:]:
        ts.remove_holder(ws)
    assert placement.holders_to_fetch_from(ts) == ("tcp://w0",)
    ts.remove_holder(workers[0])
    assert placement.holders_to_fetch_from(ts) == () and ts.who_has == ()
