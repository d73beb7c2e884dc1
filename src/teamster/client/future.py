"""Future: a thin, refcounted handle on a key; FutureState: what the client knows of it.

One ``FutureState`` per key the client holds, shared by every ``Future`` with
that key (like distributed). The client's event-loop thread is the only
writer of a state's status; user threads only read it. Nothing here blocks:
waiting is the client's job (``Client._wait_states``), done with callbacks
registered on the loop, so 10,000 futures nobody waits on cost no events.

Rules:
- A state changes status only on the loop thread, and fires its waiters
  right after, so a waiter can never miss a completion.
- A ``Future`` holds one reference on its key in the client's refcount; its
  ``__del__`` only queues the decrement (it may run in any thread, inside any
  lock, during garbage collection) and the loop applies it in order with the
  messages sent before, so a ``ReleaseKeys`` never overtakes the
  ``UpdateGraph`` that still needed the key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from dask.task_spec import TaskRef

from teamster.core.messages import Key, Serialized
from teamster.errors import CancelledError
from teamster.runtime.errors_payload import loads_exception
from teamster.runtime.task_payload import KeyRef

if TYPE_CHECKING:
    from teamster.client.client import Client

__all__ = ["Future", "FutureState"]

Status = Literal["pending", "finished", "error", "cancelled", "lost"]
Waiter = Callable[["FutureState"], None]


class FutureState:
    """The client's view of one key: status, where the data is, or the error."""

    __slots__ = ("key", "status", "who_has", "nbytes", "type_name", "_error",
                 "_exception", "_traceback", "_cancelled", "waiters")

    def __init__(self, key: Key, status: Status = "pending") -> None:
        self.key = key
        #: "pending" until the scheduler reports the key; then final unless a
        #: gather finds the data gone (back to "pending" until reported again).
        self.status: Status = status
        #: Workers holding the value, from ``KeyInMemory`` (gather reads one of them).
        self.who_has: tuple[str, ...] = ()
        self.nbytes = 0
        #: Name of the result's type, for ``repr``.
        self.type_name = ""
        #: (exception, traceback, text) blobs from ``KeyErred``, decoded on first use.
        self._error: tuple[Serialized | None, Serialized | None, str] | None = None
        #: The decoded exception (its ``__traceback__`` is the remote traceback).
        self._exception: BaseException | None = None
        #: The remote traceback as decoded; raising the exception again prepends
        #: local frames to ``__traceback__``, so the pristine one is kept here.
        self._traceback: TracebackType | None = None
        #: Why the state was cancelled (the CancelledError is built on demand).
        self._cancelled: str | None = None
        #: Callbacks for the next completion; loop thread only. None when empty
        #: (most states never get one).
        self.waiters: list[Waiter] | None = None

    # -- loop thread only --------------------------------------------------

    def finish(self, who_has: tuple[str, ...], nbytes: int, type_name: str) -> None:
        self.who_has = who_has
        self.nbytes = nbytes
        self.type_name = type_name
        if self.status == "pending":
            self.status = "finished"
            self._fire()

    def set_error(self, exception: Serialized | None, traceback: Serialized | None,
                  text: str) -> None:
        if self.status in ("pending", "finished"):
            self._error = (exception, traceback, text)
            self._exception = None
            self.status = "error"
            self._fire()

    def cancel(self, reason: str) -> None:
        if self.status != "cancelled":
            # The reason only: every released state is cancelled (10,000 at a
            # time after a map), and almost none is ever asked for its error.
            self._cancelled = reason
            self.status = "cancelled"
            self._fire()

    def reset(self) -> None:
        """The data is gone; wait for the scheduler to report the key again."""
        if self.status == "finished":
            self.status = "pending"
            self.who_has = ()

    def add_waiter(self, waiter: Waiter) -> None:
        """Call ``waiter(self)`` once the state is done (now, if it already is)."""
        if self.status != "pending":
            waiter(self)
        elif self.waiters is None:
            self.waiters = [waiter]
        else:
            self.waiters.append(waiter)

    def remove_waiter(self, waiter: Waiter) -> None:
        if self.waiters is not None:
            try:
                self.waiters.remove(waiter)
            except ValueError:
                pass

    def _fire(self) -> None:
        waiters, self.waiters = self.waiters, None
        if waiters:
            for waiter in waiters:
                waiter(self)

    # -- any thread --------------------------------------------------------

    def done(self) -> bool:
        return self.status != "pending"

    def exception(self) -> BaseException | None:
        """The remote exception (with its traceback) if the task erred, else None."""
        if self.status != "error":
            return None
        exc = self._exception
        if exc is None and self._error is not None:
            exc = loads_exception(*self._error)
            self._traceback = exc.__traceback__
            self._exception = exc
        return exc

    def traceback(self) -> TracebackType | None:
        return self._traceback if self.exception() is not None else None

    def cancelled_error(self) -> CancelledError:
        return CancelledError(self.key, self._cancelled or "cancelled")

    def raise_error(self) -> None:
        """Raise this state's exception (erred) or CancelledError (cancelled)."""
        if self.status == "cancelled":
            raise self.cancelled_error()
        exc = self.exception()
        if exc is not None:
            # with_traceback drops what earlier raises of this object prepended.
            raise exc.with_traceback(self._traceback)

    def __repr__(self) -> str:
        return f"<FutureState {self.key!r}: {self.status}>"


