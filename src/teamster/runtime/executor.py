"""A thread pool that hands results back to the event loop in batches.

``loop.run_in_executor`` wakes the loop once per task; with tiny tasks that
wake-up (a self-pipe write and a callback) costs more than the task. Here
the worker threads append finished jobs to a deque and wake the loop only
when it is not already scheduled to drain it.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

Job = Callable[[], Any]
#: (token, ok, value_or_exception, start, stop) as measured on the worker thread,
#: in wall-clock seconds (time.time(): the scheduler's balance report compares
#: stops with its own clock).
Done = tuple[Any, bool, Any, float, float]


class BatchingExecutor:
    def __init__(self, nthreads: int, loop: asyncio.AbstractEventLoop,
                 on_done: Callable[[list[Done]], None], name: str = "teamster-exec") -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, Job] | None] = queue.SimpleQueue()
        self._done: collections.deque[Done] = collections.deque()
        self._loop = loop
        self._on_done = on_done
        self._wake_pending = False
        self._lock = threading.Lock()
        #: Token -> wall-clock start of the jobs running now (for heartbeats).
        self.running: dict[Any, float] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(nthreads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, token: Any, job: Job) -> None:
        self._jobs.put((token, job))

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        import time

        clock = time.time
        running = self.running
        while True:
            item = self._jobs.get()
            if item is None:
                return
            token, job = item
            start = running[token] = clock()
            try:
                value, ok = job(), True
            except BaseException as exc:  # the task's failure is data, not ours
                value, ok = exc, False
            stop = clock()
            running.pop(token, None)
            self._done.append((token, ok, value, start, stop))
            # An idle thread must not keep its last result alive: a worker
            # paused for memory waits for a released value to be freed.
            item = job = value = None
            with self._lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                return  # the loop closed: the worker is shutting down

    def _drain(self) -> None:
        with self._lock:
            self._wake_pending = False
        batch: list[Done] = []
        done = self._done
        while done:
            batch.append(done.popleft())
        if batch:
            self._on_done(batch)
