"""A task's dependents: one held directly, more in a dict; either way the
order they were linked, as a dict of them would give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core.scheduler.entities import TaskPrefix, TaskState

_PREFIX = TaskPrefix("t")


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=40))
def test_dependents_match_a_dict_of_them(ops: list[tuple[bool, int]]) -> None:
    """(True, i) links dependent i; (False, i) unlinks it if linked."""
    ts = TaskState("x", _PREFIX, None)
    others = [TaskState(f"y-{i}", _PREFIX, None) for i in range(5)]
    model: dict[TaskState, None] = {}
    for add, i in ops:
        if add:
            ts.add_dependent(others[i])
            model[others[i]] = None
        elif others[i] in model:
            ts.remove_dependent(others[i])
            del model[others[i]]
        assert list(ts.dependents) == list(model)
        assert ts.has_dependents() == bool(model) == bool(ts.dependents)
        assert all(o in ts.dependents for o in model)


def test_unlinking_a_task_that_is_not_a_dependent_is_an_error() -> None:
    ts, y, z = (TaskState(k, _PREFIX, None) for k in "xyz")
    with pytest.raises(KeyError):
        ts.remove_dependent(y)
    ts.add_dependent(y)
    with pytest.raises(KeyError):
        ts.remove_dependent(z)
