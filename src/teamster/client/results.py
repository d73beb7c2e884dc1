"""Finding futures inside user structures, and putting values back in their place.

``gather([a, (a, b), {"x": a}, 5])`` returns the same shape with values
instead of futures, as distributed does: lists, tuples (namedtuples too),
sets, frozensets and dicts (values) are walked; anything else is returned as
is. Futures are replaced by object, not by key, so a plain string equal to
some key is never mistaken for it.
"""

from __future__ import annotations

from typing import Any

from teamster.client.future import Future

__all__ = ["futures_in", "pack"]

_SEQUENCES = (list, tuple, set, frozenset)


def futures_in(obj: Any) -> list[Future]:
    """Futures in ``obj`` (a future, or nested containers), first occurrence order."""
    if isinstance(obj, Future):
        return [obj]
    found: dict[int, Future] = {}
    _collect(obj, found)
    return list(found.values())


def _collect(obj: Any, found: dict[int, Future]) -> None:
    t = type(obj)
    if t is list or t is tuple or t is set or t is frozenset or isinstance(obj, _SEQUENCES):
        for x in obj:
            if isinstance(x, Future):
                found.setdefault(id(x), x)
            elif isinstance(x, (_SEQUENCES, dict)):
                _collect(x, found)
    elif isinstance(obj, dict):
        for x in obj.values():
            if isinstance(x, Future):
                found.setdefault(id(x), x)
            elif isinstance(x, (_SEQUENCES, dict)):
                _collect(x, found)


def pack(obj: Any, values: dict[Any, Any], skip_failed: bool = False) -> Any:
    """``obj`` with every future replaced by ``values[future.key]``.

    With ``skip_failed`` (``errors="skip"``), failed futures are dropped from a
    top-level list and become None deeper down (distributed's behaviour).
    """
    if skip_failed and type(obj) is list:
        obj = [x for x in obj if not isinstance(x, Future) or x.key in values]
    return _pack(obj, values)


def _pack(obj: Any, values: dict[Any, Any]) -> Any:
    if isinstance(obj, Future):
        return values.get(obj.key)
    t = type(obj)
    if t is list:
        return [_pack(x, values) for x in obj]
    if t is dict:
        return {k: _pack(v, values) for k, v in obj.items()}
    if t is tuple:
        return tuple([_pack(x, values) for x in obj])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return t(*[_pack(x, values) for x in obj])
    if isinstance(obj, (list, tuple, set, frozenset)):
        return t(_pack(x, values) for x in obj)
    if isinstance(obj, dict):
        return t((k, _pack(v, values)) for k, v in obj.items())
    return obj
