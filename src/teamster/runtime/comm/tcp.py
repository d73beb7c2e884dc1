"""TCP transport: an asyncio ``BufferedProtocol`` that is also the ``Comm``.

Why a protocol and not streams: streams copy every read into their own buffer
and then again into our frames; a ``BufferedProtocol`` lets ``FrameReader``
hand the event loop the exact memory to read into, so large frames land in
their final bytearray (see frames.py), and small messages cost no task switch
or extra coroutine per read.

Writes never concatenate large buffers. uvloop keeps references to the
memoryviews we write (zero copy). The stdlib loop on Python 3.11 copies
whatever the socket did not take at once into a private bytearray, so there
we write large messages in ``_WRITE_CHUNK`` pieces and wait for the buffer to
drain between them: that bounds the extra memory to about one chunk instead of
a second copy of the whole payload.

TLS ("tls://", see tls.py) is this same comm over an SSL transport: the
event loop decrypts into our buffers (``BufferedProtocol`` works over SSL).
TLS listeners accept connections themselves (``_TLSServer``) so that a failed
TLS handshake is logged with the peer's address, bounded by the handshake
timeout, and counted against the pending-handshake cap like any other.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from teamster.runtime.comm.core import (
    Comm,
    CommClosedError,
    ConnectTimeoutError,
    Frames,
    Handler,
    HandlerRunner,
    HandshakeError,
    Listener,
    ProtocolError,
    logger,
    parse_address,
)
from teamster.runtime.comm.frames import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_MESSAGE_SIZE,
    FrameReader,
    normalize_frames,
)
from teamster.runtime.comm.handshake import MAX_HANDSHAKE_SIZE, exchange_handshake
from teamster.security import Security

__all__ = ["Comm", "TCPComm", "TCPListener", "connect", "listen"]

#: Messages larger than this are written in chunks on loops that copy.
_WRITE_CHUNK = 1024 * 1024
#: How long ``close()`` waits for unsent data to drain before aborting.
_CLOSE_TIMEOUT = 5.0


def _loop_copies_writes(loop: asyncio.AbstractEventLoop) -> bool:
    return not type(loop).__module__.startswith("uvloop")


def parse_host_port(location: str, scheme: str = "tcp") -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port)."""
    host, sep, port = location.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Invalid {scheme.upper()} address {location!r}: expected "
                         f"'{scheme}://host:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def format_address(sockname: Any, scheme: str = "tcp") -> str:
    if not sockname:
        # The peer reset the connection before it was set up (a worker killed
        # mid-connect); the comm fails on first use, which callers handle.
        return f"{scheme}://<disconnected>"
    host, port = sockname[0], sockname[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


#: A peer that stops acknowledging (host gone, network partitioned) is
#: declared dead after this many seconds: probes start after KEEPALIVE_IDLE
#: seconds of silence. Without it a request to a partitioned peer waits for
#: its reply forever (the kernel's defaults give up after about two hours).
USER_TIMEOUT = 30.0
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 2
KEEPALIVE_COUNT = 5


def _detect_dead_peers(sock: socket.socket) -> None:
    options = [("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
               ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", int(USER_TIMEOUT * 1000))]
    for name, value in options:
        opt = getattr(socket, name, None)
        if opt is None:  # pragma: no cover - not Linux
            continue
        try:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)
        except OSError:  # pragma: no cover - platform specific
            pass


class TCPComm(Comm, asyncio.BufferedProtocol):
    """One TCP connection. Created by ``connect``/``listen``, not by users."""

    def __init__(self, *, max_message_size: int,
                 on_connected: Callable[[TCPComm], None] | None = None,
                 scheme: str = "tcp") -> None:
        super().__init__()
        self.scheme = scheme
        self.peer_address = self.local_address = f"{scheme}://<unconnected>"
        self._max_message_size = max_message_size
        self._on_connected = on_connected
        #: Before the handshake only one small frame is accepted, so an
        #: unauthenticated peer cannot make us allocate much.
        self._reader = FrameReader(self._inbox.put, max_frames=1, max_size=MAX_HANDSHAKE_SIZE,
                                   halt_after_one=True)
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._reading_paused = False
        #: Futures of senders waiting for the transport's buffer to drain.
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        #: Held while a message is written in several pieces (see module doc).
        self._write_lock = asyncio.Lock()
        self._copies_writes = True
        self._lost: asyncio.Future[None] | None = None
        #: True once the handshake accepted the peer.
        self._authenticated = False

    # -- asyncio protocol callbacks -------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; duck-type them.
        self._transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        # An SSL transport copies (encrypts) whatever we write, on any loop.
        self._copies_writes = self.scheme == "tls" or _loop_copies_writes(loop)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # latency of tiny messages matters more than packet count
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:  # pragma: no cover - platform specific
                pass
            _detect_dead_peers(sock)
        self.peer_address = format_address(transport.get_extra_info("peername"), self.scheme)
        self.local_address = format_address(transport.get_extra_info("sockname"), self.scheme)
        if self._reader.halted or self._inbox.full():
            # Over TLS, data may be delivered before connection_made (start_tls).
            self._pause_reading()
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._reader.buffer_updated(nbytes)
        except ProtocolError as e:
            self._fail(ProtocolError(f"Garbled data from {self.peer_address}: {e}"))
            return
        if (self._reader.halted or self._inbox.full()) and not self._reading_paused:
            self._pause_reading()

    def eof_received(self) -> bool:
        return False  # close the transport; the peer will not send more

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        why = f": {exc}" if exc else ""
        self._inbox.close(CommClosedError(f"Connection to {self.peer_address} closed{why}"))
        self._wake_drain_waiters(CommClosedError(f"Connection to {self.peer_address} closed{why}"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain_waiters(None)

    # -- Comm -----------------------------------------------------------------

    async def send_frames(self, frames: Frames) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise CommClosedError(f"Cannot send on closed comm to {self.peer_address}")
        frames, prefix, total = normalize_frames(frames)
        if self._copies_writes and total > _WRITE_CHUNK:
            async with self._write_lock:
                await self._write_chunked(prefix, frames)
            return
        if self._write_lock.locked():  # a chunked write is in progress: keep order
            async with self._write_lock:
                self._check_open()
                transport.writelines([prefix, *frames])
        else:
            transport.writelines([prefix, *frames])
        if self._write_paused:
            await self._drain()

    async def _write_chunked(self, prefix: bytes, frames: list[Any]) -> None:
        assert self._transport is not None
        self._check_open()
        self._transport.write(prefix)
        for frame in frames:
            view = memoryview(frame)
            for offset in range(0, view.nbytes, _WRITE_CHUNK):
                self._check_open()
                self._transport.write(view[offset : offset + _WRITE_CHUNK])
                if self._write_paused:
                    await self._drain()

    def _check_open(self) -> None:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise CommClosedError(f"Connection to {self.peer_address} closed while sending")

    async def _drain(self) -> None:
        if not self._write_paused:
            return
        self._check_open()
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(fut)
        await fut

    def _wake_drain_waiters(self, exc: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    async def close(self) -> None:
        if self._transport is None or self._closed:
            self._closed = True
            return
        self._closed = True
        self._inbox.close(CommClosedError(f"Comm to {self.peer_address} was closed locally"))
        self._transport.close()  # flushes buffered writes first
        assert self._lost is not None
        done, _ = await asyncio.wait({self._lost}, timeout=_CLOSE_TIMEOUT)
        if not done:
            logger.warning("Peer %s did not take our last %d bytes within %ss; aborting",
                           self.peer_address, self._transport.get_write_buffer_size(),
                           _CLOSE_TIMEOUT)
            self._transport.abort()

    def abort(self) -> None:
        self._closed = True
        self._inbox.close(CommClosedError(f"Comm to {self.peer_address} was aborted locally"))
        self._inbox.discard()
        if self._transport is not None:
            self._transport.abort()

    def closed(self) -> bool:
        return self._closed

    def expect_handshake_message(self) -> None:
        try:
            self._reader.resume(halt_after_one=True)  # limits stay small
        except ProtocolError as e:
            self._fail(ProtocolError(f"Garbled data from {self.peer_address}: {e}"))
            return
        if self._reading_paused and not self._reader.halted and not self._inbox.full():
            self._resume_reading()

    def handshake_complete(self) -> None:
        self._authenticated = True
        self._reader.set_limits(max_frames=DEFAULT_MAX_FRAMES, max_size=self._max_message_size)
        try:
            self._reader.resume()  # parse what the peer sent right after its handshake
        except ProtocolError as e:
            self._fail(ProtocolError(f"Garbled data from {self.peer_address}: {e}"))
            return
        if self._reading_paused and not self._inbox.full():
            self._resume_reading()

    def _on_inbox_drained(self) -> None:
        if self._reading_paused and not self._reader.halted:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _fail(self, error: ProtocolError) -> None:
        """Close this connection (only) because the peer broke the protocol."""
        if self._authenticated:
            logger.warning("%s; closing the connection", error)
        else:  # the listener logs the rejected handshake, once
            logger.debug("%s; closing the connection", error)
        self._inbox.close(error)
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


async def connect(address: str, *, handshake: dict[str, Any], timeout: float = 10.0,
                  max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                  security: Security | None = None,
                  ssl_context: ssl.SSLContext | None = None,
                  retry_refused: bool = True) -> TCPComm:
    """Connect to "tcp://host:port" (or, with ``ssl_context``, "tls://...") and
    run the handshake with ``security``'s token.

    Retries refused/failed connections with jittered exponential backoff, so
    a worker may start before its scheduler. Raises ``ConnectTimeoutError`` if
    no connection and handshake completed within ``timeout`` seconds, and
    ``HandshakeError`` or ``AuthenticationError`` (not retried) if the peer is
    incompatible, refuses us, or fails the TLS handshake. With
    ``retry_refused=False`` a refused connection raises at once: for peers
    known to have been listening (a worker holding data), refusal means the
    process is gone, and waiting out the timeout only delays the recovery.
    """
    scheme, location = parse_address(address)
    host, port = parse_host_port(location, scheme)
    token = (security or Security()).token_bytes
    tls_options: dict[str, Any] = {}
    if ssl_context is not None:
        tls_options = {"ssl": ssl_context, "server_hostname": host}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    backoff = 0.005
    last_error: BaseException | str = "no attempt finished"

    def timed_out(reason: object) -> ConnectTimeoutError:
        return ConnectTimeoutError(
            f"Timed out after {timeout}s trying to connect to {address}: {reason}. "
            "Is a teamster scheduler running there?"
        )

    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise timed_out(last_error)
        try:
            _, comm = await asyncio.wait_for(
                loop.create_connection(
                    lambda: TCPComm(max_message_size=max_message_size, scheme=scheme),
                    host, port, **tls_options),
                remaining,
            )
            break
        except TimeoutError:  # before OSError: asyncio's TimeoutError is an OSError
            last_error = "connection attempt did not complete"
        except OSError as e:
            if ssl_context is not None and isinstance(e, (ssl.SSLError, ConnectionResetError)):
                # Something accepted the connection and then failed TLS: a wrong
                # certificate or a plain-TCP listener. Waiting will not fix it.
                raise HandshakeError(
                    f"TLS handshake with {address} failed: {e}. Check that the peer listens "
                    "with TLS (it prints a tls:// address) and that both certificates are "
                    "signed by the CA given as tls_ca") from None
            if not retry_refused and isinstance(e, ConnectionRefusedError):
                raise
            last_error = e
            delay = min(backoff * (0.5 + random.random()), deadline - loop.time())
            backoff = min(backoff * 2, 1.0)
            if delay > 0:
                await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(exchange_handshake(comm, handshake, token=token, initiator=True),
                               max(deadline - loop.time(), 0.001))
    except TimeoutError:
        comm.abort()
        raise timed_out("connected, but the peer did not complete the handshake") from None
    except BaseException:
        comm.abort()
        raise
    return comm


class TCPListener(Listener):
    """A listening TCP socket; see ``listen``."""

    def __init__(self, server: asyncio.AbstractServer | _TLSServer, runner: HandlerRunner,
                 address: str,
                 bound_address: str) -> None:
        self._server = server
        self._runner = runner
        #: Address to give peers ("tcp://<reachable ip>:port").
        self.address = address
        #: Address actually bound, e.g. "tcp://0.0.0.0:8786".
        self.bound_address = bound_address

    def stop(self) -> None:
        self._server.close()

    async def close(self) -> None:
        self._server.close()
        await self._runner.close()
        await self._server.wait_closed()


async def listen(address: str, handler: Handler, *, handshake: dict[str, Any],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 handshake_timeout: float = 10.0, security: Security | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> TCPListener:
    """Listen on "tcp://host:port" (port 0 picks a free port), or with
    ``ssl_context`` on "tls://host:port".

    ``handler(comm)`` runs in its own task per connection once the handshake
    succeeded; the comm is closed when the handler returns. Failed handshakes,
    garbage and handler exceptions close only that connection and are logged.

    ``Listener.address`` is connectable: for a wildcard host (0.0.0.0, ::, or
    empty) it reports the IP of the interface holding the default route, or
    127.0.0.1 when there is none, as workers on other hosts need a routable IP.
    """
    scheme, location = parse_address(address)
    host, port = parse_host_port(location, scheme)
    runner = HandlerRunner(handler, handshake, handshake_timeout, security)

    def on_connected(comm: TCPComm) -> None:
        runner.start(comm)

    def make_comm() -> TCPComm:
        return TCPComm(max_message_size=max_message_size, on_connected=on_connected,
                       scheme=scheme)

    loop = asyncio.get_running_loop()
    server: asyncio.AbstractServer | _TLSServer
    if ssl_context is None:
        server = await loop.create_server(make_comm, host or "0.0.0.0", port)
    else:
        server = _TLSServer(host or "0.0.0.0", port, ssl_context, runner, make_comm,
                            handshake_timeout)
    sockname = server.sockets[0].getsockname()
    bound = format_address(sockname, scheme)
    if sockname[0] in ("0.0.0.0", "::"):
        reachable = format_address((_reachable_ip(socket.AF_INET6 if ":" in sockname[0]
                                                  else socket.AF_INET), sockname[1]), scheme)
    else:
        reachable = bound
    return TCPListener(server, runner, reachable, bound)


class _TLSServer:
    """Accepts TCP connections itself and gives each to ``connect_accepted_socket``
    with the SSL context, so that a failed or stalled TLS handshake surfaces
    here: it is logged with the peer's address, bounded by the handshake
    timeout and counted against the pending-handshake cap. (With
    ``create_server(ssl=...)`` the event loop would swallow it.)"""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, runner: HandlerRunner,
                 make_comm: Callable[[], TCPComm], timeout: float) -> None:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = info[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sockets = [sock]
        self._context = context
        self._runner = runner
        self._make_comm = make_comm
        self._timeout = timeout
        self._accepting = asyncio.get_running_loop().create_task(self._accept_forever())

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sockets[0])
            except OSError as e:  # e.g. out of file descriptors: keep serving
                logger.warning("accept() failed on %s: %s", self.sockets[0].getsockname(), e)
                await asyncio.sleep(0.1)
                continue
            self._runner.start_side_task(self._handshake(conn))

    async def _handshake(self, conn: socket.socket) -> None:
        """TLS handshake of one accepted connection; the comm handshake follows
        (the comm's ``connection_made`` starts it, as for TCP)."""
        runner = self._runner
        try:
            peer = format_address(conn.getpeername(), "tls")
        except OSError:
            conn.close()
            return
        if not runner.admit():
            runner.rejections.reject(peer, f"more than {runner.MAX_PENDING} connections are "
                                           "in their handshake")
            conn.close()
            return
        runner.pending += 1
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._make_comm, conn, ssl=self._context, ssl_handshake_timeout=self._timeout)
        except Exception as e:  # a plain-TCP client, a bad certificate, a silent peer
            runner.rejections.reject(peer, f"TLS handshake failed: {str(e) or type(e).__name__}")
            conn.close()
        except BaseException:
            conn.close()
            raise
        finally:
            runner.pending -= 1

    def close(self) -> None:
        self._accepting.cancel()
        self.sockets[0].close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, return_exceptions=True)


def _reachable_ip(family: socket.AddressFamily) -> str:
    """IP of the interface with the default route; loopback if there is none.

    Connecting a UDP socket sends no packet; it only asks the kernel for a route.
    """
    probe, loopback = ("2001:4860:4860::8888", "::1") if family == socket.AF_INET6 else \
        ("8.8.8.8", "127.0.0.1")
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 80))
            ip: str = s.getsockname()[0]
            return ip
    except OSError:
        return loopback
