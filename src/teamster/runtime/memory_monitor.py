"""A worker's memory policy: when to spill, when to pause, and the spill thread.

Thresholds are fractions of the worker's ``memory_limit`` (dask's defaults
and meanings; docs/design.md says why):

- target (0.6): values held in memory ("managed" bytes, by ``dask.sizeof``)
  beyond this go to disk, least recently used first.
- spill (0.7): when the process's RSS passes this (memory the store does not
  see: task temporaries, caches, fragmentation), values are spilled until
  RSS is back under target.
- pause (0.8): RSS above this pauses the worker (no new task or fetch) until
  it falls back below.

Disk writes run on one spill thread, never on the event loop. The monitor
itself runs on the loop every ``interval`` seconds and only reads RSS.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil

from teamster.core.messages import Key
from teamster.runtime.spill import NotPicklable, SpillStore

logger = logging.getLogger("teamster.memory")

DEFAULT_TARGET = 0.6
DEFAULT_SPILL = 0.7
DEFAULT_PAUSE = 0.8


def parse_fraction(text: str | float | None, what: str) -> float | None:
    """A threshold fraction from the command line: 0 / false / none disable it."""
    if text is None or isinstance(text, float):
        return text or None
    if text.strip().lower() in ("0", "false", "none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} must be a fraction of memory_limit such as 0.7, or 0/false "
                         f"to disable it; got {text!r}") from None


@dataclass(frozen=True)
class MemoryThresholds:
    #: Bytes the worker may use; 0 means no limit (nothing spills or pauses).
    limit: int = 0
    target: float | None = DEFAULT_TARGET
    spill: float | None = DEFAULT_SPILL
    pause: float | None = DEFAULT_PAUSE

    def __post_init__(self) -> None:
        for name in ("target", "spill", "pause"):
            value = getattr(self, name)
            if value is not None and not value:  # 0 / False: disabled, like dask's False
                object.__setattr__(self, name, None)
            elif value is not None and not 0 < value <= 1:
                raise ValueError(
                    f"memory {name} fraction must be in (0, 1] of memory_limit (or 0/None to "
                    f"disable it); got {value!r}")
        if self.limit < 0:
            raise ValueError(f"memory_limit must not be negative, got {self.limit}")

    def _bytes(self, fraction: float | None) -> float:
        if not self.limit or fraction is None:
            return math.inf
        return fraction * self.limit

    @property
    def target_bytes(self) -> float:
        return self._bytes(self.target)

    @property
    def spill_bytes(self) -> float:
        return self._bytes(self.spill)

    @property
    def pause_bytes(self) -> float:
        return self._bytes(self.pause)


class MemoryManager:
    def __init__(self, store: SpillStore, thresholds: MemoryThresholds, *,
                 on_pause_changed: Callable[[bool], None], interval: float = 0.1,
                 owner: str = "this worker") -> None:
        self.store = store
        self.thresholds = thresholds
        self.on_pause_changed = on_pause_changed
        self.interval = interval
        self.owner = owner
        self.paused = False
        self.rss = 0
        self._process = psutil.Process()
        self._spill_thread = ThreadPoolExecutor(1, thread_name_prefix="teamster-spill")
        self._pending: Future[Any] | None = None
        self._warned_unmanaged = False
        self._last_collect = -math.inf
        store.target = thresholds.target_bytes

    # ---------------------------------------------------------------- spilling

    def evict_soon(self) -> None:
        """Spill down to target on the spill thread, if over it (one round at a time)."""
        if self.store.fast_bytes > self.store.target:
            self._submit(self.store.evict)

    def _submit(self, job: Callable[[], Any]) -> None:
        if self._pending is not None and not self._pending.done():
            return  # the running round re-checks the totals when it ends
        self._pending = self._spill_thread.submit(job)

    def _spill_for_rss(self) -> None:
        """RSS over the spill threshold: spill until RSS is back under target."""
        goal = min(self.thresholds.target_bytes, self.thresholds.spill_bytes)
        rss = self._process.memory_info().rss
        while rss > goal:
            if self.store.evict_one() is None:
                self._collect()  # nothing left to spill: free what is only garbage
                break
            rss = self._process.memory_info().rss
            if rss > goal:
                # glibc keeps freed heap pages; hand them back before measuring
                # again, or every value would be spilled for memory already free.
                _malloc_trim()
                rss = self._process.memory_info().rss
        self.store.evict()  # and managed memory under target, whatever RSS says

    def _collect(self) -> None:
        """A full garbage collection and heap trim, at most once a second: an
        idle (paused) process allocates nothing, so the cyclic GC never runs
        by itself and memory held by cycles would keep it paused."""
        now = time.monotonic()
        if now - self._last_collect < 1.0:
            return
        self._last_collect = now
        gc.collect()
        _malloc_trim()

    def store_large_result(self, key: Key, value: Any, nbytes: int) -> Any:
        """Called on the task's thread: a result larger than target goes straight
        to disk, or the task errs saying why. Returns what the shell adopts."""
        if nbytes <= self.store.target:
            return value
        try:
            return self.store.write(key, value)
        except NotPicklable:
            return value  # it cannot leave memory; the monitor pauses if need be
        except OSError as exc:
            where = self.store.directory or self.store.parent_directory or "the temp dir"
            raise OSError(
                exc.errno,
                f"{self.owner} could not store the result of {key!r} ({nbytes} bytes, more "
                f"than the {self.store.target:.0f} bytes it keeps in memory) on disk: "
                f"{exc.strerror or exc} in {where}; free disk space there or raise "
                "memory_limit",
            ) from exc

    # ----------------------------------------------------------------- monitor

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check(self._process.memory_info().rss)

    def check(self, rss: int) -> None:
        self.rss = rss
        th = self.thresholds
        if rss > th.spill_bytes:
            if self.store.fast_bytes > 0:
                self._submit(self._spill_for_rss)
            else:
                self._submit(self._collect)
            if self.store.fast_bytes == 0 and not self._warned_unmanaged:
                self._warned_unmanaged = True
                logger.warning(
                    "%s uses %d MiB (limit %d MiB) while holding no data it could spill: "
                    "the memory is the tasks' own or the process's; raise memory_limit",
                    self.owner, rss // 2**20, th.limit // 2**20)
        else:
            self.evict_soon()
        pause = rss > th.pause_bytes
        if pause != self.paused:
            self.paused = pause
            logger.warning("%s %s: process memory %d MiB, pause threshold %d MiB", self.owner,
                           "pauses" if pause else "resumes", rss // 2**20,
                           th.pause_bytes // 2**20)
            self.on_pause_changed(pause)

    def metrics(self) -> tuple[tuple[str, float], ...]:
        return self.store.metrics()

    def close(self) -> None:
        self._spill_thread.shutdown(wait=True, cancel_futures=True)
        self.store.close()


_libc: Any = None


def _malloc_trim() -> None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
            if _libc and not hasattr(_libc, "malloc_trim"):
                _libc = False  # not glibc
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
