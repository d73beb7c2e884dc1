"""Turning ``submit``/``map`` calls into task keys and ``TaskSpec`` messages.

No I/O and no client state here: the builder caches pickled functions and
function tokens, and everything else is a pure function of the call.

Why the caches: ``dask.base.tokenize(func)`` costs ~80 us and pickling a
function a few more; a 10,000-task map or a loop of submits of the same
function would spend most of its time there. Entries are keyed by the
function's identity and keep a strong reference to it, so an id cannot be
reused by another function while its entry lives; the cache is a bounded
LRU so lambdas created per call cannot grow it without limit.

Pure keys follow distributed's shape, ``"{funcname}-{token}"``, where the
token is deterministic in (function, args, kwargs). The token is dask's
``tokenize`` except on the hot path, where every argument is a plain scalar
or a Future: there an md5 of the repr is ~5x cheaper and as deterministic.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dask.base import tokenize
from dask.utils import funcname

from teamster.core.messages import Key, Serialized, TaskSpec
from teamster.runtime.task_payload import KeyRef, dumps_function, dumps_task

__all__ = ["FunctionEntry", "TaskBuilder", "normalize_resources", "normalize_workers"]

#: Argument types whose repr is a faithful, deterministic identity.
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class FunctionEntry:
    """A function with its pickled bytes, token and key prefix, computed once."""

    __slots__ = ("func", "blob", "token", "name")

    def __init__(self, func: Callable[..., Any]) -> None:
        #: Strong reference: keeps ``id(func)`` from being reused while cached.
        self.func = func
        #: ``dumps_function(func)``: raises TypeError naming the function.
        self.blob = dumps_function(func)
        self.token = tokenize(func)
        self.name = key_name(func)


def key_name(func: Callable[..., Any]) -> str:
    """The key prefix of a function, as distributed names it ("inc", "lambda").

    A callable object's ``funcname`` is its repr ("<mod.C object at 0x..>");
    a key should not hold spaces and addresses, so its type name is used.
    """
    name = funcname(func)
    if not _NAME_OK.match(name):
        name = type(func).__name__
    return name


def _scalar_token(ftoken: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """md5 of the call's repr when every argument is a scalar or a Future, else None."""
    parts: list[Any] = [ftoken]
    for a in args:
        t = type(a)
        if t in _SCALARS:
            parts.append(a)
        elif isinstance(a, KeyRef):
            # A tuple cannot be a scalar argument, so this cannot collide with one.
            parts.append(("KeyRef", a.key))
        else:
            return None
    if kwargs:
        for name in sorted(kwargs):
            v = kwargs[name]
            if type(v) in _SCALARS:
                parts.append((name, v))
            elif isinstance(v, KeyRef):
                parts.append((name, ("KeyRef", v.key)))
            else:
                return None
    try:
        text = repr(parts)
    except ValueError:  # an int too large for repr (sys.set_int_max_str_digits)
        return None
    return hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def normalize_workers(workers: Any) -> tuple[str, ...] | None:
    """``workers=`` as distributed accepts it (one address/name, or a list/set) -> tuple."""
    if workers is None:
        return None
    if isinstance(workers, (str, int)):
        return (str(workers),)
    if not isinstance(workers, (list, tuple, set, frozenset)):
        raise TypeError(f"workers= must be an address, a name, or a list or set of them; "
                        f"got {type(workers).__name__}")
    return tuple(sorted(str(w) for w in workers)) if isinstance(workers, (set, frozenset)) \
        else tuple(str(w) for w in workers)


def normalize_resources(resources: Mapping[str, float] | None) -> tuple[tuple[str, float], ...] | None:
    if not resources:
        return None
    return tuple(sorted((str(k), float(v)) for k, v in resources.items()))


class TaskBuilder:
    """Keys and ``TaskSpec``s for one client, with its function cache."""

    def __init__(self, maxsize: int = 512) -> None:
        #: id(func) -> entry, least recently used first.
        self._functions: OrderedDict[int, FunctionEntry] = OrderedDict()
        self._maxsize = maxsize
        #: User threads may submit concurrently; an OrderedDict is not thread-safe.
        self._lock = threading.Lock()

    def function(self, func: Callable[..., Any]) -> FunctionEntry:
        """The cached entry for ``func`` (TypeError if it cannot be pickled)."""
        entries = self._functions
        with self._lock:
            entry = entries.get(id(func))
            if entry is not None and entry.func is func:
                entries.move_to_end(id(func))
                return entry
        entry = FunctionEntry(func)  # slow (pickling, tokenize): outside the lock
        with self._lock:
            entries[id(func)] = entry
            if len(entries) > self._maxsize:
                entries.popitem(last=False)
        return entry

    # -- keys --------------------------------------------------------------

    @staticmethod
    def call_token(entry: FunctionEntry, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        token = _scalar_token(entry.token, args, kwargs)
        if token is None:
            token = tokenize(entry.token, kwargs, *args)
        return token

    def submit_key(self, entry: FunctionEntry, args: Sequence[Any], kwargs: Mapping[str, Any],
                   pure: bool) -> str:
        if pure:
            return f"{entry.name}-{self.call_token(entry, args, kwargs)}"
        return f"{entry.name}-{uuid.uuid4().hex}"

    def map_keys(self, entry: FunctionEntry, arg_tuples: Sequence[tuple[Any, ...]],
                 kwargs: Mapping[str, Any], key: str | Sequence[Key] | None,
                 pure: bool) -> list[Key]:
        """One key per call: the given list, or ``"{prefix}-{token}"`` (distributed's shape)."""
        n = len(arg_tuples)
        if key is not None and not isinstance(key, str):
            keys = list(key)
            if len(keys) != n:
                raise ValueError(f"map got {len(keys)} keys for {n} tasks")
            return keys
        prefix = key or entry.name
        if not pure:
            uid = uuid.uuid4().hex  # one uuid per map, as distributed: cheap and unique
            return [f"{prefix}-{uid}-{i}" for i in range(n)]
        token = self.call_token
        return [f"{prefix}-{token(entry, args, kwargs)}" for args in arg_tuples]

    # -- specs -------------------------------------------------------------

    @staticmethod
    def run_spec(entry: FunctionEntry, args: tuple[Any, ...], kwargs: Mapping[str, Any]
                 ) -> tuple[Serialized, tuple[Key, ...]]:
        """The pickled call and the keys of the futures inside its arguments."""
        return dumps_task(entry.blob, args, kwargs)

    @staticmethod
    def spec(key: Key, run_spec: Serialized, dependencies: tuple[Key, ...],
             priority: tuple[Any, ...], workers: tuple[str, ...] | None,
             allow_other_workers: bool, resources: tuple[tuple[str, float], ...] | None,
             retries: int, stimulus_id: str) -> TaskSpec:
        return TaskSpec(key, run_spec, dependencies, priority, workers,
                        bool(allow_other_workers), resources, retries, stimulus_id)