class Future(TaskRef, KeyRef):
    """A remotely running computation, as in dask.distributed.

    Subclasses dask's ``TaskRef`` (so dask graph code recognises it) and
    teamster's ``KeyRef`` (so pickling a task's arguments turns it into a
    dependency). Equality and hashing are by identity, as in distributed.
    """

    __slots__ = ("_client", "_state", "_released", "__weakref__")

    key: Key
    _client: Client | None
    _state: FutureState | None

    def __init__(self, key: Key, client: Client | None = None) -> None:
        """Bind to ``client`` (default: the default client) and hold ``key`` there.

        For users and unpickling; the client builds its futures with ``_make``.
        """
        self.key = key
        self._released = False
        self._client = None
        self._state = None
        if client is None:
            from teamster.client.client import default_client_or_none

            client = default_client_or_none()
        if client is not None:
            self._state = client._bind_key(key)
            self._client = client

    @classmethod
    def _make(cls, key: Key, client: Client, state: FutureState) -> Future:
        """A future whose key reference the caller already counted."""
        f = cls.__new__(cls)
        f.key = key
        f._client = client
        f._state = state
        f._released = False
        return f

    # -- status ------------------------------------------------------------

    @property
    def client(self) -> Client | None:
        return self._client

    @property
    def executor(self) -> Client | None:
        return self._client

    @property
    def status(self) -> Status | None:
        return self._state.status if self._state is not None else None

    @property
    def type(self) -> str | None:
        """Name of the result's type once known (distributed gives the type itself)."""
        st = self._state
        return st.type_name or None if st is not None else None

    def done(self) -> bool:
        return self._state is not None and self._state.status != "pending"

    def cancelled(self) -> bool:
        return self._state is not None and self._state.status == "cancelled"

    # -- results -----------------------------------------------------------

    def _bound(self) -> tuple[Client, FutureState]:
        if self._client is None or self._state is None:
            raise RuntimeError(
                f"{self!r} is not bound to a client (unpickled where no Client exists?)"
            )
        return self._client, self._state

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its value; raise its exception if it failed.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``CancelledError``
        if the future was cancelled.
        """
        client, state = self._bound()
        return client._gather_states([state], "raise", timeout)[self.key]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception of a failed task (None if it succeeded or was cancelled)."""
        client, state = self._bound()
        client._wait_states([state], "ALL_COMPLETED", timeout)
        return state.exception()

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        """The remote traceback of a failed task (None otherwise)."""
        client, state = self._bound()
        client._wait_states([state], "ALL_COMPLETED", timeout)
        return state.traceback()

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(self)`` once the future finishes, errs or is cancelled.

        Runs in the client's callback thread (never the event loop: a
        callback that calls ``result()`` must not deadlock); exceptions are logged.
        """
        client, _ = self._bound()
        client._add_done_callback(self, fn)

    def cancel(self, reason: str | None = None, **kwargs: Any) -> None:
        client, _ = self._bound()
        client.cancel([self], reason=reason)

    def release(self) -> None:
        """Drop this future's hold on the key (the data is freed once no future holds it)."""
        if not self._released:
            self._released = True
            client = self._client
            if client is not None:
                client._release_ref(self.key)

    # -- identity, pickling, repr --------------------------------------------

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebinds to the default client where it is unpickled. (Inside task
        # arguments a future never gets here: it becomes a dependency.)
        return Future, (self.key,)

    def __dask_tokenize__(self) -> tuple[str, Key]:
        # By key, so a pure task on the same future gets the same key.
        return ("teamster.Future", self.key)

    def __del__(self) -> None:
        try:
            if self._released:
                return
        except AttributeError:  # never initialised (Future.__new__ alone)
            return
        try:
            self.release()
        except Exception:
            if not sys.is_finalizing():
                raise

    def __str__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        type_name = self.type
        if type_name:
            return f"<Future: {self.status}, type: {type_name}, key: {self.key}>"
        return f"<Future: {self.status}, key: {self.key}>"
