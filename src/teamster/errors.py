"""Exceptions users see, named and shaped like dask.distributed's.

A drop-in replacement must raise what user code already catches:
``concurrent.futures.CancelledError`` for cancelled futures (distributed's
``FutureCancelledError`` subclasses it), ``KilledWorker`` for tasks that kept
killing workers, ``TimeoutError`` (the builtin) for waits that ran out.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

__all__ = [
    "AuthenticationError",
    "CancelledError",
    "ClosedClientError",
    "FutureLostError",
    "FuturesCancelledError",
    "KilledWorker",
    "RemoteError",
]


class CancelledError(concurrent.futures.CancelledError):
    """A future was cancelled (by the user, by a cancelled dependency, or by
    closing its client) before it produced a result."""

    def __init__(self, key: Any = None, reason: str | None = None) -> None:
        super().__init__(key, reason)
        #: The key of the cancelled future.
        self.key = key
        #: Why: "cancelled", "client-closed", "released", ...
        self.reason = reason or "unknown"

    def __str__(self) -> str:
        return f"{self.key} cancelled for reason: {self.reason}."

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.reason)


class AuthenticationError(ConnectionError):
    """A peer refused our token, asked for one we do not have, or could not
    prove it knows ours; the connection was closed before any data moved.

    Raised at once (never retried: waiting does not fix a wrong token). An
    ``OSError``, like every other failure to connect.
    """


class KilledWorker(Exception):
    """A task was running on too many workers that died; the scheduler gave up on it.

    Built from the scheduler's diagnosis text (no remote exception exists).
    """


class FutureLostError(RuntimeError):
    """A future's result cannot be had: its data or an input is gone from the
    cluster and could not be recovered (the scheduler's diagnosis, or a gather
    that kept finding no holder)."""


class ClosedClientError(RuntimeError):
    """The client is closed (or lost its scheduler) and cannot do this."""


class RemoteError(Exception):
    """Stands in for a remote exception that could not be pickled or unpickled.

    ``args[0]`` is the original exception's text, "TypeName: message".
    """


class FuturesCancelledError(CancelledError):
    """``wait`` found cancelled futures among those it waited for (distributed's name)."""

    def __init__(self, keys: Any = (), reason: str | None = None) -> None:
        super().__init__(tuple(keys), reason)

    def __str__(self) -> str:
        keys = list(self.key)
        shown = ", ".join(map(str, keys[:5])) + (", ..." if len(keys) > 5 else "")
        return f"{len(keys)} Future{'s' if len(keys) != 1 else ''} cancelled ({shown}) " \
               f"for reason: {self.reason}."
