"""The network model: batched control streams, and data transfers over links.

Control messages (scheduler <-> worker, scheduler <-> client) travel on
long-lived *streams*, batched exactly as ``runtime/comm/batched.py`` does: the
first message after a quiet period goes out at once; after a write, the next
one waits until ``batch_interval`` (2 ms) has passed, and everything sent
meanwhile rides in that one batch. A batch arrives ``latency`` after it is
written, and its messages are handed to the receiving core one by one, in
order (as the runtime's read loop does). Each message crosses in the wire
format (``dumps_message`` when sent, ``loads_message`` on arrival): the
receiver gets a fresh object, never one the sender's core holds, as between
two processes. Handing over the sender's own object had let a simulated
worker warm the scheduler's key objects that a real worker never touches
(and the scheduler match keys by identity), flattering small clusters,
where a task's keys are read again soon. Modelling the batching, rather than
delivering each message alone, matters twice: it is part of the real round
trip under load (placement's prefetch depth exists to hide it), and it is
what keeps a million-task run to a few heap operations per task.

Data transfers (``GatherDep``) cost a request (one latency to the holder),
then ``bytes / bandwidth`` on the holder's outbound link, then one latency
back. A holder sends one reply at a time, first come first served (its NIC is
the bottleneck): many workers fetching from the few holders of a large input
queue behind each other, as they would on a real network. Bandwidth and
latency are per link (worker pair); ``links`` overrides the defaults for
chosen pairs. Control messages are small and cost latency only.

When an endpoint is gone (a worker left), batches still in flight to or from
it are dropped on arrival, as a closed TCP connection would drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from teamster.runtime.comm.serialize import dumps_message, loads_message
from teamster.sim.engine import Engine

#: Default one-way latency of every link, seconds.
DEFAULT_LATENCY = 0.0005
#: Default bandwidth of every worker-to-worker link, bytes/s.
DEFAULT_BANDWIDTH = 1e9
#: The runtime's BatchedSend interval, seconds.
BATCH_INTERVAL = 0.002


class Stream:
    """One direction of a long-lived batched connection."""

    __slots__ = ("engine", "latency", "interval", "receive", "open", "_batch", "_close_time",
                 "_next_write", "batches", "messages")

    def __init__(self, engine: Engine, latency: float, interval: float,
                 receive: Callable[[Any], None]) -> None:
        self.engine = engine
        self.latency = latency
        self.interval = interval
        #: Called with each message on arrival, in order.
        self.receive = receive
        #: False once either end is gone: batches in flight are then dropped.
        self.open = True
        self._batch: list[Any] | None = None
        self._close_time = -1.0
        self._next_write = 0.0
        self.batches = 0
        self.messages = 0

    def send(self, msg: Any) -> None:
        now = self.engine.now
        msg = dumps_message(msg)
        batch = self._batch
        if batch is not None and now <= self._close_time:
            batch.append(msg)  # joins the write that has not happened yet
            return
        write = now if now >= self._next_write else self._next_write
        self._next_write = write + self.interval
        self._close_time = write
        self._batch = batch = [msg]
        self.batches += 1
        self.engine.at(write + self.latency, self._arrive, batch)

    def _arrive(self, batch: list[Any]) -> None:
        if self._batch is batch:
            # Written and delivered: nothing may join it any more (with zero
            # latency a send at this same instant would otherwise be lost),
            # and the stream must not keep its messages alive (a
            # million-task UpdateGraph).
            self._batch = None
        if not self.open:
            return
        self.messages += len(batch)
        receive = self.receive
        for frames in batch:
            receive(loads_message(frames))
            if not self.open:
                return  # the receiver closed this stream while handling a message

    def close(self) -> None:
        self.open = False
        self._batch = None


class Network:
    """Latency and bandwidth of every link, and the transfer queues of holders."""

    def __init__(
        self,
        engine: Engine,
        *,
        latency: float = DEFAULT_LATENCY,
        bandwidth: float = DEFAULT_BANDWIDTH,
        batch_interval: float = BATCH_INTERVAL,
        links: dict[tuple[str, str], tuple[float, float]] | None = None,
    ) -> None:
        self.engine = engine
        self.default_latency = latency
        self.default_bandwidth = bandwidth
        self.batch_interval = batch_interval
        #: (from, to) -> (latency, bandwidth) for links that differ from the default.
        self.links = dict(links or {})
        #: Holder address -> virtual time its outbound link is free again.
        self._busy_until: dict[str, float] = {}
        self.bytes_moved = 0
        self.transfers = 0

    def latency(self, src: str, dst: str) -> float:
        link = self.links.get((src, dst)) if self.links else None
        return self.default_latency if link is None else link[0]

    def bandwidth(self, src: str, dst: str) -> float:
        link = self.links.get((src, dst)) if self.links else None
        return self.default_bandwidth if link is None else link[1]

    def stream(self, src: str, dst: str, receive: Callable[[Any], None]) -> Stream:
        return Stream(self.engine, self.latency(src, dst), self.batch_interval, receive)

    def transfer_done_at(self, holder: str, requester: str, start: float, nbytes: int) -> float:
        """When the last byte of a reply from ``holder`` sent at ``start`` has left it.

        Replies from one holder are serialised (its outbound link is shared).
        """
        busy = self._busy_until.get(holder, 0.0)
        begin = start if start >= busy else busy
        done = begin + nbytes / self.bandwidth(holder, requester)
        self._busy_until[holder] = done
        return done

    def forget(self, address: str) -> None:
        self._busy_until.pop(address, None)
