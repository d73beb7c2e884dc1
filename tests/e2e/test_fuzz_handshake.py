"""Fuzzing the ports of a live, token-protected LocalCluster.

Hypothesis generates batches of frames -- random bytes, random frames,
pickles that would leave a mark on disk if anything unpickled them, and
mutations of valid hellos, proofs and teamster messages -- and sends them
over many connections to the scheduler's port and to a worker's port, while
a client keeps computing. Nothing may crash, nothing may be unpickled before
authentication, and the client's results must stay right.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import pickle
import random
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teamster import Client, LocalCluster
from teamster.core import messages as m
from teamster.runtime.comm import dumps_message, serialize
from teamster.runtime.comm.handshake import PROTOCOL_VERSION
from teamster.runtime.comm.loop import new_event_loop

pytestmark = [pytest.mark.timeout(240)]

#: Frames per hypothesis example, and examples: 10,000 frames in all.
FRAMES_PER_BATCH = 50
BATCHES = 200


class Bomb:
    """Unpickling this calls os.mkdir(path) in whichever process does it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def frame(*parts: bytes) -> bytes:
    """The wire form of one message made of ``parts``."""
    return struct.pack(f"<{len(parts) + 1}Q", len(parts), *map(len, parts)) + b"".join(parts)


def hello(rng: random.Random) -> bytes:
    fields: dict[str, Any] = {"teamster": PROTOCOL_VERSION,
                              "role": rng.choice(["client", "worker", "peer", "scheduler"]),
                              "nonce": rng.randbytes(32), "auth": "hmac-sha256"}
    if rng.random() < 0.3:
        fields["auth"] = rng.choice([None, "none", 1, b"hmac"])
    if rng.random() < 0.2:
        fields["nonce"] = rng.randbytes(rng.choice([0, 8, 31, 33, 64]))
    return msgpack.packb(fields)


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and out:  # flip a byte
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # truncate
            del out[rng.randrange(len(out)):]
        elif op == 2:  # insert junk
            pos = rng.randrange(len(out) + 1)
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:  # overwrite a length-like field with something absurd
            if len(out) >= 8:
                pos = rng.randrange(0, len(out) - 7)
                out[pos:pos + 8] = struct.pack("<Q", rng.choice([0, 2**63, 2**32, 4097, 10**9]))
    return bytes(out)


def bomb_frames(marker_dir: Path, rng: random.Random) -> list[bytes]:
    """Wire messages carrying pickles that mkdir under ``marker_dir`` when loaded."""
    target = str(marker_dir / f"unpickled-{rng.randrange(10**9)}")
    raw = pickle.dumps(Bomb(target), protocol=rng.choice([2, 4, 5]))
    blob = serialize(Bomb(target))
    # The messages that make a worker unpickle: client.run and scatter.
    run = dumps_message(m.Request(1, "run", {"function": blob}, "fuzz"))
    put = dumps_message(m.PutData((("k", blob),), "fuzz"))
    return [frame(raw), frame(*run), frame(*put),
            frame(msgpack.packb({"proof": raw[:32]}), raw)]


#: One frame's recipe: its kind and a seed; expanded by ``build``. Seeds keep
#: hypothesis's entropy per frame small, so 50-frame batches stay cheap.
recipes = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=96)),
    st.tuples(st.sampled_from(["framed-random", "hello", "mutated-hello", "proof",
                               "bomb", "mutated-bomb", "absurd-prefix"]),
              st.integers(0, 2**32 - 1)),
)


def build(recipe: tuple[str, Any], marker_dir: Path) -> bytes:
    kind, arg = recipe
    if kind == "bytes":
        return bytes(arg)
    rng = random.Random(arg)
    if kind == "framed-random":
        return frame(rng.randbytes(rng.randint(0, 300)))
    if kind == "hello":
        return frame(hello(rng))
    if kind == "mutated-hello":
        return mutate(frame(hello(rng)), rng)
    if kind == "proof":  # well-formed, but nobody knows the token here
        return frame(msgpack.packb({"proof": rng.randbytes(rng.choice([32, 32, 0, 64]))}))
    if kind == "bomb":
        return rng.choice(bomb_frames(marker_dir, rng))
    if kind == "mutated-bomb":
        return mutate(rng.choice(bomb_frames(marker_dir, rng)), rng)
    assert kind == "absurd-prefix"
    return struct.pack("<QQ", rng.choice([1, 2, 10**6, 2**64 - 1]),
                       rng.choice([5000, 2**40, 2**64 - 1]))


async def send_connection(address: str, frames: list[bytes]) -> None:
    """One connection: often a valid hello first (so later frames meet the
    proof check), then the frames; half-close, read until the server closes."""
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(frames))
        writer.write_eof()
        await writer.drain()
        await asyncio.wait_for(_drain_reader(reader), 20)
    except (ConnectionError, OSError):
        pass  # the server closed on us first: expected
    finally:
        writer.close()


async def send_all(connections: list[tuple[str, list[bytes]]]) -> None:
    await asyncio.gather(*(send_connection(address, frames) for address, frames in connections))


async def _drain_reader(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


#: Picklable by reference to the stdlib: the workers cannot import this module.
inc = functools.partial(operator.add, 1)


def test_fuzzing_the_scheduler_and_a_worker_port(tmp_path: Path) -> None:
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, set_as_default=False) as client:
        targets = [cluster.scheduler_address, sorted(client.scheduler_info()["workers"])[0]]
        stop = threading.Event()
        rounds: list[bool] = []
        errors: list[BaseException] = []

        def compute_while_fuzzing() -> None:
            try:
                while not stop.is_set():
                    xs = client.map(inc, range(300), pure=False)
                    pairs = [client.submit(sum, xs[i:i + 2], pure=False)
                             for i in range(0, 300, 2)]
                    total = client.submit(sum, pairs, pure=False).result(timeout=60)
                    rounds.append(total == sum(range(1, 301)))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        computer = threading.Thread(target=compute_while_fuzzing)
        computer.start()
        loop = new_event_loop()
        sent = {"frames": 0, "connections": 0}
        seed = random.Random(0)

        @settings(max_examples=BATCHES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(recipes, min_size=FRAMES_PER_BATCH, max_size=FRAMES_PER_BATCH))
        def fuzz_batch(batch: list[tuple[str, Any]]) -> None:
            frames = [build(r, marker_dir) for r in batch]
            connections = []
            while frames:
                n = seed.randint(1, 8)
                head = [frame(hello(seed))] if seed.random() < 0.5 else []
                connections.append((seed.choice(targets), head + frames[:n]))
                sent["frames"] += len(head) + len(frames[:n])
                frames = frames[n:]
            sent["connections"] += len(connections)
            loop.run_until_complete(send_all(connections))

        start = time.monotonic()
        try:
            fuzz_batch()
        finally:
            elapsed = time.monotonic() - start
            stop.set()
            computer.join(120)
            loop.close()
        print(f"\nfuzzed {sent['frames']} frames over {sent['connections']} connections "
              f"in {elapsed:.1f}s; the client finished {len(rounds)} rounds of 451 tasks "
              "meanwhile")

        assert not errors, errors
        assert rounds and all(rounds)
        assert sent["frames"] >= 10_000
        assert list(marker_dir.iterdir()) == [], "something was unpickled before auth"
        # Nobody crashed: every process runs and a new client gets served.
        assert cluster._scheduler_proc.poll() is None
        assert all(proc.poll() is None for proc in cluster._procs.values())
        with Client(cluster, set_as_default=False) as again:
            assert again.submit(inc, 41).result(timeout=30) == 42
            assert len(again.scheduler_info()["workers"]) == 2
