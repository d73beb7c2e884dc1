"""A task's story (``transition_log.py`` keeps the log) and the errors that carry one."""

from __future__ import annotations

from typing import Any, NamedTuple


class StoryEntry(NamedTuple):
    key: Any
    start: str
    finish: str
    stimulus_id: str


class InvalidTransition(RuntimeError):
    """A transition the table does not allow; carries the task's story."""

    def __init__(self, key: Any, start: str, finish: str, story: list[StoryEntry]) -> None:
        lines = "\n".join(f"  {e.start} -> {e.finish}  ({e.stimulus_id})" for e in story[-20:])
        super().__init__(f"Invalid transition {start!r} -> {finish!r} for {key!r}; story:\n{lines}")
        self.key = key
        self.story = story


class InvariantError(AssertionError):
    """validate() found two indices that disagree; carries the task's story."""
