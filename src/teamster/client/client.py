"""Client: dask.distributed's futures API on teamster's wire protocol.

A user changes one import. ``submit``/``map`` turn calls into ``TaskSpec``s
(one ``UpdateGraph`` per call), the scheduler reports each wanted key back
(``KeyInMemory``, ``KeyErred``, ``KeyCancelled``), and ``gather`` fetches
values straight from the workers that hold them.

Threads and ownership:
- User threads build messages, futures and states and post them to the
  outbox (``LoopThread``); they never wait for the loop unless the call
  itself waits (result, gather, wait, cancel, scatter, run, queries).
- The loop thread owns the scheduler connection and every status change
  of a ``FutureState``; it applies future releases in outbox order.
- ``_lock`` guards ``refcount`` and the key -> state map against the
  release drain. It is never taken in ``Future.__del__``.
- Done callbacks run in a separate callback thread, so a callback may call
  ``result()`` (on the loop thread that would deadlock).

Losing the scheduler connection (the scheduler still alive): the client
reconnects with backoff for up to ``reconnect_timeout`` seconds, keeping its
futures pending and its outbox queued meanwhile. Once back it wants all its
keys again (the scheduler repeats the outcome of finished ones, and
recomputes lost data it still has the lineage of), then asks which keys the
scheduler no longer knows: those futures fail with a message that says so.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from teamster.client import results
from teamster.client.cluster_ops import ClusterOperations
from teamster.client.dask_collections import (
    DaskCollections,
    install_dask_default,
    uninstall_dask_default,
)
from teamster.client.future import Future, FutureState
from teamster.client.loop import LoopThread
from teamster.client.specs import TaskBuilder, normalize_resources, normalize_workers
from teamster.client.transfer import WorkerConnections, gather_values
from teamster.client.waiting import until
from teamster.core import messages as m
from teamster.core.messages import Key, Serialized
from teamster.errors import ClosedClientError
from teamster.runtime.comm import BatchedSend, Comm, CommClosedError, connect, deserialize
from teamster.security import Security, security_for_client

__all__ = ["Client", "default_client", "default_client_or_none"]

logger = logging.getLogger("teamster.client")

#: Marks a future release in the outbox: (_RELEASE, key).
_RELEASE = object()
#: Seconds to connect to a worker. ``connect`` retries refused connections
#: until its timeout, so this is also how long a gather spends on a holder that
#: died before the scheduler re-reports the key elsewhere; a live but slow
#: worker is simply tried again in the next gather round.
_WORKER_CONNECT_TIMEOUT = 3.0
#: Requests that change nothing on the scheduler: asked again after a
#: reconnection instead of failing with the lost connection. (Others, like
#: retire_workers, may have taken effect: the caller is told and decides.)
_READ_ONLY_REQUESTS = frozenset({"who_has", "scheduler_info", "balance_report"})

#: Clients created with set_as_default=True, newest last.
_default_clients: list[Client] = []
#: Every open client, closed at interpreter exit.
_open_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def default_client_or_none() -> Client | None:
    for client in reversed(_default_clients):
        if client.status == "running":
            return client
    return None


def default_client(c: Client | None = None) -> Client:
    """The given client, else the newest running default client."""
    client = c or default_client_or_none()
    if client is None:
        raise ValueError("No clients found. Start a client and point it to the scheduler: "
                         "Client('tcp://scheduler-host:8786')")
    return client


class Client(ClusterOperations, DaskCollections):
    """Connect to a teamster scheduler and run work on its workers.

    ``address`` is "tcp://host:port" (or "tls://..."), an object with
    ``.scheduler_address`` (a ``LocalCluster``), or None to start a
    ``LocalCluster(**kwargs)`` that this client owns and closes. With
    ``set_as_default`` (the default) it is also dask's scheduler until it
    closes: ``x.compute()`` runs here.

    Credentials: ``token=`` or ``security=teamster.Security(...)``; without
    them a cluster object's own (``Client(cluster)``), then those of a
    LocalCluster this process started at ``address``, then the token in
    ``TEAMSTER_TOKEN``. A wrong or missing token raises
    ``teamster.errors.AuthenticationError`` at once.
    """

    #: dask checks this before using a client as its scheduler; always False.
    asynchronous = False

    def __init__(self, address: Any = None, loop: Any = None, timeout: float = 10,
                 set_as_default: bool = True, name: str | None = None,
                 asynchronous: bool = False, direct_to_workers: bool | None = None,
                 security: Security | None = None, token: str | None = None,
                 reconnect_timeout: float = 30.0, **kwargs: Any) -> None:
        if asynchronous:
            raise ValueError("teamster's Client is synchronous: asynchronous=True is not "
                             "supported; call it from a thread (asyncio.to_thread) instead")
        #: "newly-created" -> "running" -> "closing" -> "closed".
        self.status = "newly-created"
        self.id = f"client-{uuid.uuid4().hex[:12]}"
        self.name = name or self.id
        self._cluster: Any = None
        self._owns_cluster = False
        if address is None:
            from teamster.cluster.local import LocalCluster

            if security is not None:
                kwargs["security"] = security
            address = self._cluster = LocalCluster(**kwargs)
            self._owns_cluster = True
        elif kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        if not isinstance(address, str):
            if not hasattr(address, "scheduler_address"):
                raise TypeError("Client(address) takes 'tcp://host:port' or a cluster with a "
                                f".scheduler_address, not {type(address).__name__}")
            self._cluster = self._cluster or address
            address = address.scheduler_address
        if "://" not in address:
            address = f"tcp://{address}"
        self.scheduler_address: str = address
        #: Credentials for the scheduler and the workers (never sent anywhere).
        self.security = security_for_client(address, security, token,
                                            getattr(self._cluster, "security", None))
        self._timeout = timeout
        #: Seconds to keep trying to reach the scheduler after losing the connection.
        self.reconnect_timeout = reconnect_timeout
        #: How many times the scheduler connection was re-established.
        self.reconnections = 0
        #: Set while the scheduler connection is up (cleared while reconnecting).
        self._connected: asyncio.Event | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        #: Wanted key -> the UpdateGraph that submitted it, until the scheduler
        #: reports the key: a graph lost with a dropped connection is sent
        #: again after reconnecting. Loop thread only.
        self._submitted_by: dict[Key, m.UpdateGraph] = {}
        #: key -> the state every future of that key shares. Written under _lock
        #: (user threads and the release drain); read freely by the loop.
        self.futures: dict[Key, FutureState] = {}
        #: key -> number of live (unreleased) Future objects.
        self.refcount: dict[Key, int] = {}
        self._lock = threading.RLock()
        self._builder = TaskBuilder()
        self._counter = itertools.count()
        self._request_ids = itertools.count(1)
        self._scatter_offset = 0
        self._replies: dict[int, asyncio.Future[m.Reply]] = {}
        #: The read-only requests among them, to ask again after a reconnection.
        self._read_only: dict[int, m.Request] = {}
        self._comm: Comm | None = None
        self._bsend: BatchedSend | None = None
        self._reader: asyncio.Task[None] | None = None
        self._callbacks: ThreadPoolExecutor | None = None
        self._close_lock = threading.Lock()
        handshake = {"role": "client", "client_id": self.id}
        self._handshake = handshake
        self._workers = WorkerConnections(handshake, min(_WORKER_CONNECT_TIMEOUT, timeout),
                                          security=self.security)
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.KeyInMemory: self._on_key_in_memory,
            m.KeyErred: self._on_key_erred,
            m.KeyCancelled: self._on_key_cancelled,
            m.Reply: self._on_reply,
            m.Shutdown: self._on_shutdown,
        }
        self._loop = LoopThread(f"teamster-{self.id}", self._drain)
        try:
            self._loop.run(self._start())
        except BaseException:
            self._loop.stop()
            self.status = "closed"
            if self._owns_cluster:
                self._cluster.close()
            raise
        self.status = "running"
        _open_clients.add(self)
        if set_as_default:
            _default_clients.append(self)
            install_dask_default(self)

    # ------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        self._connected = asyncio.Event()
        await self._connect(self._timeout)

    async def _connect(self, timeout: float) -> None:
        comm = await connect(self.scheduler_address, handshake=self._handshake,
                             timeout=timeout, security=self.security)
        self._comm = comm
        self._bsend = BatchedSend(interval=0.002)
        self._bsend.start(comm)
        self._reader = asyncio.get_running_loop().create_task(self._read_scheduler(comm))
        assert self._connected is not None
        self._connected.set()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = 10) -> None:
        """Release every future (pending ones end up cancelled) and disconnect. Idempotent."""
        with self._close_lock:
            if self.status == "closed" or self._comm is None:
                self.status = "closed"
                return
            self.status = "closing"
            try:
                self._loop.run(self._close(), timeout)
            except Exception as exc:
                logger.info("Closing %s did not finish cleanly: %r", self.id, exc)
            finally:
                self._loop.stop()
                self.status = "closed"
                _open_clients.discard(self)
                was_default = self in _default_clients
                while self in _default_clients:
                    _default_clients.remove(self)
                if was_default:
                    uninstall_dask_default(self, default_client_or_none())
                if self._callbacks is not None:
                    self._callbacks.shutdown(wait=False)
                if self._owns_cluster:
                    self._cluster.close()

    async def _close(self) -> None:
        self._loop.drain_now()  # what was submitted before close goes out first
        with self._lock:
            keys = list(dict.fromkeys([*self.refcount, *self.futures]))
            states = list(self.futures.values())
            self.futures.clear()
            self.refcount.clear()
        for st in states:
            st.cancel("client-closed")
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        bsend = self._bsend
        if bsend is not None:
            if keys:
                bsend.send(m.ReleaseKeys(self.id, tuple(keys), self._stimulus("close")))
            # Goodbye: the scheduler drops this client now rather than after
            # the grace period it grants to clients that may reconnect.
            bsend.send(m.RemoveClient(self.id, 0.0, self._stimulus("goodbye")))
            try:
                await asyncio.wait_for(bsend.close(), 5)
            except (TimeoutError, OSError, CommClosedError):
                bsend.abort()
        if self._reader is not None:
            self._reader.cancel()
        await self._workers.close()
        self._fail_replies(ClosedClientError(f"{self.id} is closed"))

    def _check_running(self) -> None:
        if self.status != "running":
            raise ClosedClientError(f"{self.id} is {self.status}; create a new Client")

    def _stimulus(self, what: str) -> str:
        return f"{what}-{self.id}-{next(self._counter)}"

    def __repr__(self) -> str:
        return f"<Client: {self.id!r} scheduler={self.scheduler_address!r} status={self.status}>"

    @classmethod
    def current(cls) -> Client:
        return default_client()

    # ------------------------------------------------- scheduler stream (loop)

    async def _read_scheduler(self, comm: Comm) -> None:
        handlers = self._handlers
        try:
            while True:
                batch = await comm.recv()
                for msg in batch if isinstance(batch, (tuple, list)) else (batch,):
                    handler = handlers.get(type(msg))
                    if handler is None:
                        logger.debug("%s ignores %r", self.id, msg)
                        continue
                    try:
                        handler(msg)
                    except Exception:
                        logger.exception("%s failed to handle %r", self.id, msg)
        except (CommClosedError, OSError) as exc:
            if self.status == "running":
                self._on_scheduler_lost(exc)
        except Exception as exc:  # a bug here must not leave every waiter hanging
            logger.exception("%s stopped reading from the scheduler", self.id)
            if self.status == "running":
                self._on_scheduler_lost(exc)

    def _on_scheduler_lost(self, exc: BaseException) -> None:
        """Reconnect in the background; futures stay pending, the outbox waits."""
        if self._reconnecting is not None and not self._reconnecting.done():
            return
        assert self._connected is not None
        self._connected.clear()
        if self._bsend is not None:
            self._bsend.abort()
        # Replies to requests sent on the lost connection will never come:
        # read-only ones are asked again once reconnected, the rest fail.
        self._fail_replies(ClosedClientError(f"lost the scheduler connection: {exc}"),
                           keep=self._read_only)
        if self.reconnect_timeout <= 0:
            self._give_up(exc)
            return
        logger.warning("%s lost its scheduler %s (%s); reconnecting for up to %ss", self.id,
                       self.scheduler_address, exc, self.reconnect_timeout)
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(exc))

    async def _reconnect(self, exc: BaseException) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while self.status == "running":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._give_up(exc)
                return
            try:
                await self._connect(min(self._timeout, max(remaining, 0.1)))
            except (TimeoutError, OSError, CommClosedError) as err:
                logger.info("%s could not reconnect yet: %s", self.id, err)
                await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
                delay = min(delay * 2, 2.0)
                continue
            self.reconnections += 1
            logger.warning("%s reconnected to %s", self.id, self.scheduler_address)
            try:
                await self._register_again()
            except (ClosedClientError, CommClosedError, OSError) as err:
                logger.info("%s lost the scheduler again while re-registering: %s",
                            self.id, err)
            return

    async def _register_again(self) -> None:
        """Want every held key again, then fail those the scheduler forgot meanwhile."""
        with self._lock:
            keys = [k for k, st in self.futures.items() if st.status != "cancelled"]
        assert self._bsend is not None
        if keys:
            self._bsend.send(m.UpdateGraph(self.id, (), tuple(keys), 0.0,
                                           self._stimulus("reconnect")))
        for request in self._read_only.values():
            self._bsend.send(request)
        self._loop.drain_now()  # then what was queued while disconnected
        if not keys:
            return
        unknown = await self._request("unknown_keys", {"keys": keys})
        # Graphs that never arrived (lost in the dropped connection's buffers)
        # go again, in their original order, wanting only keys still held.
        graphs = list({id(g): g for k in unknown
                       if (g := self._submitted_by.get(k)) is not None}.values())
        if graphs:
            order: dict[int, int] = {}
            for g in self._submitted_by.values():  # (insertion order: submission order)
                order.setdefault(id(g), len(order))
            graphs.sort(key=lambda g: order[id(g)])
            for g in graphs:
                wanted = tuple(k for k in g.wanted if k in self.futures)
                self._bsend.send(dataclasses.replace(g, wanted=wanted))
            resent = {k for g in graphs for k in g.wanted}
            logger.info("%s sent %d graph(s) again after reconnecting", self.id, len(graphs))
            unknown = [k for k in unknown if k not in resent]
        for key in unknown:
            st = self.futures.get(key)
            if st is not None:
                st.set_error(None, None, (
                    f"The scheduler no longer knows {key!r}: it was released or lost while "
                    f"this client was disconnected from {self.scheduler_address} (or its "
                    "submission was lost with the connection). Submit it again."))

    def _give_up(self, exc: BaseException) -> None:
        """Reconnecting failed: fail everything that waits, refuse new work."""
        logger.warning("%s lost its scheduler %s: %s", self.id, self.scheduler_address, exc)
        self._stop("scheduler-connection-lost", f"lost the scheduler connection: {exc}")

    def _on_shutdown(self, msg: m.Shutdown) -> None:
        """The scheduler is closing: there is nothing to reconnect to."""
        logger.info("%s: its scheduler %s closed", self.id, self.scheduler_address)
        self._stop("scheduler-closed", f"the scheduler {self.scheduler_address} closed")

    def _stop(self, reason: str, message: str) -> None:
        """Fail everything that waits and refuse new work."""
        self.status = "closing"
        for st in list(self.futures.values()):
            if st.status == "pending":
                st.cancel(reason)
        self._fail_replies(ClosedClientError(message))

    def _fail_replies(self, exc: BaseException, keep: Mapping[int, Any] | None = None) -> None:
        """Fail the requests awaiting a reply, except those in ``keep``."""
        replies = self._replies
        keep = keep or {}
        self._replies = {rid: fut for rid, fut in replies.items() if rid in keep}
        for rid, fut in replies.items():
            if rid not in keep and not fut.done():
                fut.set_exception(exc)

    def _on_key_in_memory(self, msg: m.KeyInMemory) -> None:
        self._submitted_by.pop(msg.key, None)
        st = self.futures.get(msg.key)
        if st is not None:  # None: no future holds the key any more
            st.finish(tuple(msg.who_has), msg.nbytes, msg.type_name)

    def _on_key_erred(self, msg: m.KeyErred) -> None:
        self._submitted_by.pop(msg.key, None)
        st = self.futures.get(msg.key)
        if st is not None:
            st.set_error(msg.exception, msg.traceback, msg.exception_text)

    def _on_key_cancelled(self, msg: m.KeyCancelled) -> None:
        st = self.futures.get(msg.key)
        if st is not None:
            st.cancel(msg.reason)

    def _on_reply(self, msg: m.Reply) -> None:
        fut = self._replies.pop(msg.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _request(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Ask the scheduler (in order with everything sent before) and await the reply."""
        connected = self._connected
        if self.status == "running" and connected is not None and not connected.is_set():
            try:  # reconnecting: wait for it rather than fail at once
                await asyncio.wait_for(connected.wait(), self.reconnect_timeout)
            except TimeoutError:
                pass
        if self.status != "running" or self._bsend is None or self._bsend.closed():
            raise ClosedClientError(f"{self.id} is {self.status}: cannot ask the scheduler")
        rid = next(self._request_ids)
        fut: asyncio.Future[m.Reply] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        request = m.Request(rid, op, args or {}, self._stimulus(op))
        if op in _READ_ONLY_REQUESTS:
            self._read_only[rid] = request
        self._loop.outbox.append(request)
        self._loop.drain_now()
        try:
            reply = await fut
        finally:
            self._replies.pop(rid, None)
            self._read_only.pop(rid, None)
        if not reply.ok:
            raise RuntimeError(f"the scheduler could not answer {op!r}: {reply.result}")
        return reply.result

    # ------------------------------------------------------ outbox and refcounts

    def _drain(self, outbox: deque[Any]) -> None:
        """Send queued messages in order, turning releases into ReleaseKeys (loop thread)."""
        if self._connected is not None and not self._connected.is_set():
            return  # reconnecting: the outbox waits, in order
        msgs: list[Any] = []
        released: list[Key] = []
        with self._lock:
            while outbox:
                item = outbox.popleft()
                if type(item) is tuple:  # (_RELEASE, key)
                    if self._decref(item[1]):
                        released.append(item[1])
                        self._submitted_by.pop(item[1], None)
                    continue
                if type(item) is m.UpdateGraph and item.tasks:
                    for key in item.wanted:
                        self._submitted_by[key] = item
                if released:
                    msgs.append(m.ReleaseKeys(self.id, tuple(released),
                                              self._stimulus("release")))
                    released = []
                msgs.append(item)
        if released:
            msgs.append(m.ReleaseKeys(self.id, tuple(released), self._stimulus("release")))
        if msgs and self._bsend is not None:
            self._bsend.send(*msgs)

    def _decref(self, key: Key) -> bool:
        """One future of ``key`` is gone; True if it was the last (lock held)."""
        n = self.refcount.get(key, 0) - 1
        if n > 0:
            self.refcount[key] = n
            return False
        if self.refcount.pop(key, None) is None:
            return False  # already released (client closed, or a double release)
        st = self.futures.pop(key, None)
        if st is not None:
            st.cancel("released")  # only explicit .release() callers can still see it
        return True

    def _release_ref(self, key: Key) -> None:
        """Called by ``Future.release``/``__del__`` from any thread: never blocks."""
        if self.status in ("running", "closing"):
            self._loop.post((_RELEASE, key))

    def _hold(self, key: Key) -> tuple[FutureState, bool]:
        """The state for ``key`` with one more reference; True if it is new (lock held)."""
        st = self.futures.get(key)
        new = st is None or st.status == "cancelled"
        if new:
            st = self.futures[key] = FutureState(key)
        self.refcount[key] = self.refcount.get(key, 0) + 1
        return st, new  # type: ignore[return-value]

    def _bind_key(self, key: Key) -> FutureState:
        """For ``Future(key)``: hold an existing key; ask the scheduler to report it."""
        self._check_running()
        with self._lock:
            st, new = self._hold(key)
        if new:
            self._loop.post(m.UpdateGraph(self.id, (), (key,), 0.0, self._stimulus("want")))
        return st

    # ------------------------------------------------------------ submit, map

    def _check_submittable(self, func: Any, what: str, actor: bool) -> None:
        if not callable(func):
            raise TypeError(f"First input to {what} must be a callable function")
        self._check_running()
        if actor:
            raise ValueError("teamster has no actors; submit a function instead")

    def submit(self, func: Callable[..., Any], *args: Any, key: Key | None = None,
               workers: Any = None, resources: Mapping[str, float] | None = None,
               retries: int | None = None, priority: int = 0, fifo_timeout: Any = None,
               allow_other_workers: bool = False, actor: bool = False, actors: bool = False,
               pure: bool = True, **kwargs: Any) -> Future:
        """Run ``func(*args, **kwargs)`` on a worker; return its Future at once."""
        self._check_submittable(func, "submit", actor or actors)
        workers_t, resources_t = self._placement(workers, allow_other_workers, resources)
        entry = self._builder.function(func)
        if key is None:
            key = self._builder.submit_key(entry, args, kwargs, pure)
        with self._lock:
            st = self.futures.get(key)
            if st is not None and st.status != "cancelled":
                self.refcount[key] = self.refcount.get(key, 0) + 1  # same key: share it
                return Future._make(key, self, st)
        run_spec, deps = self._builder.run_spec(entry, args, kwargs)
        stimulus_id = self._stimulus("submit")
        spec = m.TaskSpec(key, run_spec, deps, (priority, 0), workers_t,
                          bool(allow_other_workers), resources_t, retries or 0, stimulus_id)
        with self._lock:
            self._check_running()
            st, _ = self._hold(key)
            future = Future._make(key, self, st)
        self._loop.post(m.UpdateGraph(self.id, (spec,), (key,), 0.0, stimulus_id))
        return future

    @staticmethod
    def _placement(workers: Any, allow_other_workers: Any, resources: Any
                   ) -> tuple[tuple[str, ...] | None, tuple[tuple[str, float], ...] | None]:
        if allow_other_workers not in (True, False, None):
            raise TypeError("allow_other_workers= must be True or False")
        if allow_other_workers and workers is None:
            raise ValueError("Only use allow_other_workers= if using workers=")
        return normalize_workers(workers), normalize_resources(resources)

    def map(self, func: Callable[..., Any], *iterables: Iterable[Any],
            key: str | list[Key] | None = None, workers: Any = None,
            retries: int | None = None, resources: Mapping[str, float] | None = None,
            priority: int = 0, allow_other_workers: bool = False, fifo_timeout: Any = None,
            actor: bool = False, actors: bool = False, pure: bool = True,
            batch_size: int | None = None, **kwargs: Any) -> list[Future]:
        """``submit`` over zipped iterables as ONE graph update; futures in input order."""
        self._check_submittable(func, "map", actor or actors)
        workers_t, resources_t = self._placement(workers, allow_other_workers, resources)
        # Shortest iterable wins, as with zip (distributed does the same).
        calls = list(zip(*(it if isinstance(it, (list, tuple)) else list(it)  # noqa: B905
                           for it in iterables)))
        if not calls:
            return []
        if batch_size and batch_size > 0 and len(calls) > batch_size:
            out: list[Future] = []
            keys_list = key if isinstance(key, list) else None
            for start in range(0, len(calls), batch_size):
                part = calls[start:start + batch_size]
                part_key = keys_list[start:start + batch_size] if keys_list else key
                out += self.map(func, *zip(*part, strict=True), key=part_key, workers=workers,
                                retries=retries, resources=resources, priority=priority,
                                allow_other_workers=allow_other_workers, pure=pure, **kwargs)
            return out
        builder = self._builder
        entry = builder.function(func)
        keys = builder.map_keys(entry, calls, kwargs, key, pure)
        stimulus_id = self._stimulus("map")
        aow, retries_i = bool(allow_other_workers), retries or 0
        held = self.futures
        TaskSpec, dumps = m.TaskSpec, builder.run_spec

        def spec(i: int) -> m.TaskSpec:
            run_spec, deps = dumps(entry, calls[i], kwargs)
            return TaskSpec(keys[i], run_spec, deps, (priority, i), workers_t, aow,
                            resources_t, retries_i, stimulus_id)

        # Pickle outside the lock (the loop's release drain waits on it).
        specs: dict[Key, m.TaskSpec] = {}
        for i, k in enumerate(keys):
            if k not in specs:
                st = held.get(k)
                if st is None or st.status == "cancelled":
                    specs[k] = spec(i)
        make = Future._make
        futures: list[Future] = []
        with self._lock:
            self._check_running()
            for i, k in enumerate(keys):
                st, new = self._hold(k)
                if new and k not in specs:  # released since we looked: needs a spec after all
                    specs[k] = spec(i)
                futures.append(make(k, self, st))
        if specs:
            wanted = tuple(dict.fromkeys(keys))
            self._loop.post(m.UpdateGraph(self.id, tuple(specs.values()), wanted, 0.0,
                                          stimulus_id))
        return futures

    # ------------------------------------------------------------ waiting (loop)

    def _wait_states(self, states: list[FutureState], mode: str,
                     timeout: float | None) -> None:
        """Block until ``states`` satisfy ``mode``; TimeoutError after ``timeout``."""
        if all(st.status != "pending" for st in states):
            return
        self._loop.run(until(states, mode), timeout)

    def _add_done_callback(self, future: Future, fn: Callable[[Future], Any]) -> None:
        state = future._state
        assert state is not None

        def run_callback() -> None:
            try:
                fn(future)
            except BaseException:
                logger.exception("Error in callback %s of %s", fn, future)

        def on_done(_st: FutureState) -> None:
            if self._callbacks is None:
                self._callbacks = ThreadPoolExecutor(1, thread_name_prefix="teamster-callback")
            try:
                self._callbacks.submit(run_callback)
            except RuntimeError:  # closed client: run it here rather than never
                run_callback()

        try:
            self._loop.call_soon(state.add_waiter, on_done)
        except ClosedClientError:
            if state.done():  # a closed client's futures are all done (cancelled)
                run_callback()

    # ------------------------------------------------------------ gather

    def gather(self, futures: Any, errors: str = "raise", direct: bool | None = None,
               asynchronous: bool | None = None) -> Any:
        """Values of futures, in the same (nested list/tuple/set/dict) structure."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors= must be 'raise' or 'skip', not {errors!r}")
        if isinstance(futures, Iterator):
            return (self.gather(f, errors=errors) for f in futures)
        found = results.futures_in(futures)
        for f in found:
            if f._client is not self:
                raise ValueError(f"{f!r} belongs to another client; gather it there")
        states = [f._state for f in found if f._state is not None]
        values = self._gather_states(states, errors, None) if states else {}
        return results.pack(futures, values, errors == "skip")

    def _gather_states(self, states: list[FutureState], errors: str,
                       timeout: float | None) -> dict[Key, Any]:
        if errors == "raise":  # no round trip to learn what we know (also once closed)
            for st in states:
                if st.status in ("error", "cancelled"):
                    st.raise_error()
        self._check_running()
        data, bad = self._loop.run(self._gather_values(states, errors), timeout)
        if bad and errors == "raise":
            bad[0].raise_error()
        return {key: deserialize(blob) for key, blob in data.items()}

    async def _gather_values(self, states: list[FutureState], errors: str
                             ) -> tuple[dict[Key, Serialized], list[FutureState]]:
        return await gather_values(self._workers, states, errors, self._locate,
                                   self._stimulus("gather"))

    async def _locate(self, keys: list[Key]) -> dict[Key, Any]:
        """{key: holders} from the scheduler, for data a holder no longer had."""
        where: dict[Key, Any] = await self._request("who_has", {"keys": keys})
        return where

    # ------------------------------------------------------------ cancel

    def cancel(self, futures: Any, asynchronous: bool | None = None, force: bool = False,
               reason: str | None = None, msg: str | None = None) -> None:
        """Cancel futures (and, on the scheduler, this client's dependents of them)."""
        found = results.futures_in(futures)
        if not found or self.status != "running":
            return
        states = list(dict.fromkeys(f._state for f in found if f._state is not None))
        self._loop.run(self._cancel(states, reason or "cancelled"))

    async def _cancel(self, states: list[FutureState], reason: str) -> None:
        keys = tuple(dict.fromkeys(st.key for st in states))
        self._loop.outbox.append(m.CancelKeys(self.id, keys, self._stimulus("cancel")))
        self._loop.drain_now()
        with self._lock:
            for st in states:
                if self.futures.get(st.key) is st:
                    del self.futures[st.key]  # later reports of the key are not for it
        for st in states:
            if st.status != "cancelled":
                st.cancel(reason)


@atexit.register
def _close_all_clients() -> None:
    for client in list(_open_clients):
        try:
            client.close(timeout=2)
        except Exception:  # exiting anyway
            pass
