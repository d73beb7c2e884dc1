"""The token handshake at the comm level: who gets in, what they are told,
and that nothing but msgpack is decoded before a peer authenticated."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from teamster import Security
from teamster.errors import AuthenticationError
from teamster.runtime.comm import connect, dumps_message, listen, serialize
from teamster.runtime.comm.handshake import MAX_HANDSHAKE_SIZE, PROTOCOL_VERSION
from teamster.runtime.comm.loop import new_event_loop

TOKEN = "s3cret-token"


def run(coro: Any) -> Any:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 30))
    finally:
        loop.close()


async def echo(comm: Any) -> None:
    while True:
        await comm.send(await comm.recv())


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:0", "inproc://"])
def test_right_token_connects_and_messages_flow(address: str) -> None:
    async def main() -> None:
        async with await listen(address, echo, handshake={"role": "scheduler"},
                                security=Security(token=TOKEN)) as listener:
            comm = await connect(listener.address, handshake={"role": "client"},
                                 security=Security(token=TOKEN))
            assert comm.handshake == {"teamster": PROTOCOL_VERSION, "role": "scheduler"}
            await comm.send({"x": (1, 2, 3)})
            assert await comm.recv() == {"x": (1, 2, 3)}
            await comm.close()

    run(main())


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:0", "inproc://"])
@pytest.mark.parametrize(
    ("client_token", "listener_token", "expected"),
    [
        ("wrong", TOKEN, "refused this client's token"),
        (None, TOKEN, "requires a token and this client has none"),
        (TOKEN, None, "does not authenticate"),
    ],
    ids=["wrong-token", "missing-token", "server-without-token"],
)
def test_bad_credentials_are_refused_at_once_with_a_clear_error(
        address: str, client_token: str | None, listener_token: str | None, expected: str,
        caplog: pytest.LogCaptureFixture) -> None:
    handled = []

    async def handler(comm: Any) -> None:
        handled.append(comm)
        await echo(comm)

    async def main() -> None:
        async with await listen(address, handler, handshake={"role": "scheduler"},
                                security=Security(token=listener_token)) as listener:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(AuthenticationError) as info:
                await connect(listener.address, handshake={"role": "client"},
                              security=Security(token=client_token), timeout=10)
            assert loop.time() - start < 2, "refused promptly, not after a timeout"
            text = str(info.value)
            assert expected in text and "scheduler at" in text
            assert isinstance(info.value, OSError)
            # The listener keeps serving peers with the right credentials.
            good = await connect(listener.address, handshake={"role": "client"},
                                 security=Security(token=listener_token))
            await good.send("still here")
            assert await good.recv() == "still here"
            await good.close()

    caplog.set_level(logging.WARNING, "teamster.runtime.comm")
    run(main())
    if listener_token is not None:  # the side holding the token refused, and said why
        assert len(handled) == 1
        assert any("Rejected connection from" in r.getMessage()
                   and r.levelno == logging.WARNING for r in caplog.records)


def test_the_token_never_crosses_the_wire() -> None:
    """Record every byte both ways through a relay: the token is not in them."""
    token = "tok-" + os.urandom(16).hex()
    seen = bytearray()

    async def main() -> None:
        async with await listen("tcp://127.0.0.1:0", echo, handshake={"role": "scheduler"},
                                security=Security(token=token)) as listener:
            host, port = listener.address.removeprefix("tcp://").rsplit(":", 1)

            async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                up_r, up_w = await asyncio.open_connection(host, int(port))

                async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    while data := await r.read(65536):
                        seen.extend(data)
                        w.write(data)
                    w.close()

                await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

            relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
            relay_port = relay_server.sockets[0].getsockname()[1]
            comm = await connect(f"tcp://127.0.0.1:{relay_port}", handshake={"role": "client"},
                                 security=Security(token=token))
            await comm.send("hello")
            assert await comm.recv() == "hello"
            await comm.close()
            relay_server.close()

    run(main())
    assert b"hello" in seen  # the relay saw the traffic ...
    assert token.encode() not in seen  # ... but never the token


def _wire(*frames: bytes) -> bytes:
    return struct.pack(f"<{len(frames) + 1}Q", len(frames), *map(len, frames)) + b"".join(frames)


class _Bomb:
    """Unpickling this calls os.mkdir(path): proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def test_nothing_is_unpickled_before_authentication(tmp_path: Path) -> None:
    """A peer that skips or fakes the proof and sends pickles (raw, and inside
    well-formed teamster messages) never gets them unpickled, and the handler
    never runs."""
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Bomb(str(marker)))
    handled = []

    async def handler(comm: Any) -> None:
        handled.append(await comm.recv())

    async def main() -> None:
        async with await listen("tcp://127.0.0.1:0", handler, handshake={"role": "scheduler"},
                                security=Security(token=TOKEN)) as listener:
            host, port = listener.address.removeprefix("tcp://").rsplit(":", 1)
            hello = msgpack.packb({"teamster": PROTOCOL_VERSION, "role": "client",
                                   "nonce": os.urandom(32), "auth": "hmac-sha256"})
            message = dumps_message({"payload": serialize(_Bomb(str(marker)))})
            attempts = [
                _wire(bomb),  # a pickle instead of a hello
                _wire(hello) + _wire(bomb),  # a pickle instead of the proof
                _wire(hello) + _wire(msgpack.packb({"proof": b"x" * 32})) + _wire(*message),
                _wire(hello) + _wire(*message),  # a real message instead of the proof
                _wire(msgpack.packb({"teamster": PROTOCOL_VERSION, "nonce": os.urandom(32),
                                     "auth": None})) + _wire(*message),  # claims no token
            ]
            for payload in attempts:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(payload)
                await writer.drain()
                while await reader.read(65536):  # until the listener closes on us
                    pass
                writer.close()

    run(main())
    assert not marker.exists()
    assert handled == []


