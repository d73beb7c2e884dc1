"""A bounded log of transitions, so ``story(key)`` can explain any task's state."""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple


class StoryEntry(NamedTuple):
    key: Any
    start: str
    finish: str
    stimulus_id: str


class TransitionLog:
    """The last ``maxlen`` transitions of a state machine, oldest first."""

    def __init__(self, maxlen: int = 100_000) -> None:
        # Plain tuples: every transition appends one, and building the named
        # tuple there cost ~0.2 us (its __new__ is Python code), about 4% of
        # the scheduler's CPU per task in teamster.sim. story() names them.
        self._entries: deque[tuple[Any, str, str, str]] = deque(maxlen=maxlen)
        #: Append a ready-made (key, start, finish, stimulus_id) tuple: the hot
        #: path binds this once instead of calling ``append`` per transition.
        self.append_entry = self._entries.append

    def append(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        self._entries.append((key, start, finish, stimulus_id))

    def story(self, *keys: Any) -> list[StoryEntry]:
        wanted = set(keys)
        return [StoryEntry._make(e) for e in self._entries if e[0] in wanted]

    def __len__(self) -> int:
        return len(self._entries)


class InvalidTransition(RuntimeError):
    """A transition the table does not allow; carries the task's story."""

    def __init__(self, key: Any, start: str, finish: str, story: list[StoryEntry]) -> None:
        lines = "\n".join(f"  {e.start} -> {e.finish}  ({e.stimulus_id})" for e in story[-20:])
        super().__init__(f"Invalid transition {start!r} -> {finish!r} for {key!r}; story:\n{lines}")
        self.key = key
        self.story = story


class InvariantError(AssertionError):
    """validate() found two indices that disagree; carries the task's story."""
