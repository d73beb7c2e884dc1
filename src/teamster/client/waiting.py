"""``wait`` and ``as_completed``, with dask.distributed's semantics.

Both register callbacks on the futures' states in the client's event loop
(no coroutine, event or thread per future), so waiting on 10,000 futures
costs one callback each. ``as_completed(with_results=True)`` fetches the
values of futures that finished together in one gather per batch.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Iterable, Iterator
from numbers import Number
from typing import TYPE_CHECKING, Any, NamedTuple

from teamster.client import results
from teamster.client.future import Future, FutureState
from teamster.errors import FuturesCancelledError
from teamster.runtime.comm import deserialize

if TYPE_CHECKING:
    from teamster.client.client import Client

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "DoneAndNotDoneFutures",
           "as_completed", "until", "wait"]

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"


class DoneAndNotDoneFutures(NamedTuple):
    done: set[Future]
    not_done: set[Future]


async def until(states: list[FutureState], mode: str) -> None:
    """Return once ``states`` satisfy ``mode`` (ALL_COMPLETED, FIRST_COMPLETED or
    FIRST_EXCEPTION). Event-loop thread only: one callback per pending state,
    removed again if the wait is cancelled (a timeout), so polling a
    long-running future with short timeouts does not pile up callbacks."""
    unique = list(dict.fromkeys(states))
    pending = [st for st in unique if st.status == "pending"]
    if not pending:
        return
    if mode == FIRST_COMPLETED and len(pending) < len(unique):
        return
    if mode == FIRST_EXCEPTION and any(st.status in ("error", "cancelled") for st in unique):
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(pending)

    def waiter(st: FutureState) -> None:
        nonlocal remaining
        remaining -= 1
        if done.done():
            return
        if (remaining == 0 or mode == FIRST_COMPLETED
                or (mode == FIRST_EXCEPTION and st.status in ("error", "cancelled"))):
            done.set_result(None)

    for st in pending:
        st.add_waiter(waiter)
    try:
        await done
    finally:
        if remaining:
            for st in pending:
                st.remove_waiter(waiter)


def _timeout_seconds(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, str):
        from dask.utils import parse_timedelta

        return float(parse_timedelta(timeout, default="s"))
    if not isinstance(timeout, Number):
        raise TypeError("timeout= keyword received a non-numeric value.\n"
                        "Beware that wait expects a list of values\n"
                        "  Bad:  wait(x, y, z)\n  Good: wait([x, y, z])")
    return float(timeout)  # type: ignore[arg-type]


def _by_client(futures: Iterable[Future]) -> dict[Client, list[FutureState]]:
    groups: dict[Client, list[FutureState]] = {}
    for f in futures:
        if f._client is not None and f._state is not None:
            groups.setdefault(f._client, []).append(f._state)
    return groups


def wait(fs: Any, timeout: Any = None, return_when: str = ALL_COMPLETED
         ) -> DoneAndNotDoneFutures:
    """Block until all (or the first, or the first failed) futures are done.

    Returns ``(done, not_done)`` sets; raises ``TimeoutError`` after
    ``timeout`` seconds, and ``CancelledError`` if a done future was cancelled.
    """
    seconds = _timeout_seconds(timeout)
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or "
                         f"FIRST_EXCEPTION, not {return_when!r}")
    futures = results.futures_in(fs)
    groups = _by_client(futures)
    if len(groups) == 1:
        [(client, states)] = groups.items()
        client._wait_states(states, return_when, seconds)
    elif groups:
        _wait_several_clients(groups, return_when, seconds)
    done = {f for f in futures if f.status != "pending"}
    not_done = {f for f in futures if f.status == "pending"}
    cancelled = [f.key for f in futures if f.status == "cancelled"]
    if cancelled:
        raise FuturesCancelledError(cancelled, "cancelled")
    return DoneAndNotDoneFutures(done, not_done)


def _wait_several_clients(groups: dict[Client, list[FutureState]], return_when: str,
                          timeout: float | None) -> None:
    """Rare: futures of several clients. Wait per client; poll for FIRST_*."""
    deadline = None if timeout is None else time.monotonic() + timeout
    states = [st for group in groups.values() for st in group]

    def satisfied() -> bool:
        if return_when == FIRST_COMPLETED:
            return any(st.status != "pending" for st in states)
        if return_when == FIRST_EXCEPTION and any(
                st.status in ("error", "cancelled") for st in states):
            return True
        return all(st.status != "pending" for st in states)

    while not satisfied():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"wait did not complete within {timeout}s")
        for client, group in groups.items():
            if return_when == ALL_COMPLETED:
                client._wait_states(group, return_when, remaining)
            else:
                try:
                    client._wait_states(group, return_when, 0.05)
                except TimeoutError:
                    pass
            if satisfied():
                return


class _FetchFailed:
    """A with_results value that could not be gathered; raised by ``__next__``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class as_completed(Iterator[Any]):  # noqa: N801 - distributed's name
    """Iterate over futures in the order they complete (each input occurrence once).

    ``with_results=True`` yields ``(future, result)``; with ``raise_errors``
    (default) a failed future's exception is raised instead, otherwise its
    exception is the result. ``add``/``update`` add futures while iterating.
    """

    def __init__(self, futures: Iterable[Future] | None = None, loop: Any = None,
                 with_results: bool = False, raise_errors: bool = True, *,
                 timeout: Any = None) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        seconds = _timeout_seconds(timeout)
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._cond = threading.Condition()
        #: Completed and not yet yielded: futures, or (future, value blob) pairs.
        self._ready: collections.deque[Any] = collections.deque()
        #: Futures added and not completed yet.
        self._waiting = 0
        #: Bumped by ``clear``: completions of earlier futures are then ignored.
        self._generation = 0
        #: Per client: finished futures whose values one gather will fetch.
        self._to_fetch: dict[Client, list[Future]] = {}
        if futures is not None:
            self.update(futures)

    # -- adding ------------------------------------------------------------

    def update(self, futures: Iterable[Future]) -> None:
        futures = list(futures)
        for f in futures:
            if not isinstance(f, Future):
                raise TypeError(f"Input must be a future, got {f!r}")
        with self._cond:
            self._waiting += len(futures)
            generation = self._generation
        groups: dict[Client, list[Future]] = {}
        for f in futures:
            if f._client is None or f._state is None:
                raise ValueError(f"{f!r} is not bound to a client")
            groups.setdefault(f._client, []).append(f)
        for client, group in groups.items():
            client._loop.call_soon(self._track, client, group, generation)

    def add(self, future: Future) -> None:
        self.update((future,))

    def _track(self, client: Client, futures: list[Future], generation: int) -> None:
        """Loop thread: a callback per occurrence (duplicates are yielded as given)."""
        for f in futures:
            assert f._state is not None
            f._state.add_waiter(functools.partial(self._on_state_done, client, f, generation))

    def _on_state_done(self, client: Client, future: Future, generation: int,
                       _state: FutureState) -> None:
        self._on_done(client, future, generation)

    def _on_done(self, client: Client, future: Future, generation: int) -> None:
        if generation != self._generation:
            return
        if self.with_results and future.status == "finished":
            batch = self._to_fetch.setdefault(client, [])
            batch.append(future)
            if len(batch) == 1:  # first of a batch: fetch once the loop is idle
                client._loop.loop.create_task(self._fetch(client, generation))
        else:
            self._put(future, None, generation)

    async def _fetch(self, client: Client, generation: int) -> None:
        batch = self._to_fetch.pop(client, [])
        states = [f._state for f in batch if f._state is not None]
        try:
            data, _ = await client._gather_values(states, "skip")
        except Exception as exc:
            for f in batch:
                self._put(f, _FetchFailed(exc), generation)
            return
        for f in batch:
            self._put(f, data.get(f.key), generation)

    def _put(self, future: Future, value: Any, generation: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self._waiting -= 1
            self._ready.append((future, value) if self.with_results else future)
            self._cond.notify_all()

    # -- consuming -----------------------------------------------------------

    def __iter__(self) -> as_completed:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._ready:
                if self._waiting <= 0:
                    raise StopIteration
                remaining = None
                if self._deadline is not None:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("as_completed timed out")
                self._cond.wait(remaining)
            item = self._ready.popleft()
        return self._result(item)

    next = __next__

    def _result(self, item: Any) -> Any:
        if not self.with_results:
            return item
        future, value = item
        state = future._state
        if isinstance(value, _FetchFailed):
            if self.raise_errors:
                raise value.error
            return future, value.error
        if future.status == "finished":
            # None: the value was not fetched with the batch (its data moved); fetch it now.
            return future, deserialize(value) if value is not None else future.result()
        if future.status == "error":
            exc = state.exception()
            if self.raise_errors:
                state.raise_error()
            return future, exc
        return future, state.cancelled_error()

    def next_batch(self, block: bool = True) -> list[Any]:
        """Futures (or pairs) completed so far; with ``block``, at least one."""
        batch = [next(self)] if block else []
        while True:
            with self._cond:
                if not self._ready:
                    return batch
                item = self._ready.popleft()
            batch.append(self._result(item))

    def batches(self) -> Iterator[list[Any]]:
        """Yield lists of everything completed since the last yield."""
        while True:
            try:
                yield self.next_batch(block=True)
            except StopIteration:
                return

    def count(self) -> int:
        """Futures not yet yielded (still running, or done and waiting to be yielded)."""
        with self._cond:
            return self._waiting + len(self._ready)

    def is_empty(self) -> bool:
        return self.count() == 0

    def has_ready(self) -> bool:
        with self._cond:
            return bool(self._ready)

    def clear(self) -> None:
        with self._cond:
            self._generation += 1
            self._waiting = 0
            self._ready.clear()

    def __repr__(self) -> str:
        return f"<as_completed: waiting={self._waiting} done={len(self._ready)}>"
