"""The transition log: the last ``maxlen`` transitions, oldest first, as stories."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamster.core.story import StoryEntry
from teamster.core.transition_log import _CHUNK, _FIRST_ROOM, TransitionLog


@given(st.sampled_from([1, 2, 7, _FIRST_ROOM + 1, 3 * _FIRST_ROOM, _CHUNK - 1, _CHUNK + 3]),
       st.lists(st.integers(0, 3), max_size=3 * _CHUNK))
def test_the_log_keeps_the_last_entries_in_order(maxlen: int, keys: list[int]) -> None:
    log = TransitionLog(maxlen)
    entries = [StoryEntry(k, f"s{n}", f"f{n}", f"sid{n}") for n, k in enumerate(keys)]
    for e in entries:
        log.append(*e)
    kept = entries[-maxlen:] if entries else []
    assert len(log) == len(kept)
    for k in range(4):
        assert log.story(k) == [e for e in kept if e.key == k]
    assert log.story(0, 1, 2, 3) == kept


def test_a_story_names_its_fields() -> None:
    log = TransitionLog(3)
    log.append(("x", 0), "released", "waiting", "graph-1")
    (entry,) = log.story(("x", 0))
    assert (entry.key, entry.start, entry.finish, entry.stimulus_id) == (
        ("x", 0), "released", "waiting", "graph-1")


def test_a_log_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one entry, not 0"):
        TransitionLog(0)


def test_a_log_takes_memory_as_it_fills_not_for_its_maxlen() -> None:
    """A simulation has a log per simulated worker: 1,000 logs made full
    size were 32 MB before any of them held an entry."""
    log = TransitionLog(100_000)
    log.append("x", "released", "waiting", "s")
    small = sum(sys.getsizeof(c) for c in log.chunks)
    assert small < 4 * 8 * _FIRST_ROOM + 100
    for n in range(2 * _CHUNK):
        log.append(n, "a", "b", "s")
    assert sum(sys.getsizeof(c) for c in log.chunks) > 2 * 4 * 8 * _CHUNK
    assert [e.key for e in log.story(0, 2 * _CHUNK - 1)] == [0, 2 * _CHUNK - 1]
