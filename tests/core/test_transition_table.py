"""The scheduler looks transitions up by start state, then finish state
(``BY_START``), after calling the commonest directly (``make``); the table a
reader checks is ``TRANSITIONS``. They must agree."""

from __future__ import annotations

from typing import Any

import pytest

from teamster.core.scheduler import transitions as tr
from teamster.core.scheduler.entities import TASK_STATES


def test_the_lookup_table_holds_exactly_the_transitions_table() -> None:
    pairs = {(start, finish): func for start, row in tr.BY_START.items()
             for finish, func in row.items()}
    assert pairs == tr.TRANSITIONS
    assert set(tr.BY_START) <= set(TASK_STATES)


def test_make_runs_the_tables_transition_for_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every function, by module name and in the table, replaced by a recorder:
    whether ``make`` calls one directly or through the table, it must be the
    table's (the source build; the compiled one is checked by trace hashes)."""
    called: list[str] = []

    def recorder(name: str) -> Any:
        return lambda s, ts, stimulus_id: called.append(name)

    for (start, finish), func in tr.TRANSITIONS.items():
        monkeypatch.setattr(tr, func.__name__, recorder(func.__name__))
        monkeypatch.setitem(tr.BY_START[start], finish, recorder(func.__name__))
    for (start, finish), func in tr.TRANSITIONS.items():
        called.clear()
        assert tr.make(None, None, start, finish, "s")  # type: ignore[arg-type]
        assert called == [func.__name__], (start, finish)


def test_make_refuses_a_pair_not_in_the_table() -> None:
    assert ("memory", "processing") not in tr.TRANSITIONS
    assert not tr.make(None, None, "memory", "processing", "s")  # type: ignore[arg-type]
    assert not tr.make(None, None, "no-such-state", "released", "s")  # type: ignore[arg-type]
