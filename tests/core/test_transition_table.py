"""The scheduler looks transitions up by start state, then finish state
(``BY_START``); the table a reader checks is ``TRANSITIONS``. They must agree."""

from __future__ import annotations

from teamster.core.scheduler import transitions as tr
from teamster.core.scheduler.entities import TASK_STATES


def test_the_lookup_table_holds_exactly_the_transitions_table() -> None:
    pairs = {(start, finish): func for start, row in tr.BY_START.items()
             for finish, func in row.items()}
    assert pairs == tr.TRANSITIONS
    assert set(tr.BY_START) <= set(TASK_STATES)
