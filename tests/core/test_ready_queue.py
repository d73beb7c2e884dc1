"""The scheduler's ready queue: priority order, first in first out among
equals, and removal from anywhere in line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core.scheduler.entities import TaskPrefix, TaskState
from teamster.core.scheduler.intake import set_priority
from teamster.core.scheduler.ready_queue import ReadyQueue

_PREFIX = TaskPrefix("t")


def _task(i: int, user: int, generation: int, order: int) -> TaskState:
    ts = TaskState(("t", i), _PREFIX, None)
    set_priority(ts, (user, order), generation)
    return ts


def _line_of(queue: ReadyQueue) -> list[TaskState]:
    """Everything queued, by popping it."""
    out = []
    while (ts := queue.pop()) is not None:
        out.append(ts)
    return out


# An op: ("push", user priority, generation, order), ("pop",), or ("remove", which).
# (Orders up to 3 interleave pushes that follow the run with ones that go to the heap.)
_ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(-2, 2), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("pop")),
    st.tuples(st.just("remove"), st.integers(0, 1000)),
), max_size=120)


@given(_ops)
def test_the_queue_gives_what_a_sorted_list_would(ops: list[tuple]) -> None:
    """The model: the queued tasks sorted by (-user priority, generation,
    order, when queued); the queue must pop its head and remove anything."""
    queue = ReadyQueue()
    model: list[tuple[tuple[int, int, int, int], TaskState]] = []
    for n, op in enumerate(ops):
        if op[0] == "push":
            _, user, generation, order = op
            ts = _task(n, user, generation, order)
            queue.push(ts)
            model.append(((-user, generation, order, ts.queue_seq), ts))
        elif op[0] == "pop":
            model.sort(key=lambda entry: entry[0])
            expected = model.pop(0)[1] if model else None
            assert queue.pop() is expected
            if expected is not None:
                assert expected.queue_index == expected.queue_seq == -1
        elif model:
            _, ts = model.pop(op[1] % len(model))
            queue.remove(ts)
            assert ts.queue_index == ts.queue_seq == -1
        assert len(queue) == len(model)
        assert all(queue.holds(ts) for _, ts in model)
        assert queue.problem() is None
    model.sort(key=lambda entry: entry[0])
    assert _line_of(queue) == [ts for _, ts in model]


def test_equal_priorities_leave_in_the_order_they_came() -> None:
    queue = ReadyQueue()
    tasks = [_task(i, 0, 1, 7) for i in range(20)]
    for ts in tasks:
        queue.push(ts)
    assert _line_of(queue) == tasks


def test_a_task_queued_again_goes_to_the_back_of_its_equals() -> None:
    queue = ReadyQueue()
    a, b = _task(0, 0, 1, 5), _task(1, 0, 1, 5)
    queue.push(a)
    queue.push(b)
    assert queue.pop() is a
    queue.push(a)
    assert _line_of(queue) == [b, a]


def test_higher_user_priority_then_earlier_submission_then_order() -> None:
    queue = ReadyQueue()
    late = _task(0, 0, 2, 0)
    early_last = _task(1, 0, 1, 9)
    early_first = _task(2, 0, 1, 1)
    urgent = _task(3, 5, 3, 100)
    for ts in (late, early_last, early_first, urgent):
        queue.push(ts)
    assert queue.first() is urgent
    assert _line_of(queue) == [urgent, early_first, early_last, late]


def test_priorities_beyond_a_float_keep_their_order() -> None:
    """A user priority too large for a float is queued first (not an error)."""
    queue = ReadyQueue()
    normal, huge, tiny = _task(0, 1, 1, 0), _task(1, 10**400, 1, 0), _task(2, -10**400, 1, 0)
    for ts in (normal, tiny, huge):
        queue.push(ts)
    assert huge.q_user == -math.inf and tiny.q_user == math.inf
    assert _line_of(queue) == [huge, normal, tiny]


def test_removing_a_task_that_is_not_queued_is_refused_and_harms_nothing() -> None:
    queue = ReadyQueue()
    a, b = _task(0, 0, 1, 0), _task(1, 0, 1, 1)
    queue.push(a)
    with pytest.raises(ValueError, match="not in the ready queue"):
        queue.remove(b)
    assert _line_of(queue) == [a]


def test_tasks_queued_in_line_order_leave_from_the_run_and_others_merge_in() -> None:
    """Pushed in line order, tasks go to the run; one pushed ahead of the
    run's last goes to the heap, and pops take the first of the two."""
    queue = ReadyQueue()
    in_order = [_task(i, 0, 1, 2 * i) for i in range(5)]  # orders 0, 2, 4, 6, 8
    for ts in in_order:
        queue.push(ts)
    assert not queue.heap and queue.n_run == 5
    early = _task(5, 0, 1, 3)  # belongs between orders 2 and 4
    queue.push(early)
    assert queue.heap == [early] and queue.holds(early)
    queue.remove(in_order[1])  # from the middle of the run
    assert queue.first() is in_order[0]
    assert _line_of(queue) == [in_order[0], early, in_order[2], in_order[3], in_order[4]]
    assert len(queue) == 0 and queue.problem() is None


def test_a_long_run_drops_its_taken_front_without_losing_places() -> None:
    """Past 1,024 taken tasks the run's front is dropped; the tasks still
    queued keep working places (removal finds them)."""
    queue = ReadyQueue()
    tasks = [_task(i, 0, 1, i) for i in range(3000)]
    for ts in tasks:
        queue.push(ts)
    for ts in tasks[:2000]:
        assert queue.pop() is ts
    assert queue.head < 2000  # (dropped at least once)
    assert all(queue.holds(ts) for ts in tasks[2000:])
    queue.remove(tasks[2500])
    assert tasks[2500].queue_index == -1 and not queue.holds(tasks[2500])
    with pytest.raises(ValueError, match="not in the ready queue"):
        queue.remove(tasks[10])  # taken long ago
    rest = _line_of(queue)
    assert rest == tasks[2000:2500] + tasks[2501:] and queue.problem() is None
