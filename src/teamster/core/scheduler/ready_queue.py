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

Tasks mostly arrive in line order: intake queues a graph's ready tasks
highest priority first. Those go into a *run*, a list in line order taken
from the front, and only a task that belongs before the last one queued
there goes into the heap; a pop takes the first of the two heads. Popping
the heap walked it from the root to a leaf, reading and moving a task at
every level: at a million tasks (half a million queued), 19 levels, most of
them cold, ~1,000 instructions and several cache misses per pop. Popping
the run reads the one task it returns. A task's ``queue_index`` is its
place in the heap (>= 0) or in the run (<= -2, counted from the run's
first task ever, so that dropping the run's taken front moves no task).
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
    __slots__ = ("heap", "seq", "run", "head", "base", "n_run",
                 "last_user", "last_generation", "last_order")

    def __init__(self) -> None:
        #: ``heap[i]`` comes out no later than ``heap[2i+1]`` and ``heap[2i+2]``;
        #: a task here has ``queue_index`` = its position.
        self.heap: list[TaskState] = []
        #: The last ``queue_seq`` given (never reused).
        self.seq = 0
        #: Tasks in line order from ``head`` on (taken or removed ones are
        #: None); a task at ``run[i]`` has ``queue_index`` = -2 - (base + i).
        self.run: list[TaskState | None] = []
        self.head = 0
        self.base = 0
        #: How many tasks the run holds.
        self.n_run = 0
        #: The priority of the last task put in the run: a later task that
        #: comes no earlier in line may follow it there.
        self.last_user = 0.0
        self.last_generation = 0
        self.last_order = 0.0

    def __len__(self) -> int:
        return len(self.heap) + self.n_run

    def push(self, ts: TaskState) -> None:
        """Queue ``ts``, which is not in the queue."""
        self.seq += 1
        ts.queue_seq = self.seq
        if not self.n_run or self._follows_run(ts):
            run = self.run
            ts.queue_index = -2 - (self.base + len(run))
            run.append(ts)
            self.n_run += 1
            self.last_user = ts.q_user
            self.last_generation = ts.q_generation
            self.last_order = ts.q_order
            return
        heap = self.heap
        heap.append(ts)
        self._sift_up(len(heap) - 1, ts)

    def _follows_run(self, ts: TaskState) -> bool:
        """Does ``ts`` come no earlier than the last task put in the run?
        (Queued later, it comes after it if their priorities are equal.)"""
        if ts.q_user != self.last_user:
            return ts.q_user > self.last_user
        if ts.q_generation != self.last_generation:
            return ts.q_generation > self.last_generation
        return ts.q_order >= self.last_order

    def pop(self) -> TaskState | None:
        """Take out the first task in line; None if the queue is empty."""
        heap = self.heap
        if self.n_run:
            first = self._run_head()
            if not heap or before(first, heap[0]):
                self.run[self.head] = None
                self.head += 1
                self._ran(first)
                return first
        elif not heap:
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
        i = ts.queue_index
        if i <= -2:
            j = -2 - i - self.base
            run = self.run
            if j < 0 or j >= len(run) or run[j] is not ts:
                raise ValueError(f"{ts!r} is not at its place in the ready queue")
            run[j] = None
            self._ran(ts)
            return
        if i < 0:
            # (Popping the last task regardless would corrupt the heap.)
            raise ValueError(f"{ts!r} is not in the ready queue")
        heap = self.heap
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
        heap = self.heap
        if self.n_run:
            first = self._run_head()
            if not heap or before(first, heap[0]):
                return first
        return heap[0] if heap else None

    def holds(self, ts: TaskState) -> bool:
        """Is ``ts`` where its ``queue_index`` says? (For validation.)"""
        i = ts.queue_index
        if i >= 0:
            return i < len(self.heap) and self.heap[i] is ts
        j = -2 - i - self.base
        return i <= -2 and self.head <= j < len(self.run) and self.run[j] is ts

    def problem(self) -> str | None:
        """What is wrong with the line's order or counts, if anything. (For validation.)"""
        heap = self.heap
        for i in range(1, len(heap)):
            parent = heap[(i - 1) >> 1]
            if not before(parent, heap[i]):
                return f"{heap[i].key!r} is in the heap below {parent.key!r}, ahead of it in line"
        previous = None
        n = 0
        for ts in self.run[self.head:]:
            if ts is not None:
                n += 1
                if previous is not None and not before(previous, ts):
                    return f"{ts.key!r} is in the run after {previous.key!r}, ahead of it in line"
                previous = ts
        if n != self.n_run:
            return f"the run holds {n} tasks, counted {self.n_run}"
        return None

    def _run_head(self) -> TaskState:
        """The run's first task (the run is not empty): past the removed ones."""
        run = self.run
        i = self.head
        ts = run[i]
        while ts is None:
            i += 1
            ts = run[i]
        self.head = i
        return ts

    def _ran(self, ts: TaskState) -> None:
        """``ts`` left the run: forget its place; drop the run's taken front."""
        ts.queue_index = -1
        ts.queue_seq = -1
        self.n_run -= 1
        run = self.run
        if not self.n_run:
            self.base += len(run)
            run.clear()
            self.head = 0
        elif self.head >= 1024 and 2 * self.head >= len(run):
            # (Amortised: each slot is moved at most once per halving.)
            head = self.head
            del run[:head]
            self.base += head
            self.head = 0

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
