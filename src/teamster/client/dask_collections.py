"""dask's scheduler contract on a Client: ``get``, ``compute``, ``persist``, default scheduler.

A base class of ``Client`` (as ``ClusterOperations`` is), so ``client.py``
stays one concept. What dask expects, as of dask 2026.8 (see
``../shared/RECIPES.md``, "dask integration facts"):

- ``dask.compute`` calls ``get(expr, keys, **kwargs)`` on the configured
  scheduler; ``dask.persist`` calls ``client.persist(collections, ...)`` and
  expects a list back.
- A scheduler object is accepted as dask's default when its class name
  contains "Client", it has ``get`` and ``asynchronous`` is False, and it is
  not callable: ``dask.config.set(scheduler=client)``.
- Without distributed, dataframe shuffles default to "disk" (partd files
  local to one process): wrong across worker processes. The client selects
  "tasks" while it is the default (distributed would select "p2p").

Every graph goes to the scheduler as ONE ``UpdateGraph`` (see ``dask_graph``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from teamster.client.dask_graph import GraphSubmission, flatten_keys, gc_paused, pack_results
from teamster.client.future import Future, FutureState
from teamster.core import messages as m
from teamster.core.messages import Key

if TYPE_CHECKING:
    from teamster.client.client import Client
    from teamster.client.loop import LoopThread

__all__ = ["DaskCollections", "install_dask_default", "uninstall_dask_default"]

_SCHEDULER = "scheduler"
_SHUFFLE = "dataframe.shuffle.method"


class DaskCollections:
    # Provided by Client.
    id: str
    futures: dict[Key, FutureState]
    _loop: LoopThread
    _lock: threading.RLock

    if TYPE_CHECKING:
        def _check_running(self) -> None: ...
        def _stimulus(self, what: str) -> str: ...
        def _hold(self, key: Key) -> tuple[FutureState, bool]: ...
        def _gather_states(self, states: list[FutureState], errors: str,
                           timeout: float | None) -> dict[Key, Any]: ...
        def gather(self, futures: Any, errors: str = "raise", direct: bool | None = None,
                   asynchronous: bool | None = None) -> Any: ...

    # ------------------------------------------------------------ graphs -> futures

    def _graph_to_futures(self, dsk: Any, keys: list[Key], *, workers: Any = None,
                          allow_other_workers: bool | None = None,
                          resources: Mapping[str, float] | None = None,
                          retries: int | None = None, priority: int = 0) -> dict[Key, Future]:
        """Submit a graph as one ``UpdateGraph``; a Future for each of ``keys``.

        Raises KeyError for a wanted key that is neither in the graph nor held
        by this client (dask's ``get`` contract), before anything is sent.
        Only the caller's thread waits here; submitting never blocks on the loop.
        """
        self._check_running()
        with gc_paused():
            submission = GraphSubmission(dsk, keys)
        with self._lock:
            self._check_running()
            for k in submission.outside_graph():
                st = self.futures.get(k)
                if st is None or st.status == "cancelled":
                    raise KeyError(k)
            # Hold the keys before pickling: a held key wanted from cluster
            # memory (a persisted future) cannot be released meanwhile.
            futures = {k: Future._make(k, self, self._hold(k)[0])  # type: ignore[arg-type]
                       for k in keys}
        try:
            stimulus_id = self._stimulus("graph")
            # Pickling outside the lock: the loop's release drain waits on it.
            with gc_paused():
                specs = submission.specs(stimulus_id, priority=priority, retries=retries,
                                         workers=workers,
                                         allow_other_workers=allow_other_workers,
                                         resources=resources)
            self._loop.post(m.UpdateGraph(self.id, tuple(specs), tuple(keys), 0.0, stimulus_id))
        except BaseException:
            for f in futures.values():
                f.release()
            raise
        return futures

    # ------------------------------------------------------------ dask's contract

    def get(self, dsk: Any, keys: Any, workers: Any = None,
            allow_other_workers: bool | None = None,
            resources: Mapping[str, float] | None = None, sync: bool = True,
            asynchronous: bool | None = None, direct: bool | None = None,
            retries: int | None = None, priority: int = 0, fifo_timeout: Any = "60s",
            actors: Any = None, **kwargs: Any) -> Any:
        """Compute ``keys`` of a dask graph on the cluster: dask's scheduler ``get``.

        ``dsk`` is an expression (from ``dask.compute``), a dict or a
        HighLevelGraph. Values come back nested like ``keys``, lists as
        tuples; the first failing task's exception is raised with its own
        type. Unknown keyword arguments are ignored, as dask's contract asks.
        With ``sync=False``, futures instead of values.
        """
        futures = self._graph_to_futures(
            dsk, flatten_keys(keys), workers=workers, allow_other_workers=allow_other_workers,
            resources=resources, retries=retries, priority=priority)
        if not sync:
            return pack_results(keys, futures)
        try:
            values = self._gather_states([f._state for f in futures.values()  # type: ignore[misc]
                                          ], "raise", None)
        finally:
            for f in futures.values():
                f.release()
        return pack_results(keys, values)

    def compute(self, collections: Any, sync: bool = False, optimize_graph: bool = True,
                workers: Any = None, allow_other_workers: bool = False,
                resources: Mapping[str, float] | None = None, retries: int = 0,
                priority: int = 0, fifo_timeout: Any = "60s", actors: Any = None,
                traverse: bool = True, **kwargs: Any) -> Any:
        """Start computing dask collections; a Future per collection (values with ``sync=True``).

        A list, tuple or set gives a list back; anything else one Future. Non-dask
        arguments are passed through; with ``traverse``, Python containers holding
        collections are computed as one delayed object, as distributed does.
        """
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr, is_dask_collection
        from dask.core import flatten
        from dask.delayed import delayed

        singleton = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if singleton else list(collections)
        if traverse:
            items = [delayed(a) if isinstance(a, (list, set, tuple, dict, Iterator)) else a
                     for a in items]
        variables = [a for a in items if is_dask_collection(a)]
        by_key: dict[Key, Future] = {}
        names: list[Key] = []
        if variables:
            expr = FinalizeCompute(collections_to_expr(variables, optimize_graph)).optimize()
            names = list(flatten(expr.__dask_keys__()))  # one per collection, repeats kept
            by_key = self._graph_to_futures(
                expr, flatten_keys(names), workers=workers, allow_other_workers=allow_other_workers,
                resources=resources, retries=retries, priority=priority)
        out: list[Any] = []
        position = iter(names)
        for a in items:
            out.append(by_key[next(position)] if is_dask_collection(a) else a)
        result = self.gather(out) if sync else out
        return result[0] if singleton else result

    def persist(self, collections: Any, optimize_graph: bool = True, workers: Any = None,
                allow_other_workers: bool | None = None,
                resources: Mapping[str, float] | None = None, retries: int | None = None,
                priority: int = 0, fifo_timeout: Any = "60s", actors: Any = None,
                **kwargs: Any) -> Any:
        """Start computing collections; equal collections backed by futures.

        A list, tuple or set gives a list back (what ``dask.persist`` expects),
        a single collection one collection. Returns at once: the futures finish
        in the background.
        """
        from dask.base import collections_to_expr, is_dask_collection
        from dask.core import flatten

        singleton = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if singleton else list(collections)
        if not all(is_dask_collection(c) for c in items):
            raise TypeError("Client.persist takes dask collections only")
        expr = collections_to_expr(items, optimize_graph).optimize()
        keys = expr.__dask_keys__()
        futures = self._graph_to_futures(
            expr, flatten_keys(keys), workers=workers, allow_other_workers=allow_other_workers,
            resources=resources, retries=retries, priority=priority)
        rebuilt = []
        for c, ks in zip(items, keys, strict=True):
            rebuild, args = c.__dask_postpersist__()
            rebuilt.append(rebuild({k: futures[k] for k in flatten(ks)}, *args))
        return rebuilt[0] if singleton else rebuilt


# ---------------------------------------------------------------------------
# dask's default scheduler

#: dask config values from before the first teamster client became the
#: default (restored once no default client is left); None while none is.
_saved_config: dict[str, Any] | None = None
_config_lock = threading.Lock()


def install_dask_default(client: Client) -> None:
    """Make ``client`` dask's scheduler, and "tasks" its dataframe shuffle."""
    import dask

    global _saved_config
    with _config_lock:
        if _saved_config is None:
            _saved_config = {_SCHEDULER: dask.config.get(_SCHEDULER, None),
                             _SHUFFLE: dask.config.get(_SHUFFLE, None)}
        new: dict[str, Any] = {_SCHEDULER: client}
        # "p2p" exists only in distributed; "disk" is per process. A shuffle
        # method the user chose on purpose is theirs to keep.
        if dask.config.get(_SHUFFLE, None) in (None, "p2p"):
            new[_SHUFFLE] = "tasks"
        dask.config.set(new)


def uninstall_dask_default(client: Client, newest: Client | None) -> None:
    """``client`` closed: hand dask to ``newest`` (another default client), or restore
    what was configured before teamster."""
    import dask

    global _saved_config
    with _config_lock:
        if newest is not None:
            if dask.config.get(_SCHEDULER, None) is client:
                dask.config.set({_SCHEDULER: newest})
            return
        saved, _saved_config = _saved_config, None
        if saved is None:
            return
        restore: dict[str, Any] = {}
        current = dask.config.get(_SCHEDULER, None)
        if current is client or (type(current) is type(client) and current.status != "running"):
            restore[_SCHEDULER] = saved[_SCHEDULER]
        if dask.config.get(_SHUFFLE, None) == "tasks":
            restore[_SHUFFLE] = saved[_SHUFFLE]
        if restore:
            dask.config.set(restore)
