"""The simulator's kernel: a heap of ``(time, seq, action, arg)`` and a loop.

Rules of this module:
- Virtual time only. Nothing here reads a clock; ``now`` advances to the time
  of the event being run, and events never run out of order.
- Ties break by ``seq``, the order events were scheduled in, so a run is a
  pure function of its inputs (ARCHITECTURE.md rule 5).
- Events are *foreground* (a message, a task finishing: progress) or
  *background* (ticks, heartbeats: they reschedule themselves forever). The
  loop stops when no foreground event is left; background events alone never
  keep a finished simulation alive, and are how a stuck one is told from a
  slow one (see ``Simulation.run``). The flag rides in the low bit of ``seq``
  so the heap entry stays a 4-tuple and ordering is unchanged.
- The trace hash covers every event handed to a core, as
  ``(time, receiving core, event type, key or worker)``: two runs with the same seed must
  produce the same hash (tests/sim/test_determinism.py).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

#: Trace lines are hashed in chunks; one update per line would cost more than the line.
_TRACE_CHUNK = 4096


class Engine:
    __slots__ = ("now", "_heap", "_seq", "n_foreground", "n_run", "_trace", "_hash",
                 "trace_enabled", "n_traced", "keep_trace", "trace_lines")

    def __init__(self, *, trace: bool = True, keep_trace: bool = False) -> None:
        #: The virtual clock, in seconds.
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        #: Foreground events scheduled and not yet run.
        self.n_foreground = 0
        #: Events run so far (foreground and background).
        self.n_run = 0
        self.trace_enabled = trace
        self.keep_trace = keep_trace
        #: Every traced event as (time, where, kind, ident), when ``keep_trace``.
        self.trace_lines: list[tuple[float, str, str, Any]] = []
        self._trace: list[str] = []
        self._hash = hashlib.blake2b(digest_size=16)
        self.n_traced = 0

    # ------------------------------------------------------------ scheduling

    def at(self, time: float, action: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``action(arg)`` at virtual ``time`` (never earlier than now)."""
        if time < self.now:
            time = self.now
        self._seq += 2
        self.n_foreground += 1
        heapq.heappush(self._heap, (time, self._seq, action, arg))

    def background(self, time: float, action: Callable[[Any], None], arg: Any = None) -> None:
        """Like ``at``, for periodic events that must not keep the loop alive."""
        if time < self.now:
            time = self.now
        self._seq += 2
        heapq.heappush(self._heap, (time, self._seq | 1, action, arg))

    def step(self) -> bool:
        """Run the next event; False if the heap is empty."""
        if not self._heap:
            return False
        time, seq, action, arg = heapq.heappop(self._heap)
        self.now = time
        if not seq & 1:
            self.n_foreground -= 1
        self.n_run += 1
        action(arg)
        return True

    def run_while_foreground(self) -> None:
        """Run events until no foreground event is pending."""
        heap = self._heap
        pop = heapq.heappop
        while self.n_foreground:
            time, seq, action, arg = pop(heap)
            self.now = time
            if not seq & 1:
                self.n_foreground -= 1
            self.n_run += 1
            action(arg)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # ----------------------------------------------------------------- trace

    def trace(self, where: str, kind: str, ident: Any) -> None:
        """Record that an event of type ``kind`` about ``ident`` reached core ``where`` now."""
        if not self.trace_enabled:
            return
        line = f"{self.now!r} {where} {kind} {ident!r}"
        self.n_traced += 1
        if self.keep_trace:
            self.trace_lines.append((self.now, where, kind, ident))
        buf = self._trace
        buf.append(line)
        if len(buf) >= _TRACE_CHUNK:
            self._flush_trace()

    def _flush_trace(self) -> None:
        if self._trace:
            self._hash.update("\n".join(self._trace).encode())
            self._hash.update(b"\n")
            self._trace.clear()

    def trace_hash(self) -> str:
        self._flush_trace()
        return self._hash.hexdigest()
