"""Reusable connections to peers: one request at a time per connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from teamster.runtime.comm import Comm, connect
from teamster.security import Security


class ConnectionPool:
    def __init__(self, handshake: dict[str, Any], timeout: float = 10.0,
                 max_idle_per_peer: int = 4, security: Security | None = None) -> None:
        self._handshake = handshake
        self._security = security
        self._timeout = timeout
        self._idle: dict[str, list[Comm]] = {}
        self._max_idle = max_idle_per_peer
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self, address: str) -> AsyncIterator[Comm]:
        idle = self._idle.setdefault(address, [])
        comm = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed():
                comm = candidate
                break
        if comm is None:
            # Peers were listening when the scheduler named them: a refusal
            # means the process died, so fail now rather than retry.
            comm = await connect(address, handshake=self._handshake, timeout=self._timeout,
                                 security=self._security, retry_refused=False)
        try:
            yield comm
        except BaseException:
            comm.abort()  # mid-request state is unknown: never reuse it
            raise
        if self._closed or comm.closed() or len(idle) >= self._max_idle:
            comm.abort()
        else:
            idle.append(comm)

    async def request(self, address: str, msg: Any) -> Any:
        async with self.connection(address) as comm:
            await comm.send(msg)
            return await comm.recv()

    def close(self) -> None:
        self._closed = True
        for comms in self._idle.values():
            for comm in comms:
                comm.abort()
        self._idle.clear()
