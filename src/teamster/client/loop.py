"""The client's event loop in a background thread, and its ordered outbox.

Why one background loop: the user's API is synchronous (a drop-in for
distributed's), while the scheduler connection, gathers and callbacks are
asyncio. User threads hand work to the loop in two ways only:

- ``run(coro, timeout)``: block on a coroutine's result (one round trip,
  ~50 us; used by calls that must wait anyway: result, gather, wait, cancel).
- ``post(item)``: append to the outbox and wake the loop at most once per
  burst. ``submit`` and ``map`` never wait for the loop: a loop of 10,000
  submits costs a deque append each, plus one wake-up per drain. A wake-up
  (self-pipe write, then the loop thread taking the GIL) cost 8-25 us per
  submit when every submit caused one, more than the submit itself; so a
  post within ``BURST_WINDOW`` of the last drain is drained ``BURST_DELAY``
  later, with everything posted meanwhile. An isolated post (the user waits
  between calls) is still drained at once.

The outbox also carries future releases (queued by ``Future.__del__``), so
messages and releases reach the scheduler in the order the user caused them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from teamster.errors import ClosedClientError
from teamster.runtime.comm.loop import new_event_loop

__all__ = ["LoopThread"]

T = TypeVar("T")

#: A post this soon after the previous drain is part of a burst...
BURST_WINDOW = 0.00025
#: ...and is drained this much later, together with the rest of the burst.
BURST_DELAY = 0.0005


class LoopThread:
    """An event loop running in a daemon thread, with an outbox drained on it."""

    def __init__(self, name: str, drain: Callable[[collections.deque[Any]], None]) -> None:
        self.loop = new_event_loop()
        #: Items posted by any thread, consumed in order by ``drain`` on the loop.
        self.outbox: collections.deque[Any] = collections.deque()
        self._drain = drain
        #: True from a wake-up until the drain starts (one wake-up per burst).
        self._drain_scheduled = False
        #: ``time.monotonic()`` when the last drain started.
        self._last_drain = 0.0
        self._stopped = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(
                        asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    # -- posting -----------------------------------------------------------

    def post(self, *items: Any) -> None:
        """Queue items for the drain (any thread, never blocks)."""
        self.outbox.extend(items)
        self.wake()

    def wake(self) -> None:
        if self._drain_scheduled or self._stopped:
            return
        self._drain_scheduled = True
        busy = time.monotonic() - self._last_drain < BURST_WINDOW
        try:
            self.loop.call_soon_threadsafe(self._drain_later if busy else self._run_drain)
        except RuntimeError:  # the loop closed under us (interpreter exit, close)
            pass

    def _drain_later(self) -> None:
        self.loop.call_later(BURST_DELAY, self._run_drain)

    def _run_drain(self) -> None:
        # Reset first: items posted while draining schedule a new drain.
        self._drain_scheduled = False
        self._last_drain = time.monotonic()
        self._drain(self.outbox)

    def drain_now(self) -> None:
        """Drain on the loop thread right away (before sending something that
        must follow what is queued)."""
        self._drain(self.outbox)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._stopped:  # a stopped loop would accept the call and never run it
            raise ClosedClientError("the client's event loop is stopped")
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            raise ClosedClientError("the client's event loop is closed") from None

    # -- blocking calls ------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (user threads only).

        Raises the builtin ``TimeoutError`` after ``timeout`` seconds, having
        cancelled the coroutine.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("cannot block on the client from its own event loop thread "
                               "(e.g. inside a done callback run by the loop)")
        if self._stopped:
            coro.close()
            raise ClosedClientError("the client is closed")
        try:
            cf = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            raise ClosedClientError("the client's event loop is closed") from None
        try:
            return cf.result(timeout)
        except concurrent.futures.TimeoutError:  # the builtin TimeoutError on 3.11+
            if cf.done() and not cf.cancelled():
                raise  # the coroutine itself raised a TimeoutError (e.g. connect)
            cf.cancel()
            raise TimeoutError(f"operation did not complete within {timeout}s") from None
        except concurrent.futures.CancelledError:
            if not cf.cancelled():
                raise  # a CancelledError the coroutine raised on purpose
            raise ClosedClientError("the client closed while waiting") from None
        except BaseException:
            cf.cancel()  # KeyboardInterrupt: do not leave the coroutine running
            raise

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass
        if not self.in_loop_thread():
            self._thread.join(timeout)
