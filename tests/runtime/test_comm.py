"""Comms: framing, TCP and inproc transports, handshake, BatchedSend.

Async tests run through ``run_async`` on both the stdlib loop and uvloop (their
write paths differ; see tcp.py). Synchronisation is by awaiting messages and
EOFs, never by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgpack
import numpy as np
import pytest

from teamster.core.messages import ComputeTask, Request, Serialized
from teamster.runtime.comm import (
    PROTOCOL_VERSION,
    BatchedSend,
    Comm,
    CommClosedError,
    ConnectTimeoutError,
    HandshakeError,
    ProtocolError,
    connect,
    deserialize,
    listen,
    serialize,
)
from teamster.runtime.comm.core import FrameInbox
from teamster.runtime.comm.frames import BIG_MESSAGE, FrameReader, normalize_frames
from teamster.runtime.comm.loop import new_event_loop

pytestmark = pytest.mark.timeout(120)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run_async(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    factory = LOOPS[request.param]
    if request.param == "uvloop":
        pytest.importorskip("uvloop")

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 60))

    return run


SCHEMES = ["tcp://127.0.0.1:0", "inproc://"]


async def echo(comm: Comm) -> None:
    while True:
        try:
            msg = await comm.recv()
        except CommClosedError:
            return
        await comm.send(msg)


def wire(*frames: bytes) -> bytes:
    """Encode one message's frames as they appear on the wire."""
    _, prefix, _ = normalize_frames(list(frames))
    return prefix + b"".join(frames)


# ---------------------------------------------------------------------------
# FrameReader: pure, fed bytes by hand


def feed(reader: FrameReader, data: bytes, chunk: int) -> None:
    view = memoryview(data)
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view), chunk)
        buf[:n] = view[:n]
        view = view[n:]
        reader.buffer_updated(n)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 10**9])
