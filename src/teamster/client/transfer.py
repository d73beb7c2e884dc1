"""The client's direct conversations with workers: gather, scatter, run.

Task data never passes through the scheduler: the client asks a holder
(known from ``KeyInMemory.who_has``) for many keys in one ``GetData``, pushes
scattered values with ``PutData``, and runs ``client.run`` functions with a
``Request``. Each conversation is one request and one reply on a pooled
connection, so a connection serves one request at a time and needs no
request ids; a connection whose request failed or was cancelled midway is
aborted, never reused (its stream position is unknown).

Event-loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from teamster.client.future import FutureState
from teamster.client.waiting import ALL_COMPLETED, FIRST_EXCEPTION, until
from teamster.core.messages import DataReply, GetData, Key, PutData, Reply, Serialized
from teamster.errors import FutureLostError
from teamster.runtime.comm import Comm, CommClosedError, connect
from teamster.security import Security

__all__ = ["WorkerConnections", "fetch_values", "gather_values"]

#: How often a gather asks the scheduler where missing data went before giving up.
MAX_GATHER_MISSES = 6
#: Asks the scheduler {key: holders} for keys (the client's "who_has" query).
Locate = Callable[[list[Key]], Awaitable[dict[Key, Any]]]

logger = logging.getLogger("teamster.client")


class WorkerConnections:
    """Idle connections to workers, by address."""

    def __init__(self, handshake: dict[str, Any], connect_timeout: float,
                 max_idle_per_worker: int = 4, security: Security | None = None) -> None:
        self._handshake = handshake
        self._security = security
        self.connect_timeout = connect_timeout
        self._max_idle = max_idle_per_worker
        #: address -> connections with no request in flight.
        self._idle: dict[str, list[Comm]] = {}
        #: Connections with a request in flight (aborted by ``close``).
        self._busy: set[Comm] = set()
        self._closed = False

    async def request(self, address: str, msg: Any) -> Any:
        """Send ``msg`` to the worker at ``address`` and return its one reply."""
        if self._closed:
            raise CommClosedError("the client is closed")
        idle = self._idle.get(address)
        comm = None
        while idle:
            comm = idle.pop()
            if not comm.closed():
                break
            comm = None
        if comm is None:
            # A worker named as a holder was listening: refused means it died.
            comm = await connect(address, handshake=self._handshake,
                                 timeout=self.connect_timeout, security=self._security,
                                 retry_refused=False)
        self._busy.add(comm)
        try:
            await comm.send(msg)
            reply = await comm.recv()
        except BaseException:
            comm.abort()
            raise
        finally:
            self._busy.discard(comm)
        if self._closed or comm.closed():
            comm.abort()
        else:
            pool = self._idle.setdefault(address, [])
            if len(pool) < self._max_idle:
                pool.append(comm)
            else:
                await comm.close()
        return _single(reply)

    def forget(self, address: str) -> None:
        """Drop idle connections to a worker that failed us."""
        for comm in self._idle.pop(address, ()):
            comm.abort()

    async def close(self) -> None:
        self._closed = True
        comms = [c for pool in self._idle.values() for c in pool]
        self._idle.clear()
        for comm in self._busy:
            comm.abort()
        await asyncio.gather(*(c.close() for c in comms), return_exceptions=True)


def _single(reply: Any) -> Any:
    """Replies may come as a one-message batch (a tuple): unwrap it."""
    if isinstance(reply, (tuple, list)):
        if len(reply) != 1:
            raise CommClosedError(f"expected one reply message, got a batch of {len(reply)}")
        return reply[0]
    return reply


async def get_data(pool: WorkerConnections, address: str, keys: list[Key],
                   stimulus_id: str) -> DataReply:
    reply = await pool.request(address, GetData(tuple(keys), stimulus_id))
    if not isinstance(reply, DataReply):
        raise CommClosedError(f"worker {address} answered GetData with {type(reply).__name__}")
    return reply


async def put_data(pool: WorkerConnections, address: str,
                   data: Iterable[tuple[Key, Serialized]], stimulus_id: str) -> None:
    reply = await pool.request(address, PutData(tuple(data), stimulus_id))
    if not isinstance(reply, Reply) or not reply.ok:
        detail = reply.result if isinstance(reply, Reply) else type(reply).__name__
        raise RuntimeError(f"worker {address} refused scattered data: {detail!r}")


class _Moved(Exception):
    """Every key asked of a holder was re-reported elsewhere while we waited for it."""


#: How often a slow request checks whether its keys were re-reported elsewhere.
_MOVED_CHECK_INTERVAL = 0.1


async def _get_unless_moved(pool: WorkerConnections, address: str, keys: list[Key],
                            by_key: dict[Key, FutureState], stimulus_id: str) -> DataReply:
    """``get_data``, abandoned once the scheduler reports all ``keys`` on other workers.

    A holder that died makes ``connect`` retry until its timeout; meanwhile the
    scheduler recomputes the keys and a ``KeyInMemory`` updates their
    ``who_has``. Watching for that ends the wait early.
    """
    task = asyncio.ensure_future(get_data(pool, address, keys, stimulus_id))
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=_MOVED_CHECK_INTERVAL)
            if done:
                return task.result()
            if all(address not in by_key[k].who_has and by_key[k].who_has for k in keys):
                raise _Moved(f"keys moved away from {address}")
    finally:
        if not task.done():
            task.cancel()


def _choose_holder(holders: tuple[str, ...], chosen: dict[str, list[Key]]) -> str:
    """A holder already asked in this round (fewer conversations), else a random one
    (replicas of broadcast data spread the load)."""
    if len(holders) == 1:
        return holders[0]
    for address in holders:
        if address in chosen:
            return address
    return random.choice(holders)


async def fetch_values(pool: WorkerConnections, states: list[FutureState],
                       data: dict[Key, Serialized], stimulus_id: str) -> list[FutureState]:
    """Fetch finished states' values into ``data``, one ``GetData`` per holder.

    Returns the states whose data no asked holder had (their ``who_has`` no
    longer lists that holder); the caller asks the scheduler where they went.
    """
    chosen: dict[str, list[Key]] = {}
    by_key: dict[Key, FutureState] = {}
    missing: list[FutureState] = []
    for st in states:
        if st.key in data or st.key in by_key:
            continue
        if not st.who_has:
            missing.append(st)
            continue
        by_key[st.key] = st
        chosen.setdefault(_choose_holder(st.who_has, chosen), []).append(st.key)
    if not chosen:
        return missing
    addresses = list(chosen)
    replies = await asyncio.gather(
        *(_get_unless_moved(pool, a, chosen[a], by_key, stimulus_id) for a in addresses),
        return_exceptions=True,
    )
    for address, reply in zip(addresses, replies, strict=True):
        if isinstance(reply, BaseException):
            if isinstance(reply, _Moved):
                missing.extend(by_key[k] for k in chosen[address])  # fetch from the new holders
                continue
            if not isinstance(reply, (OSError, CommClosedError, asyncio.TimeoutError)):
                raise reply
            logger.info("Could not gather %d keys from %s: %s", len(chosen[address]),
                        address, reply)
            pool.forget(address)
            lost = chosen[address]
        else:
            for key, value in reply.data:
                data[key] = value
            # Keys the reply neither had nor listed as missing count as missing,
            # or the caller would ask for them again forever.
            lost = [k for k in chosen[address] if k not in data]
        for key in lost:
            st = by_key[key]
            st.who_has = tuple(a for a in st.who_has if a != address)
            missing.append(st)
    return missing


async def gather_values(pool: WorkerConnections, states: list[FutureState], errors: str,
                        locate: Locate, stimulus_id: str
                        ) -> tuple[dict[Key, Serialized], list[FutureState]]:
    """Wait for the states, then fetch the finished ones' values from their holders.

    Data a holder no longer has is located again with the scheduler; a key
    held nowhere goes back to pending until the scheduler reports it again
    (it recomputes what a client still wants). With ``errors="raise"`` it
    returns as soon as one state fails. Returns (values by key, failed states
    in input order).
    """
    data: dict[Key, Serialized] = {}
    mode = FIRST_EXCEPTION if errors == "raise" else ALL_COMPLETED
    misses = 0
    while True:
        await until(states, mode)
        bad = [st for st in states if st.status in ("error", "cancelled")]
        if bad and errors == "raise":
            return data, bad
        todo = [st for st in states if st.status == "finished" and st.key not in data]
        if not todo:
            if all(st.status != "pending" for st in states):
                return data, bad
            continue
        missing = await fetch_values(pool, todo, data, stimulus_id)
        if not missing:
            continue
        misses += 1
        if misses > MAX_GATHER_MISSES:
            break
        where = await locate([st.key for st in missing])
        for st in missing:
            holders = tuple(where.get(st.key) or ())
            if holders:
                st.who_has = holders
            else:
                st.reset()  # gone: the scheduler recomputes it and reports it again
        await asyncio.sleep(0.01 * (misses - 1))
    keys = [st.key for st in states if st.status == "finished" and st.key not in data]
    raise FutureLostError(f"could not gather {len(keys)} key(s) from any worker, e.g. "
                          f"{keys[:3]!r}; the workers that held them may have died")
