"""The scheduler's ready queue: queued tasks, highest priority first.

A binary heap of the tasks themselves, ordered by the numeric fields
``TaskState.q_user``, ``q_generation``, ``q_order`` (the scheduler's
priority, see ``intake.set_priority``) and then ``queue_seq`` (first
queued, first out among equals). Each task knows its position
(``queue_index``), so a task that leaves the queue by another route (a
holder of its large input takes it, it is released or fails) is taken out
at once, in O(log n).

It replaced ``heapq`` over tuples ``(p0, p1, p2, seq, task)`` with stale
entries left behind. Every comparison there was a generic tuple comparison
calling a rich comparison per element, one of them on a boxed int: at
100,000 tasks a pop cost ~2,100 instructions (compiled core, callgrind,
1,000 simulated workers) and a push ~600. Here a comparison reads four
native fields of two tasks.

The order is exactly the old one (the same keys, and ``queue_seq`` is
unique), so the simulator's trace hashes did not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from teamster.core.scheduler.entities import TaskState


def before(a: TaskState, b: TaskState) -> bool:
    """Does ``a`` leave the queue before ``b``?"""
    if a.q_user != b.q_user:
        return a.q_user < b.q_user
    if a.q_generation != b.q_generation:
        return a.q_generation < b.q_generation
    if a.q_order != b.q_order:
        return a.q_order < b.q_order
    return a.queue_seq < b.queue_seq


class ReadyQueue:
    __slots__ = ("heap", "seq")

    def __init__(self) -> None:
        #: ``heap[i]`` comes out no later than ``heap[2i+1]`` and ``heap[2i+2]``;
        #: each task's ``queue_index`` is its position here.
        self.heap: list[TaskState] = []
        #: The last ``queue_seq`` given (never reused).
        self.seq = 0

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, ts: TaskState) -> None:
        """Queue ``ts``, which is not in the queue."""
        self.seq += 1
        ts.queue_seq = self.seq
        heap = self.heap
        heap.append(ts)
        self._sift_up(len(heap) - 1, ts)

    def pop(self) -> TaskState | None:
        """Take out the first task in line; None if the queue is empty."""
        heap = self.heap
        if not heap:
            return None
        first = heap[0]
        last = heap.pop()
        if heap:
            self._sift_down(0, last)
        first.queue_index = -1
        first.queue_seq = -1
        return first

    def remove(self, ts: TaskState) -> None:
        """Take ``ts`` out of the queue, wherever it is in line."""
        heap = self.heap
        i = ts.queue_index
        if i < 0:
            # (Popping the last task regardless would corrupt the heap.)
            raise ValueError(f"{ts!r} is not in the ready queue")
        last = heap.pop()
        if last is not ts:
            # The last task fills the hole; it may belong above or below it.
            if i > 0 and before(last, heap[(i - 1) >> 1]):
                self._sift_up(i, last)
            else:
                self._sift_down(i, last)
        ts.queue_index = -1
        ts.queue_seq = -1

    def first(self) -> TaskState | None:
        """The first task in line, left in the queue."""
        return self.heap[0] if self.heap else None

    def _sift_up(self, i: int, ts: TaskState) -> None:
        """Place ``ts`` at hole ``i`` or above it."""
        heap = self.heap
        while i > 0:
            parent_i = (i - 1) >> 1
            parent = heap[parent_i]
            if not before(ts, parent):
                break
            heap[i] = parent
            parent.queue_index = i
            i = parent_i
        heap[i] = ts
        ts.queue_index = i

    def _sift_down(self, i: int, ts: TaskState) -> None:
        """Place ``ts`` at hole ``i`` or below it."""
        heap = self.heap
        n = len(heap)
        while True:
            child_i = 2 * i + 1
            if child_i >= n:
                break
            child = heap[child_i]
            if child_i + 1 < n:
                right = heap[child_i + 1]
                if before(right, child):
                    child_i += 1
                    child = right
            if not before(child, ts):
                break
            heap[i] = child
            child.queue_index = i
            i = child_i
        heap[i] = ts
        ts.queue_index = i
