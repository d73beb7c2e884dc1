"""Batch many small messages into one write on a long-lived comm.

At 10,000+ tasks/s, one write (and one recv wakeup, one header decode) per
message would dominate the scheduler's CPU. ``BatchedSend.send`` only appends
to a buffer; a background task writes everything buffered as ONE message (a
list of messages), at most once per ``interval``. The first message after an
idle period goes out at once, so batching adds latency only under load, when
it is repaid in throughput. The receiver sees each batch as a tuple of
messages from ``comm.recv()``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from teamster.runtime.comm.core import Comm, CommClosedError

logger = logging.getLogger("teamster.runtime.comm")

__all__ = ["BatchedSend"]


class BatchedSend:
    """Non-blocking, order-preserving, batching sender over one ``Comm``.

    Must be used from the event loop thread.
    """

    def __init__(self, interval: float = 0.002) -> None:
        #: Minimum seconds between two writes.
        self.interval = interval
        #: Messages accepted by ``send`` and not yet written, oldest first.
        self._buffer: list[Any] = []
        self._comm: Comm | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set while the flusher sleeps with nothing to send; ``send`` resolves it.
        self._idle_waiter: asyncio.Future[None] | None = None
        #: Resolved to cut a throttle wait short (``close`` wants to flush now).
        self._throttle_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._closed = False
        #: Counters for tests and metrics: messages and batches written.
        self.messages_sent = 0
        self.batches_sent = 0
        self.messages_dropped = 0
        #: Messages accepted by ``send``; ``written`` waits for ``messages_sent``
        #: to reach what it was when called.
        self._accepted = 0
        self._write_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def start(self, comm: Comm) -> None:
        """Begin flushing to ``comm`` (messages sent before this are kept)."""
        if self._task is not None:
            raise RuntimeError("BatchedSend already started")
        self._comm = comm
        self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    def send(self, *msgs: Any) -> None:
        """Queue messages; never blocks. Dropped (and logged) once closed."""
        if self._closed or self._closing or (self._comm is not None and self._comm.closed()):
            self._drop(len(msgs))
            return
        self._buffer.extend(msgs)
        self._accepted += len(msgs)
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def written(self) -> None:
        """Return once every message sent so far has been written to the comm,
        or once the stream has ended (then they never will be)."""
        if self._closed or self.messages_sent >= self._accepted:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._write_waiters.append((self._accepted, waiter))
        await waiter

    def _release_writers(self, upto: int | None) -> None:
        """Resolve ``written`` waiters whose messages are out (all if ``upto`` is None)."""
        keep = []
        for target, waiter in self._write_waiters:
            if upto is None or target <= upto:
                _resolve(waiter)
            else:
                keep.append((target, waiter))
        self._write_waiters = keep

    def closed(self) -> bool:
        return self._closed or (self._comm is not None and self._comm.closed())

    async def close(self) -> None:
        """Flush everything buffered, then close the comm."""
        if self._closed:
            return
        self._closing = True
        for waiter in (self._idle_waiter, self._throttle_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._task is not None:
            await self._task
        elif self._buffer:
            self._drop(0)  # never started: nowhere to flush to
        self._closed = True
        if self._comm is not None:
            await self._comm.close()

    def abort(self) -> None:
        """Drop buffered messages and abort the comm now."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._release_writers(None)
        if self._buffer:
            self._drop(0)
        if self._comm is not None:
            self._comm.abort()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        comm = self._comm
        assert comm is not None
        next_write = 0.0
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._idle_waiter = loop.create_future()
                try:
                    await self._idle_waiter
                finally:
                    self._idle_waiter = None
                continue
            delay = next_write - loop.time()
            if delay > 0 and not self._closing:
                # Rate limit: let more messages join this batch.
                self._throttle_waiter = waiter = loop.create_future()
                handle = loop.call_later(delay, _resolve, waiter)
                try:
                    await waiter
                finally:
                    handle.cancel()
                    self._throttle_waiter = None
            batch, self._buffer = self._buffer, []
            next_write = loop.time() + self.interval
            try:
                await comm.send(batch)
            except CommClosedError as e:
                logger.info("BatchedSend to %s stopped: %s", comm.peer_address, e)
                self._closed = True
                self._drop(len(batch))
                return
            except Exception:
                # An unencodable message (a bug). Silently losing part of a
                # stream would turn into a hang on the other side; aborting
                # turns it into a lost connection, which both sides handle.
                logger.exception("BatchedSend to %s could not send a batch of %d messages; "
                                 "aborting the comm", comm.peer_address, len(batch))
                self._closed = True
                self._drop(len(batch))
                comm.abort()
                return
            self.messages_sent += len(batch)
            self.batches_sent += 1
            if self._write_waiters:
                self._release_writers(self.messages_sent)

    def _drop(self, extra: int) -> None:
        n = extra + len(self._buffer)
        self._buffer = []
        self._release_writers(None)
        first = self.messages_dropped == 0
        self.messages_dropped += n
        peer = self._comm.peer_address if self._comm is not None else "<not started>"
        # Senders keep calling send() until they notice; log the first drop loudly.
        logger.log(logging.INFO if first else logging.DEBUG,
                   "BatchedSend to %s is closed; dropped %d message(s)", peer, n)

    def __repr__(self) -> str:
        peer = self._comm.peer_address if self._comm is not None else "<not started>"
        return f"<BatchedSend to {peer}: {len(self._buffer)} buffered>"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
