"""How a task's exception travels from the worker that raised it to the client.

The worker calls ``dumps_exception``; the scheduler forwards the blobs
untouched (``TaskErred`` -> ``KeyErred``); the client calls ``loads_exception``
and re-raises, so ``future.result()`` raises the *original* exception type
with the remote frames in its traceback (traceback objects cannot be pickled;
tblib turns them into plain dicts and back).

Both ends must tolerate exceptions that do not round-trip through pickle (a
custom ``__init__`` signature, an unpicklable attribute, a class the client
cannot import): those arrive as ``RemoteError("TypeName: message")`` rather
than failing the task's report, which would hang the user's ``result()``.
"""

from __future__ import annotations

import os
from types import TracebackType

import tblib

from teamster.core.messages import Serialized
from teamster.errors import FutureLostError, KilledWorker, RemoteError
from teamster.runtime.comm.serialize import deserialize, serialize

__all__ = ["dumps_exception", "exception_text", "loads_exception"]

#: ``exception_text`` is for logs and dashboards; a huge message must not bloat the wire.
MAX_TEXT = 10_000
#: Frames from files under this folder (the worker's executor, run_task) are
#: teamster's own; the user wants to see their function first.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Prefix the scheduler puts on its diagnosis of a task that kept killing workers.
KILLED_WORKER_PREFIX = "KilledWorker:"


def exception_text(exc: BaseException) -> str:
    """ "TypeName: message", never raising (a broken ``__str__`` is reported, not raised)."""
    try:
        message = str(exc)
    except Exception as e:
        message = f"<str() failed: {e!r}>"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip teamster's own leading frames (the executor calling the task)."""
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb if tb is not None else first


def dumps_exception(exc: BaseException) -> tuple[Serialized, Serialized | None, str]:
    """(exception, traceback, text) blobs for ``TaskErred``.

    The exception is checked to unpickle here, on the worker, because a
    failure on the client would leave the user with nothing but the text.
    """
    text = exception_text(exc)
    try:
        exc_s = serialize(exc)
        deserialize(exc_s)  # errors are rare; a round trip check is cheap insurance
    except Exception:
        exc_s = serialize(RemoteError(text))
    tb_s: Serialized | None = None
    tb = _user_frames(exc.__traceback__)
    if tb is not None:
        try:
            tb_s = serialize(tblib.Traceback(tb).to_dict())
        except Exception:  # a traceback is a nicety; never lose the error over it
            tb_s = None
    return exc_s, tb_s, text


def loads_exception(exc_s: Serialized | None, tb_s: Serialized | None,
                    text: str = "") -> BaseException:
    """The exception to raise, with the remote traceback attached.

    ``exc_s`` is None when the scheduler diagnosed the failure itself; ``text``
    then says what happened (``KilledWorker`` or lost data).
    """
    if exc_s is None:
        if text.startswith(KILLED_WORKER_PREFIX):
            return KilledWorker(text[len(KILLED_WORKER_PREFIX):].strip())
        return FutureLostError(text or "the task failed for a reason the scheduler did not give")
    try:
        exc = deserialize(exc_s)
    except Exception as e:
        exc = RemoteError(f"{text} (could not unpickle the exception here: {e!r})")
    if not isinstance(exc, BaseException):
        exc = RemoteError(text or repr(exc))
    tb: TracebackType | None = None
    if tb_s is not None:
        try:
            tb = tblib.Traceback.from_dict(deserialize(tb_s)).as_traceback()
        except Exception:
            tb = None
    return exc.with_traceback(tb)
