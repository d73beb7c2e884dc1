"""The scheduler's worklist stack: a list's order, without its reallocations,
and without keeping what it popped alive."""

from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core.scheduler.worklists import _KEEP, Stack


@given(st.lists(st.one_of(st.integers(0, 1000), st.none()), max_size=200))
def test_pushes_and_pops_match_a_list(ops: list[int | None]) -> None:
    """An integer pushes it, None pops: the same items come back as from a list."""
    stack: Stack[int] = Stack()
    model: list[int] = []
    for op in ops:
        if op is None:
            if model:
                assert stack.pop() == model.pop()
        else:
            assert stack.push(op) == len(model)
            model.append(op)
        assert len(stack) == stack.n == len(model)
        assert stack.items[: stack.n] == model
        assert all(x is None for x in stack.items[stack.n:])


def test_popping_an_empty_stack_says_so() -> None:
    with pytest.raises(IndexError, match="empty Stack"):
        Stack[int]().pop()


class _Thing:
    pass


def test_a_popped_item_is_not_kept_alive_by_the_stack() -> None:
    stack: Stack[_Thing] = Stack()
    thing = _Thing()
    ref = weakref.ref(thing)
    stack.push(thing)
    stack.push(_Thing())
    stack.pop()
    assert stack.pop() is thing
    del thing
    gc.collect()
    assert ref() is None


def test_the_array_is_kept_between_uses_unless_it_grew_large() -> None:
    stack: Stack[int] = Stack()
    stack.push(1)
    items = stack.items
    stack.pop()
    stack.push(2)
    assert stack.items is items  # kept: the next event reuses it
    while stack.n:
        stack.pop()
    for i in range(_KEEP + 1):
        stack.push(i)
    while stack.n:
        stack.pop()
    assert stack.items == []  # a huge one (a whole graph released) is let go


def test_recommendations_pop_pairs_last_in_first_out_and_mark_the_live_one() -> None:
    from teamster.core.scheduler.entities import TaskPrefix, TaskState
    from teamster.core.scheduler.worklists import Recommendations

    prefix = TaskPrefix("t")
    x, y = TaskState("x", prefix, None), TaskState("y", prefix, None)
    recs = Recommendations()
    recs.push(x, "waiting")
    recs.push(y, "processing")
    recs.push(x, "released")  # replaces x's first: that pair goes stale
    popped = []
    while recs.top:
        ts, finish = recs.pop()
        popped.append((ts.key, finish, ts.rec_index == recs.top))
    assert popped == [("x", "released", True), ("y", "processing", True),
                      ("x", "waiting", False)]
    assert all(slot is None for slot in recs.items)
    with pytest.raises(IndexError, match="empty Recommendations"):
        recs.pop()
