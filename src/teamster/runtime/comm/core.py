"""The one comm interface every transport implements, and scheme dispatch.

Everything above this layer talks to a ``Comm`` (send/recv whole messages) and
a ``Listener``; nothing else touches sockets. A transport implements only
``send_frames``/``recv_frames`` plus lifecycle; message encoding, decoding and
error mapping happen here, once, so TCP and in-process comms behave the same.

Addresses are "scheme://location": "tcp://host:port", "tls://host:port" or
"inproc://name". Every transport runs the same handshake (token
challenge-response included, see handshake.py) before the handler or the
connector sees the comm, with the credentials of the ``Security`` passed to
``connect``/``listen``.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from teamster.runtime.comm.serialize import dumps_message, loads_message
from teamster.security import Security

logger = logging.getLogger("teamster.runtime.comm")

#: A received message before decoding: frame 0 is the msgpack header.
Frames = list[Any]
Handler = Callable[["Comm"], Awaitable[None]]

#: scheme -> module implementing ``connect`` and ``listen`` for it. Imported
#: lazily so the transports may import this module.
_BACKENDS = {
    "tcp": "teamster.runtime.comm.tcp",
    "tls": "teamster.runtime.comm.tls",
    "inproc": "teamster.runtime.comm.inproc",
}


class CommClosedError(IOError):
    """The connection is closed, or was closed because of an error on it."""


class ProtocolError(CommClosedError):
    """The peer sent bytes that are not a valid message; the comm was closed."""


class HandshakeError(ProtocolError):
    """The peer's handshake was malformed or incompatible; the comm was closed."""


class ConnectTimeoutError(TimeoutError):
    """Could not connect (and complete the handshake) within the timeout.

    A ``TimeoutError``, hence an ``OSError``.
    """


def parse_address(address: str) -> tuple[str, str]:
    """Split "scheme://location" into (scheme, location)."""
    scheme, sep, location = address.partition("://")
    if not sep or scheme not in _BACKENDS:
        raise ValueError(
            f"Invalid comm address {address!r}: expected one of "
            + ", ".join(f"'{s}://...'" for s in _BACKENDS)
        )
    return scheme, location


def check_scheme(address: str, security: Security) -> str:
    """The scheme of ``address``; a clear error if ``security`` does not fit it."""
    scheme, _ = parse_address(address)
    if scheme == "tls" and not security.tls:
        raise ValueError(
            f"{address} is a TLS address, but no TLS certificates were given: pass "
            "security=teamster.Security(tls_ca=..., tls_cert=..., tls_key=...) "
            "(CLI: --tls-ca, --tls-cert, --tls-key)")
    if scheme == "tcp" and security.tls:
        raise ValueError(
            f"{address} is a plain-TCP address, but this process is configured for TLS "
            f"({security!r}) and will not talk unencrypted: use the tls:// address")
    return scheme


async def connect(address: str, *, handshake: dict[str, Any], timeout: float = 10.0,
                  security: Security | None = None, **kwargs: Any) -> Comm:
    """Connect to ``address`` and run the handshake; see the transport's ``connect``.

    Raises ``teamster.errors.AuthenticationError`` at once if the peer refuses
    our token (or cannot prove it knows it).
    """
    security = security or Security()
    scheme = check_scheme(address, security)
    backend = importlib.import_module(_BACKENDS[scheme])
    comm: Comm = await backend.connect(address, handshake=handshake, timeout=timeout,
                                       security=security, **kwargs)
    return comm


async def listen(address: str, handler: Handler, *, handshake: dict[str, Any],
                 security: Security | None = None, **kwargs: Any) -> Listener:
    """Listen on ``address``; ``handler(comm)`` runs per connection after the handshake
    (which, with a token in ``security``, authenticated the peer)."""
    security = security or Security()
    scheme = check_scheme(address, security)
    backend = importlib.import_module(_BACKENDS[scheme])
    listener: Listener = await backend.listen(address, handler, handshake=handshake,
                                              security=security, **kwargs)
    return listener


