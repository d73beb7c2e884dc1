"""Client operations on the cluster rather than on tasks: scatter, run, queries.

A base class of ``Client`` (kept apart so each file stays one concept and
readable). Scatter and run talk to workers directly, each worker once per
call and all workers concurrently; the scheduler learns about scattered
data from one ``ScatteredData`` message sent after the workers confirmed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dask.base import tokenize

from teamster.client import results
from teamster.client.future import Future, FutureState
from teamster.client.transfer import put_data
from teamster.core import messages as m
from teamster.core.messages import Key, Serialized
from teamster.runtime.comm import deserialize, serialize

if TYPE_CHECKING:
    import threading

    from teamster.client.loop import LoopThread
    from teamster.client.transfer import WorkerConnections

__all__ = ["ClusterOperations"]


class ClusterOperations:
    # Provided by Client.
    id: str
    futures: dict[Key, FutureState]
    _loop: LoopThread
    _lock: threading.RLock
    _workers: WorkerConnections
    _scatter_offset: int

    if TYPE_CHECKING:
        def _check_running(self) -> None: ...
        def _stimulus(self, what: str) -> str: ...
        def _hold(self, key: Key) -> tuple[FutureState, bool]: ...
        async def _request(self, op: str, args: dict[str, Any] | None = None) -> Any: ...

    # ------------------------------------------------------------ queries

    def scheduler_info(self, **kwargs: Any) -> dict[str, Any]:
        """{"address", "id", "workers": {address: {"name", "nthreads", "metrics", ...}}, ...}"""
        self._check_running()
        info: dict[str, Any] = self._loop.run(self._request("scheduler_info"))
        return info

    def who_has(self, futures: Any = None, **kwargs: Any) -> dict[Key, list[str]]:
        """{key: [worker addresses holding it]} for the given futures, or all keys."""
        self._check_running()
        keys = None if futures is None else [f.key for f in results.futures_in(futures)]
        raw = self._loop.run(self._request("who_has", {"keys": keys}))
        return {k: list(v) for k, v in dict(raw).items()}

    def balance_report(self) -> dict[str, Any]:
        """How well the scheduler placed the last computation.

        A computation starts when work arrives at an idle cluster. Returns
        {"makespan", "lower_bound", "ratio", "work", "critical_path",
        "work_bound", "tasks", "bytes_moved", "transfers", "steals",
        "steal_requests", "steals_refused", "workers": {address: {"busy",
        "tasks", "nthreads", "utilisation"}}}; durations are in seconds and
        measured on the workers. ``teamster.client.balance.format_report``
        prints it as a table.
        """
        self._check_running()
        report: dict[str, Any] = self._loop.run(self._request("balance_report"))
        return report

    def nthreads(self, workers: Any = None, **kwargs: Any) -> dict[str, int]:
        """{worker address: number of threads}."""
        info = self.scheduler_info()["workers"]
        wanted = None if workers is None else set(workers)
        return {a: w["nthreads"] for a, w in info.items() if wanted is None or a in wanted}

    ncores = nthreads

    def _worker_addresses(self, workers: Any = None) -> list[str]:
        """All workers' addresses, or the given addresses/names resolved to addresses."""
        info = self.scheduler_info()["workers"]
        if workers is None:
            return sorted(info)
        if isinstance(workers, str):
            workers = [workers]
        by_name = {str(w.get("name")): a for a, w in info.items()}
        out = []
        for w in workers:
            if w in info:
                out.append(w)
            elif str(w) in by_name:
                out.append(by_name[str(w)])
            else:
                raise ValueError(f"no worker {w!r} in the cluster (workers: {sorted(info)})")
        return out

    # ------------------------------------------------------------ retire

    def retire_workers(self, workers: Any = None, close_workers: bool = True,
                       timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        """Retire workers gracefully: {address: info} of those retired.

        ``workers`` are addresses or names. Each stops receiving tasks, gives
        back the tasks it has not started, finishes the ones it has, and
        copies every result only it holds to another worker; then (with
        ``close_workers=True``) it exits. Nothing is lost or recomputed.
        With ``close_workers=False`` it stays connected but is assigned
        nothing, so its process can be stopped at any time.

        Raises RuntimeError naming each worker that could not be retired and
        why (e.g. it is the last worker holding data); the others are retired.
        """
        self._check_running()
        if workers is None:
            raise ValueError("retire_workers needs workers=[...]: the addresses or names of "
                             "the workers to retire")
        if isinstance(workers, str):
            workers = [workers]
        names = [str(w) for w in workers]
        if not names:
            return {}
        answer = self._loop.run(self._request("retire_workers", {"workers": names,
                                                                  "close": bool(close_workers)}),
                                timeout)
        retired = {str(a): dict(info) for a, info in dict(answer["retired"]).items()}
        refused = dict(answer["refused"])
        if refused:
            reasons = "; ".join(f"{w}: {why}" for w, why in refused.items())
            raise RuntimeError(f"could not retire {len(refused)} of {len(names)} workers "
                               f"({reasons}); retired: {sorted(retired) or 'none'}")
        return retired

    # ------------------------------------------------------------ run

    def run(self, function: Callable[..., Any], *args: Any, workers: Any = None,
            wait: bool = True, nanny: bool = False, on_error: str = "raise",
            **kwargs: Any) -> dict[str, Any]:
        """Call ``function(*args, **kwargs)`` in every worker process: {address: result}.

        Raises the first remote exception (``on_error="return"`` puts it in the result).
        """
        self._check_running()
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error= must be 'raise' or 'return', not {on_error!r}")
        payload = serialize((function, args, kwargs))
        addresses = self._worker_addresses(workers)
        replies = self._loop.run(self._run(addresses, payload))
        out: dict[str, Any] = {}
        for address, reply in zip(addresses, replies, strict=True):
            if isinstance(reply, BaseException):
                value: Any = reply
            else:
                value = deserialize(reply.result) if reply.result is not None else None
                if not reply.ok and not isinstance(value, BaseException):
                    value = RuntimeError(f"run failed on {address}: {value!r}")
                if reply.ok:
                    out[address] = value
                    continue
            if on_error == "raise":
                raise value
            out[address] = value
        return out

    async def _run(self, addresses: list[str], payload: Serialized) -> list[Any]:
        stimulus_id = self._stimulus("run")

        async def one(address: str, rid: int) -> m.Reply:
            reply = await self._workers.request(address, m.Request(rid, "run",
                                                                   {"function": payload},
                                                                   stimulus_id))
            if not isinstance(reply, m.Reply):
                raise RuntimeError(f"worker {address} answered run with {reply!r:.100}")
            return reply

        return list(await asyncio.gather(*(one(a, i) for i, a in enumerate(addresses)),
                                         return_exceptions=True))

    # ------------------------------------------------------------ scatter

    def scatter(self, data: Any, workers: Any = None, broadcast: bool = False,
                direct: bool | None = None, hash: bool = True, timeout: Any = None,
                asynchronous: bool | None = None) -> Any:
        """Put local data on workers; futures shaped like ``data`` (list, dict, or one).

        Keys are ``"{type}-{token}"`` (``hash=True``: the same value gets the
        same key) or a dict's own keys. Values go round-robin over the target
        workers, or to every one with ``broadcast=True``.
        """
        self._check_running()
        single = False
        if isinstance(data, dict):
            keys: list[Key] = list(data)
            values = list(data.values())
        else:
            single = not isinstance(data, (list, tuple, set, frozenset))
            values = [data] if single else list(data)
            keys = [f"{type(v).__name__}-{tokenize(v) if hash else uuid.uuid4().hex}"
                    for v in values]
        if not values:
            return type(data)()
        blobs = [serialize(v) for v in values]  # TypeError for unpicklable values, here
        targets = self._worker_addresses(workers)
        if not targets:
            raise ValueError("no workers to scatter to")
        placement: dict[str, list[tuple[Key, Serialized]]] = {}
        holders: dict[Key, tuple[str, ...]] = {}
        for i, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
            if key in holders:
                continue  # the same value twice (hash=True): place it once
            if broadcast:
                chosen = tuple(targets)
            else:
                chosen = (targets[(self._scatter_offset + i) % len(targets)],)
            holders[key] = chosen
            for address in chosen:
                placement.setdefault(address, []).append((key, blob))
        self._scatter_offset += len(values)
        with self._lock:
            states = [self._hold(k)[0] for k in keys]
            futures = [Future._make(k, self, st) for k, st in zip(keys, states, strict=True)]  # type: ignore[arg-type]
        types = [type(v).__name__ for v in values]
        self._loop.run(self._scatter(placement, holders, keys, blobs, states, types), timeout)
        if isinstance(data, dict):
            return dict(zip(keys, futures, strict=True))
        if single:
            return futures[0]
        return futures if isinstance(data, list) else type(data)(futures)

    async def _scatter(self, placement: dict[str, list[tuple[Key, Serialized]]],
                       holders: dict[Key, tuple[str, ...]], keys: list[Key],
                       blobs: list[Serialized], states: list[FutureState],
                       types: list[str]) -> None:
        stimulus_id = self._stimulus("scatter")
        await asyncio.gather(*(put_data(self._workers, a, items, stimulus_id)
                               for a, items in placement.items()))
        who_has = tuple({k: (k, holders[k], b.nbytes) for k, b in zip(keys, blobs, strict=True)}.values())
        self._loop.outbox.append(m.ScatteredData(self.id, who_has, stimulus_id))
        self._loop.drain_now()
        for st, key, blob, type_name in zip(states, keys, blobs, types, strict=True):
            st.finish(holders[key], blob.nbytes, type_name)