def test_frame_reader_reassembles_any_chunking(chunk: int) -> None:
    messages = [
        [b"a"],
        [b"", b"bc", b""],
        [b"x" * 5000, b"y"],
        [b"h", bytes(range(256)) * (BIG_MESSAGE // 128)],  # big: own buffer
        [b"after-big"],
    ]
    got: list[list[Any]] = []
    reader = FrameReader(got.append, max_frames=10, max_size=10**6)
    feed(reader, b"".join(wire(*m) for m in messages), chunk)
    assert [[bytes(f) for f in m] for m in got] == messages
    big = got[3]
    # Frames of a big message are views of one buffer the socket read into.
    assert all(isinstance(f, memoryview) for f in big)
    assert big[0].obj is big[1].obj
    assert reader.buffered == 0


def test_frame_reader_halts_after_handshake_until_resumed() -> None:
    got: list[list[Any]] = []
    reader = FrameReader(got.append, max_frames=1, max_size=100, halt_after_one=True)
    # The second message exceeds the pre-handshake limits but arrives at once.
    feed(reader, wire(b"hello") + wire(b"1" * 500, b"2"), 10**9)
    assert [bytes(f) for m in got for f in m] == [b"hello"]
    reader.set_limits(max_frames=10, max_size=10**6)
    reader.resume()
    assert len(got) == 2 and bytes(got[1][0]) == b"1" * 500


@pytest.mark.parametrize("data, match", [
    (struct.pack("<Q", 0), "frame count 0"),
    (struct.pack("<Q", 11), "frame count 11"),
    (struct.pack("<QQ", 1, 2**62), "exceeds the limit"),
    (struct.pack("<QQQ", 2, 600, 600), "exceeds the limit"),
    (b"garbage!" * 4, "frame count"),
])
def test_frame_reader_rejects_before_allocating(data: bytes, match: str) -> None:
    reader = FrameReader(lambda m: None, max_frames=10, max_size=1000)
    with pytest.raises(ProtocolError, match=match):
        feed(reader, data, 10**9)


# ---------------------------------------------------------------------------
# Round trips over real transports


@pytest.mark.parametrize("address", SCHEMES)
def test_echo_preserves_messages_and_order(run_async: Any, address: str) -> None:
    async def main() -> None:
        async with await listen(address, echo, handshake={"role": "scheduler"}) as listener:
            comm = await connect(listener.address, handshake={"role": "client", "name": "c1"})
            assert comm.handshake == {"teamster": PROTOCOL_VERSION, "role": "scheduler"}
            msgs = [
                ComputeTask(key=("f", i), run_spec=Serialized(b"x" * 60), who_has=(),
                            priority=(0, i), resources=None, run_id=i, announce=False,
                            stimulus_id=f"s-{i}")
                for i in range(200)
            ]
            for m in msgs:
                await comm.send(m)
            assert [await comm.recv() for _ in msgs] == msgs
            await comm.send({("k", 1): [Serialized(b"h" * 100_000, (b"b" * 50_000,))]})
            assert await comm.recv() == {("k", 1): (Serialized(b"h" * 100_000,
                                                                (b"b" * 50_000,)),)}
            await comm.close()
            assert comm.closed()
            with pytest.raises(CommClosedError):
                await comm.send("after close")

    run_async(main())


@pytest.mark.parametrize("address", SCHEMES)
def test_messages_sent_before_close_are_delivered_then_closed(run_async: Any,
                                                             address: str) -> None:
    async def main() -> None:
        async def handler(comm: Comm) -> None:
            for i in range(3):
                await comm.send(i)
            # returning closes the comm

        async with await listen(address, handler, handshake={}) as listener:
            comm = await connect(listener.address, handshake={})
            assert [await comm.recv() for _ in range(3)] == [0, 1, 2]
            with pytest.raises(CommClosedError):
                await comm.recv()
            assert comm.closed()

    run_async(main())


def test_inproc_rejects_unserialisable_messages(run_async: Any) -> None:
    async def main() -> None:
        async with await listen("inproc://", echo, handshake={}) as listener:
            comm = await connect(listener.address, handshake={})
            with pytest.raises(TypeError, match="serialize"):
                await comm.send({"x": object()})
            await comm.send("still usable")
            assert await comm.recv() == "still usable"
            await comm.close()

    run_async(main())


@pytest.mark.parametrize("payload", [b"", b"x" * 50_000])
def test_reader_backpressure_loses_nothing(run_async: Any, payload: bytes,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """More messages (or bytes) than the inbox high-water marks while nobody reads."""
    monkeypatch.setattr(FrameInbox, "HIGH_WATER_BYTES", 1_000_000)

    async def main() -> None:
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        async def handler(comm: Comm) -> None:
            await comm.send("go")  # the peer sends everything before we read
            await comm.recv()  # "sent all"
            done.set_result([(await comm.recv())[0] for _ in range(5000)])  # type: ignore[index]

        async with await listen("tcp://127.0.0.1:0", handler, handshake={}) as listener:
            comm = await connect(listener.address, handshake={})
            assert await comm.recv() == "go"
            await comm.send("sent all")
            for i in range(5000):
                await comm.send((i, payload))
            assert await done == list(range(5000))

    run_async(main())


def test_concurrent_big_and_small_sends_keep_order(run_async: Any) -> None:
    async def main() -> None:
        async with await listen("tcp://127.0.0.1:0", echo, handshake={}) as listener:
            comm = await connect(listener.address, handshake={})
            big = Serialized(b"h", (np.ones(5 * 2**20, dtype="u1").data,))
            await asyncio.gather(comm.send(big), comm.send("small-1"), comm.send("small-2"))
            assert await comm.recv() == big
            assert await comm.recv() == "small-1"
            assert await comm.recv() == "small-2"

    run_async(main())


def test_100mb_array_crosses_tcp_without_copies(run_async: Any) -> None:
    async def main() -> None:
        arr = np.arange(100 * 2**20 // 8, dtype="i8")
        received: asyncio.Future[Serialized] = asyncio.get_running_loop().create_future()

        async def handler(comm: Comm) -> None:
            received.set_result(await comm.recv())  # type: ignore[arg-type]

        async with await listen("tcp://127.0.0.1:0", handler, handshake={}) as listener:
            comm = await connect(listener.address, handshake={})
            s = serialize(arr)
            # Sender: the pickle stream is tiny; the data is one out-of-band view.
            assert len(s.header) < 1024
            assert len(s.buffers) == 1
            assert np.shares_memory(np.frombuffer(s.buffers[0], dtype="u1"), arr)

            tracemalloc.start()
            try:
                await comm.send(s)
                got = await received
                result = deserialize(got)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()

            assert np.array_equal(result, arr)
            # Receiver: the array IS the frame the socket was read into ...
            assert isinstance(got.buffers[0], memoryview)
            assert np.shares_memory(result, np.frombuffer(got.buffers[0], dtype="u1"))
            assert result.flags.writeable
            # ... and nothing along the way made another full copy (that would be >= 2x).
            assert peak < 1.5 * arr.nbytes, peak / arr.nbytes
            await comm.close()

    run_async(main())


# ---------------------------------------------------------------------------
# Bad peers, failures, handshake


async def raw_exchange(address: str, payload: bytes) -> bytes:
    """Open a raw socket, send ``payload``, return everything read until EOF."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    try:
        return await reader.read()  # until the listener closes on us
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes(range(256)) * 64,
    struct.pack("<QQ", 1, 2**40),  # claims a 1 TiB frame
    wire(msgpack.packb([1, 2, 3])),  # a valid frame, but not a handshake
    wire(msgpack.packb({"role": "client"})),  # a dict without "teamster"
    wire(b"\xd4\x05\x00"),  # an ext type: pickle-free handshake only
])
def test_garbage_closes_only_that_connection(run_async: Any, payload: bytes,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        handled: list[Comm] = []

        async def handler(comm: Comm) -> None:
            handled.append(comm)
            await echo(comm)

        caplog.set_level(logging.INFO, logger="teamster.runtime.comm")
        async with await listen("tcp://127.0.0.1:0", handler, handshake={}) as listener:
            await raw_exchange(listener.address, payload)  # returns: we were disconnected
            assert handled == []
            comm = await connect(listener.address, handshake={})
            await comm.send("still serving")
            assert await comm.recv() == "still serving"
            assert len(handled) == 1
            await comm.close()
        assert "handshake" in caplog.text

    run_async(main())


def test_oversized_message_after_handshake_closes_connection(run_async: Any) -> None:
    async def main() -> None:
        errors: asyncio.Queue[BaseException] = asyncio.Queue()

        async def handler(comm: Comm) -> None:
            try:
                await comm.recv()
            except CommClosedError as e:
                errors.put_nowait(e)

        async with await listen("tcp://127.0.0.1:0", handler, handshake={},
                                max_message_size=10_000) as listener:
            comm = await connect(listener.address, handshake={})
            await comm.send(b"x" * 20_000)
            err = await errors.get()
            assert isinstance(err, ProtocolError)
            assert "exceeds the limit of 10000 bytes" in str(err)
            with pytest.raises(CommClosedError):
                await comm.recv()

            # A claimed 1 TiB message is refused from its 16-byte prefix.
            comm2 = await connect(listener.address, handshake={})
            comm2._transport.write(struct.pack("<QQ", 1, 2**40))  # type: ignore[attr-defined]
            err = await errors.get()
            assert isinstance(err, ProtocolError)
            assert "exceeds the limit" in str(err)

    run_async(main())


def test_handler_exception_closes_only_that_connection(
        run_async: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def handler(comm: Comm) -> None:
            msg = await comm.recv()
            if msg == "crash":
                raise RuntimeError("handler bug")
            await comm.send(msg)
            await echo(comm)

        async with await listen("tcp://127.0.0.1:0", handler, handshake={}) as listener:
            bad = await connect(listener.address, handshake={})
            await bad.send("crash")
            with pytest.raises(CommClosedError):
                await bad.recv()
            good = await connect(listener.address, handshake={})
            await good.send("ok")
            await good.send("ok2")
            assert [await good.recv(), await good.recv()] == ["ok", "ok2"]
            await good.close()
        assert "handler bug" in caplog.text

    run_async(main())


@pytest.mark.parametrize("scheme", ["tcp", "inproc"])
def test_connect_to_nothing_times_out_with_clear_error(run_async: Any, scheme: str) -> None:
    if scheme == "tcp":
        with socket.socket() as s:  # a port that was free a moment ago
            s.bind(("127.0.0.1", 0))
            address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    else:
        address = "inproc://nobody-listens-here"

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(ConnectTimeoutError) as info:
            await connect(address, handshake={}, timeout=0.5)
        assert time.monotonic() - start < 0.5 + 5  # generous: only "not hanging" matters
        assert address in str(info.value)
        assert "0.5s" in str(info.value)
        assert isinstance(info.value, OSError)

    run_async(main())


@pytest.mark.parametrize("address", SCHEMES)
def test_handshake_version_mismatch_is_a_clear_error(run_async: Any, address: str) -> None:
    async def main() -> None:
        async def handler(comm: Comm) -> None:
            raise AssertionError("handler must not run for an incompatible peer")

        async with await listen(address, handler, handshake={"role": "scheduler"}) as listener:
            with pytest.raises(HandshakeError) as info:
                await connect(listener.address, handshake={"teamster": 999, "role": "worker"})
            text = str(info.value)
            assert "protocol" in text and "999" in text and str(PROTOCOL_VERSION) in text

    run_async(main())


def test_listener_on_all_interfaces_reports_connectable_address(run_async: Any) -> None:
    async def main() -> None:
        async with await listen("tcp://0.0.0.0:0", echo, handshake={}) as listener:
            assert not listener.address.startswith("tcp://0.0.0.0")
            comm = await connect(listener.address, handshake={})
            await comm.send("hi")
            assert await comm.recv() == "hi"
            await comm.close()

    run_async(main())


def test_listener_close_closes_connections(run_async: Any) -> None:
    async def main() -> None:
        listener = await listen("tcp://127.0.0.1:0", echo, handshake={})
        comm = await connect(listener.address, handshake={})
        await comm.send(1)
        assert await comm.recv() == 1
        await listener.close()
        with pytest.raises(CommClosedError):
            await comm.recv()

    run_async(main())


# ---------------------------------------------------------------------------
# BatchedSend


async def batched_pair(address: str, interval: float) -> tuple[
        BatchedSend, Comm, asyncio.Queue[Any], Callable[[], Awaitable[None]]]:
    """A started BatchedSend whose batches land in a queue (then None once closed).

    The receiver hangs up after a batch containing "hang up".

    Returns (bsend, its comm, queue, cleanup)."""
    batches: asyncio.Queue[Any] = asyncio.Queue()
    started = asyncio.Event()

    async def handler(comm: Comm) -> None:
        started.set()
        while True:
            try:
                batch = await comm.recv()
            except CommClosedError:
                batches.put_nowait(None)
                return
            batches.put_nowait(batch)
            if "hang up" in batch:
                return  # the listener closes the comm

    listener = await listen(address, handler, handshake={})
    bsend = BatchedSend(interval=interval)
    comm = await connect(listener.address, handshake={})
    bsend.start(comm)
    await started.wait()  # connect() may return before the listener ran the handler
    return bsend, comm, batches, listener.close


@pytest.mark.parametrize("address", SCHEMES)
def test_batched_send_batches_and_preserves_order(run_async: Any, address: str) -> None:
    async def main() -> None:
        bsend, _, batches, cleanup = await batched_pair(address, interval=0.002)
        msgs = [Request(request_id=i, op="ping") for i in range(1000)]
        for m in msgs:  # tight loop: the flusher cannot run in between
            bsend.send(m)
        got: list[Any] = []
        n_batches = 0
        while len(got) < len(msgs):
            batch = await batches.get()
            assert isinstance(batch, tuple)
            got.extend(batch)
            n_batches += 1
        assert got == msgs
        assert n_batches < len(msgs)
        assert bsend.batches_sent == n_batches
        await bsend.close()
        await cleanup()

    run_async(main())


def test_batched_send_first_message_is_prompt_and_close_flushes(run_async: Any) -> None:
    async def main() -> None:
        # An hour-long interval: anything that waits for it would time the test out.
        bsend, _, batches, cleanup = await batched_pair("tcp://127.0.0.1:0", interval=3600)
        bsend.send("first")
        assert await batches.get() == ("first",)  # after idle: sent at once
        bsend.send("second", "third")  # within the interval: held back ...
        bsend.send("fourth")
        await bsend.close()  # ... and flushed by close
        assert await batches.get() == ("second", "third", "fourth")
        assert await batches.get() is None  # then the comm closed
        assert bsend.closed()
        await cleanup()

    run_async(main())


def test_batched_send_drops_after_comm_closed(run_async: Any,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO, logger="teamster.runtime.comm")
        bsend, comm, batches, cleanup = await batched_pair("tcp://127.0.0.1:0", interval=0.001)
        bsend.send("hang up")
        assert await batches.get() == ("hang up",)
        with pytest.raises(CommClosedError):
            await comm.recv()  # returns once our side saw the connection go
        assert bsend.closed()
        bsend.send("dropped", "also dropped")
        assert bsend.messages_dropped == 2
        assert "dropped" in caplog.text
        await bsend.close()
        await cleanup()

    run_async(main())


def test_batched_send_written_returns_once_what_was_sent_is_written(run_async: Any) -> None:
    async def main() -> None:
        bsend, _, batches, cleanup = await batched_pair("tcp://127.0.0.1:0", interval=0.002)
        await bsend.written()  # nothing sent: at once
        bsend.send("a", "b")
        waiter = asyncio.ensure_future(bsend.written())
        bsend.send("c")  # sent after the call: not waited for ...
        await waiter
        assert bsend.messages_sent >= 2  # ... but a and b are out
        got: list[Any] = []
        while len(got) < 3:
            got.extend(await batches.get())
        assert got == ["a", "b", "c"]
        await bsend.close()
        await cleanup()

    run_async(main())


def test_batched_send_written_returns_when_the_stream_is_aborted(run_async: Any) -> None:
    async def main() -> None:
        # An hour-long interval holds the second message back until the abort.
        bsend, _, batches, cleanup = await batched_pair("tcp://127.0.0.1:0", interval=3600)
        bsend.send("first")
        assert await batches.get() == ("first",)
        bsend.send("never written")
        waiter = asyncio.ensure_future(bsend.written())
        await asyncio.sleep(0)  # (lets it start waiting)
        assert not waiter.done()
        bsend.abort()
        await waiter  # released, not left hanging
        assert bsend.messages_dropped == 1
        await cleanup()

    run_async(main())
