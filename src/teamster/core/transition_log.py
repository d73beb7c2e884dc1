"""A bounded log of transitions, so ``story(key)`` can explain any task's state.

Every transition of every task is logged, four or five per task, so this is
on the hot path of both state machines. It is compiled with the core and
writes its entries into a ring of preallocated chunks, each entry four
consecutive slots (key, start, finish, stimulus id).

It replaced a ``deque`` of tuples. Each entry then allocated a tuple and
appended it through a Python-level call, and ``maxlen`` entries later the
deque freed it, cold: the tuple's line and its memory pool's header were two
cache misses per entry beside those of the key and stimulus id it let go of.
A first ring of four columns grown by ``append`` was worse while filling:
growing a list of 100,000 copies it again and again.
"""

from __future__ import annotations

from typing import Any, Final

from teamster.core.story import StoryEntry

#: Entries per chunk (a chunk is 4 x this many slots, 128 KiB).
_CHUNK: Final = 4096
#: Entries the first chunk has room for when it is made: it doubles as it
#: fills, up to ``_CHUNK``. Made full size, each state machine's log wrote up
#: to 128 KiB at once: 1,000 simulated workers' logs took 32 MB of RSS before
#: holding an entry (peak 254 -> 222 MB on ``million``, 100,000 tasks).
#: Later chunks are made full size: a log that filled one is a busy one, and
#: growing each chunk copied it five times (5 more cache misses per task
#: for the scheduler's log, by callgrind at 1,000 simulated workers).
_FIRST_ROOM: Final = 64


class TransitionLog:
    """The last ``maxlen`` transitions of a state machine, oldest first."""

    __slots__ = ("chunks", "maxlen", "n", "next", "chunk", "slot")

    def __init__(self, maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError(f"a transition log holds at least one entry, not {maxlen}")
        self.maxlen = maxlen
        #: Entry i is at ``chunks[i // _CHUNK][4 * (i % _CHUNK):][:4]``;
        #: chunks are allocated as the log first reaches them (the first
        #: grown in place as it fills).
        self.chunks: list[list[Any]] = [self._new_chunk(0)]
        #: How many entries it holds.
        self.n = 0
        #: Where the next entry goes (over the oldest, once it is full): entry
        #: ``next``, at ``slot`` in ``chunk``. (Kept both ways so that an
        #: append does no index arithmetic: each operation on a Python int is
        #: a function call in compiled code.)
        self.next = 0
        self.chunk = self.chunks[0]
        self.slot = 0

    def _new_chunk(self, c: int) -> list[Any]:
        room = self._chunk_entries(c)
        return [None] * (4 * (min(_FIRST_ROOM, room) if c == 0 else room))

    def _chunk_entries(self, c: int) -> int:
        """How many entries chunk ``c`` holds once full (the last may hold fewer)."""
        return min(_CHUNK, self.maxlen - c * _CHUNK)

    def append(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        chunk = self.chunk
        j = self.slot
        chunk[j] = key
        chunk[j + 1] = start
        chunk[j + 2] = finish
        chunk[j + 3] = stimulus_id
        j += 4
        if j < len(chunk):
            self.slot = j
            self.next += 1
        else:
            self._next_chunk()
        if self.n < self.maxlen:
            self.n += 1

    def _next_chunk(self) -> None:
        """The current chunk is full: grow it, or move to the next (back to
        the first at the end)."""
        chunk = self.chunk
        room = len(chunk)
        full = 4 * self._chunk_entries(self.next // _CHUNK)
        if room < full:
            # Doubled in place, so entry positions stay as they were.
            chunk.extend([None] * min(room, full - room))
            self.slot = room
            self.next += 1
            return
        nxt = self.next + 1
        if nxt == self.maxlen:
            nxt = 0
        c = nxt // _CHUNK
        if c == len(self.chunks):
            self.chunks.append(self._new_chunk(c))
        self.next = nxt
        self.chunk = self.chunks[c]
        self.slot = 0

    def _entry(self, i: int) -> StoryEntry:
        chunk = self.chunks[i // _CHUNK]
        j = 4 * (i % _CHUNK)
        return StoryEntry(chunk[j], chunk[j + 1], chunk[j + 2], chunk[j + 3])

    def story(self, *keys: Any) -> list[StoryEntry]:
        wanted = set(keys)
        first = self.next if self.n == self.maxlen else 0
        out: list[StoryEntry] = []
        for k in range(self.n):
            i = first + k
            if i >= self.maxlen:
                i -= self.maxlen
            if self.chunks[i // _CHUNK][4 * (i % _CHUNK)] in wanted:
                out.append(self._entry(i))
        return out

    def __len__(self) -> int:
        return self.n