class Comm(abc.ABC):
    """A message-oriented, ordered, bidirectional connection.

    ``send``/``recv`` move whole messages (anything ``dumps_message`` accepts).
    At most one ``recv`` may be pending at a time; concurrent ``send``s are
    safe and each message is written atomically.
    """

    #: The peer's handshake dict (set by ``exchange_handshake``).
    handshake: dict[str, Any]
    #: "scheme://..." of the other end.
    peer_address: str
    #: "scheme://..." of this end.
    local_address: str

    def __init__(self) -> None:
        self.handshake = {}
        self._inbox = FrameInbox(self._on_inbox_drained)

    async def send(self, msg: object) -> None:
        """Encode and write one message; waits only if the peer is not reading."""
        await self.send_frames(dumps_message(msg))

    async def recv(self) -> object:
        """Return the next message; ``CommClosedError`` once the peer is gone.

        Malformed messages close the comm and raise ``ProtocolError``. Messages
        that arrived before the peer closed are still delivered first.
        """
        frames = await self.recv_frames()
        try:
            return loads_message(frames)
        except Exception as e:
            self.abort()
            raise ProtocolError(f"Malformed message from {self.peer_address}: {e!r}") from e

    async def recv_frames(self) -> Frames:
        """The next raw message (list of frames); used by the handshake."""
        return await self._inbox.get()

    @abc.abstractmethod
    async def send_frames(self, frames: Frames) -> None:
        """Write one raw message atomically (raises ``CommClosedError`` if closed)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what was sent, then close. Idempotent."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close now, dropping unsent data. Idempotent, never raises."""

    @abc.abstractmethod
    def closed(self) -> bool:
        """True once closed by either side (queued messages may still be recv'd)."""

    def handshake_complete(self) -> None:  # noqa: B027 - optional hook
        """Called by ``exchange_handshake`` once the peer is accepted: lift the
        small pre-handshake size limits. Transports without limits ignore it."""

    def expect_handshake_message(self) -> None:  # noqa: B027 - optional hook
        """Called by ``exchange_handshake`` before reading a further handshake
        message: parse exactly one more, still under the pre-handshake limits."""

    def _on_inbox_drained(self) -> None:  # noqa: B027 - optional hook
        """Called when the inbox shrank below its low-water mark (flow control)."""

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<{type(self).__name__} {self.local_address} -> {self.peer_address} {state}>"


