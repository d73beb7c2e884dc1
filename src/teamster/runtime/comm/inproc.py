"""In-process comms ("inproc://name") with the same interface as TCP, for tests.

Messages still go through ``dumps_message``/``loads_message`` and every
frame is copied, so a test over inproc catches unserialisable messages and
shared-mutable-buffer bugs exactly as TCP would; only the socket is missing.
Both ends must live on the same event loop. There is no backpressure: a
sender never waits for the receiver.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from teamster.runtime.comm.core import (
    Comm,
    CommClosedError,
    ConnectTimeoutError,
    Frames,
    Handler,
    HandlerRunner,
    Listener,
    ProtocolError,
    parse_address,
)
from teamster.runtime.comm.frames import DEFAULT_MAX_MESSAGE_SIZE, normalize_frames
from teamster.runtime.comm.handshake import exchange_handshake
from teamster.security import Security

__all__ = ["InProcComm", "InProcListener", "connect", "listen", "comm_pair"]

#: Listening name -> listener, for this process.
_LISTENERS: dict[str, InProcListener] = {}
_ids = itertools.count(1)


class InProcComm(Comm):
    """One end of an in-process connection; see ``comm_pair``."""

    def __init__(self, local_address: str, peer_address: str, *,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__()
        self.local_address = local_address
        self.peer_address = peer_address
        self._max_message_size = max_message_size
        #: The other end; None until paired.
        self._peer: InProcComm | None = None
        self._closed = False

    async def send_frames(self, frames: Frames) -> None:
        peer = self._peer
        if self._closed or peer is None or peer._closed:
            raise CommClosedError(f"Cannot send on closed comm to {self.peer_address}")
        frames, _, total = normalize_frames(frames)
        if total > self._max_message_size:
            raise ProtocolError(f"message of {total} bytes exceeds the limit of "
                                f"{self._max_message_size} bytes")
        # Copy like a socket would: the receiver must not share (or be able to
        # mutate) the sender's memory, and gets writable buffers as from TCP.
        peer._inbox.put([bytes(f) if i == 0 else bytearray(f) for i, f in enumerate(frames)])

    async def close(self) -> None:
        self._shutdown(f"Comm to {self.peer_address} was closed locally")

    def abort(self) -> None:
        self._shutdown(f"Comm to {self.peer_address} was aborted locally")
        self._inbox.discard()

    def _shutdown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.close(CommClosedError(reason))
        peer = self._peer
        if peer is not None and not peer._closed:
            # The peer may still recv what we sent before closing, like TCP.
            peer._closed = True
            peer._inbox.close(CommClosedError(f"Connection to {peer.peer_address} closed by peer"))

    def closed(self) -> bool:
        return self._closed


def comm_pair(a_address: str = "inproc://a", b_address: str = "inproc://b",
              ) -> tuple[InProcComm, InProcComm]:
    """Two connected comms (no handshake exchanged yet)."""
    a = InProcComm(a_address, b_address)
    b = InProcComm(b_address, a_address)
    a._peer, b._peer = b, a
    return a, b


class InProcListener(Listener):
    def __init__(self, name: str, runner: HandlerRunner, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.address = f"inproc://{name}"
        self.runner = runner
        self.loop = loop

    def stop(self) -> None:
        if _LISTENERS.get(self.name) is self:
            del _LISTENERS[self.name]

    async def close(self) -> None:
        self.stop()
        await self.runner.close()


async def listen(address: str, handler: Handler, *, handshake: dict[str, Any],
                 handshake_timeout: float = 10.0, security: Security | None = None,
                 **_ignored: Any) -> InProcListener:
    """Listen on "inproc://name"; "inproc://" picks a unique name."""
    _, name = parse_address(address)
    name = name or f"listener-{next(_ids)}"
    if name in _LISTENERS:
        raise OSError(f"inproc address {address!r} is already in use")
    listener = InProcListener(name, HandlerRunner(handler, handshake, handshake_timeout, security),
                              asyncio.get_running_loop())
    _LISTENERS[name] = listener
    return listener


async def connect(address: str, *, handshake: dict[str, Any], timeout: float = 10.0,
                  security: Security | None = None, **_ignored: Any) -> InProcComm:
    """Connect to an inproc listener, waiting up to ``timeout`` for it to appear."""
    _, name = parse_address(address)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.001
    while (listener := _LISTENERS.get(name)) is None:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ConnectTimeoutError(
                f"Timed out after {timeout}s trying to connect to {address}: "
                "nothing listens there in this process. Is a teamster scheduler running there?"
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.1)
    if listener.loop is not loop:
        raise OSError(f"inproc listener {address!r} runs on another event loop")
    ours, theirs = comm_pair(f"inproc://{name}/client-{next(_ids)}", listener.address)
    listener.runner.start(theirs)
    try:
        token = (security or Security()).token_bytes
        await asyncio.wait_for(exchange_handshake(ours, handshake, token=token, initiator=True),
                               max(deadline - loop.time(), 0.001))
    except TimeoutError:
        ours.abort()
        raise ConnectTimeoutError(
            f"Timed out after {timeout}s trying to connect to {address}: "
            "the listener did not complete the handshake"
        ) from None
    return ours
