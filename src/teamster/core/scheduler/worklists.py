"""A stack for the scheduler's per-event worklists.

The scheduler collects work during an event and drains it before the event
ends: the pending recommendations, the workers that may have room, the
workers to take out of the victims index. Each fills and empties every event.

A plain list does that badly: ``list.pop()`` shrinks the list's array once it
is under half full, down to freeing it when the list empties, and the next
``append`` allocates it again. Two reallocations per list per event were 4% of
the scheduler's instructions per task (compiled, counted by callgrind). This
stack keeps its array and moves a top index instead, clearing each slot it
pops so that nothing it held (a forgotten task, a removed worker) is kept
alive by it.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

from teamster.core.scheduler.entities import TaskState

T = TypeVar("T")

#: An array this long is let go when the stack empties (a release of a whole
#: graph may recommend a million tasks at once; most events, a handful).
_KEEP: Final = 1024


class Stack(Generic[T]):
    __slots__ = ("items", "n")

    def __init__(self) -> None:
        #: Slots ``[0, n)`` hold the stack, bottom first; the rest are None.
        self.items: list[T | None] = []
        #: How many items the stack holds.
        self.n = 0

    def push(self, item: T) -> int:
        """Put ``item`` on top; return its index (its depth from the bottom)."""
        n = self.n
        items = self.items
        if n < len(items):
            items[n] = item
        else:
            items.append(item)
        self.n = n + 1
        return n

    def pop(self) -> T:
        """Take the top item off. The stack must not be empty."""
        n = self.n - 1
        if n < 0:
            raise IndexError("pop from an empty Stack")
        items = self.items
        item = items[n]
        items[n] = None
        self.n = n
        if not n and len(items) > _KEEP:
            self.items = []
        assert item is not None
        return item

    def __len__(self) -> int:
        return self.n


class Recommendations:
    """The scheduler's pending recommendations: (task, state to move it to),
    last in, first out, in one array of slot pairs.

    A ``Stack`` of tasks beside a ``Stack`` of states cost two calls per push
    and per pop, and each pop's bookkeeping twice (~1,800 instructions per
    task, compiled, callgrind). A task's live recommendation is the pair at
    its ``rec_index`` (a slot number); a later recommendation of the same
    task leaves the earlier pair below it, stale (``SchedulerState`` skips it).
    """

    __slots__ = ("items", "top")

    def __init__(self) -> None:
        #: Slots ``[0, top)``: task, state, task, state... bottom first; the
        #: rest are None.
        self.items: list[object] = []
        self.top = 0

    def push(self, ts: TaskState, finish: str) -> None:
        top = self.top
        items = self.items
        if top < len(items):
            items[top] = ts
            items[top + 1] = finish
        else:
            items.append(ts)
            items.append(finish)
        ts.rec_index = top
        self.top = top + 2

    def pop(self) -> tuple[TaskState, str]:
        """Take the top pair off (the caller checks ``top`` first); the task's
        recommendation is live iff its ``rec_index`` is now ``top``."""
        top = self.top - 2
        if top < 0:
            raise IndexError("pop from empty Recommendations")
        items = self.items
        ts = items[top]
        finish = items[top + 1]
        items[top] = None
        items[top + 1] = None
        self.top = top
        if not top and len(items) > _KEEP:
            self.items = []
        assert isinstance(ts, TaskState) and isinstance(finish, str)
        return ts, finish
