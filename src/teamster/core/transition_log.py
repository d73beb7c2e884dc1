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


class TransitionLog:
    """The last ``maxlen`` transitions of a state machine, oldest first."""

    __slots__ = ("chunks", "maxlen", "n", "next")

    def __init__(self, maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError(f"a transition log holds at least one entry, not {maxlen}")
        self.maxlen = maxlen
        #: Entry i is at ``chunks[i // _CHUNK][4 * (i % _CHUNK):][:4]``;
        #: chunks are allocated as the log first reaches them.
        self.chunks: list[list[Any]] = []
        #: How many entries it holds.
        self.n = 0
        #: Where the next entry goes (over the oldest, once it is full).
        self.next = 0

    def append(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        i = self.next
        c = i // _CHUNK
        chunks = self.chunks
        if c == len(chunks):
            chunks.append([None] * (4 * min(_CHUNK, self.maxlen - c * _CHUNK)))
        chunk = chunks[c]
        j = 4 * (i - c * _CHUNK)
        chunk[j] = key
        chunk[j + 1] = start
        chunk[j + 2] = finish
        chunk[j + 3] = stimulus_id
        i += 1
        self.next = i if i < self.maxlen else 0
        if self.n < self.maxlen:
            self.n += 1

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