def test_handshake_frames_are_capped_and_silent_peers_time_out(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with await listen("tcp://127.0.0.1:0", echo, handshake={"role": "scheduler"},
                                security=Security(token=TOKEN),
                                handshake_timeout=0.5) as listener:
            host, port = listener.address.removeprefix("tcp://").rsplit(":", 1)
            # A frame just over the cap: refused on its length prefix alone.
            with socket.create_connection((host, int(port))) as big:
                big.sendall(struct.pack("<QQ", 1, MAX_HANDSHAKE_SIZE + 1))
                big.settimeout(10)
                await asyncio.to_thread(_read_until_closed, big)
            # A peer that says nothing is dropped after the handshake timeout.
            loop = asyncio.get_running_loop()
            start = loop.time()
            with socket.create_connection((host, int(port))) as silent:
                silent.settimeout(10)
                await asyncio.to_thread(_read_until_closed, silent)
            assert loop.time() - start < 5

    caplog.set_level(logging.WARNING, "teamster.runtime.comm")
    run(main())
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("exceeds the limit of 4096 bytes" in m for m in messages)
    assert any("no valid handshake within 0.5s" in m for m in messages)


def _read_until_closed(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def test_security_repr_and_pickle_never_reveal_the_token() -> None:
    security = Security(token="very-secret")
    assert "very-secret" not in repr(security)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(security)


def test_tls_address_without_certificates_is_a_clear_error() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="TLS address, but no TLS certificates"):
            await connect("tls://127.0.0.1:1", handshake={}, security=Security(token=TOKEN))

    run(main())


def test_rejections_are_logged_but_a_flood_is_summarised(
        caplog: pytest.LogCaptureFixture) -> None:
    from teamster.runtime.comm.core import RejectionLog

    caplog.set_level(logging.WARNING, "teamster.runtime.comm")
    log = RejectionLog(burst=3, window=0.0)  # every call opens a new window
    log.window = 3600.0
    for i in range(10):
        log.reject(f"tcp://10.0.0.{i}:1", "bad token")
    assert len(caplog.records) == 3
    log.window = 0.0
    log.reject("tcp://10.0.0.99:1", "bad token")
    texts = [r.getMessage() for r in caplog.records]
    assert "7 more connections were rejected" in texts[3]
    assert "tcp://10.0.0.99:1" in texts[4]
