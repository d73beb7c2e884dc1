"""How a task's callable and arguments travel, and how a worker runs them.

A run spec is a ``Serialized`` whose ``header`` is the cloudpickled function
and whose first buffer is the pickled ``(args, kwargs)``; any further buffers
are the arguments' out-of-band buffers (numpy arrays are not copied into the
pickle stream).

Keeping the function apart pays twice: the client pickles a function once
for a whole ``map`` (cache by identity), and the worker unpickles it once
(cache by bytes) instead of once per task.

Futures inside the arguments (at any depth: lists, dicts, objects) are
replaced by *persistent ids* while pickling, which also collects the task's
dependencies; on the worker, ``persistent_load`` substitutes the values from
the local store. No walk over the arguments is needed on either side.
"""

from __future__ import annotations

import io
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle

from teamster.core.messages import Key, Serialized

#: Argument types that plain pickle handles without persistent ids or cloudpickle.
_SIMPLE = frozenset({int, float, str, bytes, bool, type(None), complex})


class KeyRef:
    """Base of objects that stand for a task's result (the client's Future).

    Pickled into a run spec, a KeyRef becomes a reference to its key, and the
    worker substitutes the key's value.
    """

    __slots__ = ()
    key: Key


class _ArgsPickler(cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO, buffers: list[pickle.PickleBuffer]) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self.dependencies: dict[Key, None] = {}

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, KeyRef):
            self.dependencies[obj.key] = None
            return obj.key
        return None


def dumps_function(func: Callable[..., Any]) -> bytes:
    """cloudpickle always: it sends importable functions by reference anyway, and
    functions of ``__main__`` (scripts, notebooks) by value, which plain pickle
    would send by a reference the worker cannot resolve. Callers cache the result."""
    try:
        return cloudpickle.dumps(func, protocol=5)
    except Exception as exc:
        raise TypeError(
            f"Could not serialize function {getattr(func, '__qualname__', func)!r}: {exc}"
        ) from exc


def dumps_task(func_bytes: bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]
               ) -> tuple[Serialized, tuple[Key, ...]]:
    """Pickle arguments; return the run spec and the keys the arguments reference."""
    if not kwargs and all(type(a) in _SIMPLE for a in args):
        return Serialized(func_bytes, (pickle.dumps((args, None), protocol=5),)), ()
    buffers: list[pickle.PickleBuffer] = []
    f = io.BytesIO()
    pickler = _ArgsPickler(f, buffers)
    try:
        pickler.dump((args, dict(kwargs) if kwargs else None))
    except Exception as exc:
        raise TypeError(f"Could not serialize the arguments of a task: {exc}") from exc
    views = tuple(b.raw() for b in buffers)
    return Serialized(func_bytes, (f.getvalue(), *views)), tuple(pickler.dependencies)


#: Held while a task's function and arguments are unpickled (executor threads).
#: Unpickling imports modules, and two threads importing one package cycle at
#: once see a partially initialised module: a fresh 2-thread worker running
#: dask.array tasks raised "cannot import name 'cumreduction' from partially
#: initialized module 'dask.array.reductions'". (distributed deserialises on
#: its event loop, one thread, for the same effect.) Code that unpickles more
#: inside a task (``teamster.client.dask_graph``) takes it too.
unpickle_lock = threading.RLock()


class _FunctionCache:
    """Unpickled functions by their bytes; bounded so a worker cannot leak."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._funcs: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
        self._maxsize = maxsize

    def get(self, blob: bytes) -> Callable[..., Any]:
        func = self._funcs.get(blob)
        if func is None:
            func = self._funcs[blob] = pickle.loads(blob)
            if len(self._funcs) > self._maxsize:
                self._funcs.popitem(last=False)
        return func


_functions = _FunctionCache()


class _ArgsUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, buffers: tuple[Any, ...], data: Mapping[Key, Any]):
        super().__init__(file, buffers=buffers)
        self._data = data

    def persistent_load(self, pid: Any) -> Any:
        try:
            return self._data[pid]
        except KeyError:
            raise KeyError(f"input {pid!r} of the task is not on this worker") from None


def loads_task(spec: Serialized, data: Mapping[Key, Any]
               ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    payload, *buffers = spec.buffers
    with unpickle_lock:
        func = _functions.get(bytes(spec.header))
        if data:
            args, kwargs = _ArgsUnpickler(io.BytesIO(payload), tuple(buffers), data).load()
        else:
            args, kwargs = pickle.loads(payload, buffers=buffers)
    return func, args, kwargs or {}


def run_task(spec: Serialized, data: Mapping[Key, Any]) -> Any:
    func, args, kwargs = loads_task(spec, data)
    return func(*args, **kwargs)