class FrameInbox:
    """Received raw messages waiting for ``recv``, with one waiter and
    high-water marks so a transport can stop reading when the consumer lags."""

    #: Queued messages, or bytes, at which the transport should pause reading;
    #: it resumes once both are back under half.
    HIGH_WATER = 1024
    HIGH_WATER_BYTES = 64 * 1024 * 1024

    def __init__(self, on_drained: Callable[[], None]) -> None:
        #: Raw messages received and not yet recv'd, oldest first, with their sizes.
        self.queue: collections.deque[tuple[Frames, int]] = collections.deque()
        #: Sum of the sizes in ``queue``.
        self.nbytes = 0
        #: Why the stream ended; raised by ``get`` once ``queue`` is empty.
        self.error: CommClosedError | None = None
        #: The pending ``get``'s future, if any.
        self._waiter: asyncio.Future[None] | None = None
        self._on_drained = on_drained
        #: True after ``full()`` returned True until the queue drains to half.
        self._throttled = False

    def put(self, frames: Frames) -> None:
        size = sum(map(len, frames)) if len(frames) > 1 else len(frames[0])
        self.queue.append((frames, size))
        self.nbytes += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def full(self) -> bool:
        if len(self.queue) >= self.HIGH_WATER or self.nbytes >= self.HIGH_WATER_BYTES:
            self._throttled = True
        return self._throttled

    def close(self, error: CommClosedError) -> None:
        if self.error is None:
            self.error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def discard(self) -> None:
        """Drop undelivered messages (local abort: nobody wants them)."""
        self.queue.clear()
        self.nbytes = 0

    async def get(self) -> Frames:
        while not self.queue:
            if self.error is not None:
                raise self.error
            if self._waiter is not None:
                raise RuntimeError("recv() called while another recv() is pending on this comm")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames, size = self.queue.popleft()
        self.nbytes -= size
        if (self._throttled and len(self.queue) <= self.HIGH_WATER // 2
                and self.nbytes <= self.HIGH_WATER_BYTES // 2):
            self._throttled = False
            self._on_drained()
        return frames


class Listener(abc.ABC):
    """Accepts connections; runs the handler per connection after the handshake.

    The connection lives as long as its handler runs: when the handler returns
    or raises, the comm is closed (an exception is logged, never propagated).
    """

    #: Address peers can connect to, "scheme://...".
    address: str

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop accepting connections; established ones continue."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting, cancel running handlers, and close their comms."""

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"


class RejectionLog:
    """One WARNING line per rejected connection, but at most ``burst`` per
    ``window`` seconds: a flood of bad connections must not flood the log
    (nor the disk); the ones not shown are counted in the next line."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        self._window_start = -window
        self._shown = 0
        self._suppressed = 0

    def reject(self, peer: str, why: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window:
            if self._suppressed:
                logger.warning("%d more connections were rejected in the last %.0fs "
                               "(not logged one by one)", self._suppressed, self.window)
            self._window_start, self._shown, self._suppressed = now, 0, 0
        if self._shown < self.burst:
            self._shown += 1
            logger.warning("Rejected connection from %s: %s", peer, why)
        else:
            self._suppressed += 1


class HandlerRunner:
    """Per-connection tasks of a listener: handshake, handler, close, logging.

    Shared by all transports so a failing handler or a bad peer is handled the
    same way everywhere: that one connection is closed and the event logged.
    The handshake (authentication included) must finish within
    ``handshake_timeout`` and at most ``MAX_PENDING`` connections may be in it
    at once, so silent or slow peers cannot pile up sockets and memory.
    """

    #: Connections allowed in their handshake at once; more are closed at once.
    MAX_PENDING = 1024

    def __init__(self, handler: Handler, handshake: dict[str, Any], handshake_timeout: float,
                 security: Security | None = None):
        self._handler = handler
        self._handshake = handshake
        self._handshake_timeout = handshake_timeout
        self._token = (security or Security()).token_bytes
        #: Connections being served: their comm -> the task serving it.
        self.tasks: dict[Comm, asyncio.Task[None]] = {}
        #: Other tasks of this listener (TLS handshakes before a comm exists).
        self.side_tasks: set[asyncio.Task[Any]] = set()
        #: Connections not yet through their handshake (TLS or ours).
        self.pending = 0
        self.rejections = RejectionLog()

    def admit(self) -> bool:
        """Whether one more unauthenticated connection may start its handshake."""
        return self.pending < self.MAX_PENDING

    def start(self, comm: Comm) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(comm))
        self.tasks[comm] = task
        task.add_done_callback(lambda _t: self.tasks.pop(comm, None))

    def start_side_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    async def _serve(self, comm: Comm) -> None:
        from teamster.runtime.comm.handshake import exchange_handshake

        if not self.admit():
            self.rejections.reject(comm.peer_address,
                                   f"more than {self.MAX_PENDING} connections are in their "
                                   "handshake")
            comm.abort()
            return
        self.pending += 1
        try:
            await asyncio.wait_for(
                exchange_handshake(comm, self._handshake, token=self._token, initiator=False),
                self._handshake_timeout)
        except Exception as e:  # bad peer, timeout, garbage: drop this connection only
            if isinstance(e, TimeoutError):
                e = TimeoutError(f"no valid handshake within {self._handshake_timeout}s")
            self.rejections.reject(comm.peer_address, e)
            comm.abort()
            return
        finally:
            self.pending -= 1
        try:
            await self._handler(comm)
        except CommClosedError as e:
            logger.info("Connection from %s closed: %s", comm.peer_address, e)
        except Exception:
            logger.exception("Handler for connection from %s failed; closing it",
                             comm.peer_address)
        finally:
            try:
                await comm.close()
            except Exception:
                comm.abort()

    async def close(self) -> None:
        for task in list(self.side_tasks):
            task.cancel()
        for comm, task in list(self.tasks.items()):
            task.cancel()
            comm.abort()
        if self.tasks or self.side_tasks:
            await asyncio.gather(*self.tasks.values(), *self.side_tasks, return_exceptions=True)
