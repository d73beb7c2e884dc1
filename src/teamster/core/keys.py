"""Task key helpers: the prefix that groups tasks for duration estimates."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_HEX = frozenset("0123456789abcdef")


def _is_token(word: str) -> bool:
    # dask-style tokens: long hex strings, or pure numbers like "0" in "x-0".
    return (len(word) >= 8 and set(word) <= _HEX) or word.isdigit()


def _split_str(key: str) -> str:
    words = key.split("-")
    kept = [w for w in words if w and not _is_token(w)]
    return "-".join(kept) if kept else key


#: Only tuple keys' names are cached: a dask array's chunks share one name,
#: while string keys are nearly all distinct, and caching them cost more than
#: it saved (1.1 vs 0.45 us per key at a million keys, teamster.sim).
_split_name = lru_cache(maxsize=10_000)(_split_str)


def key_prefix(key: Any) -> str:
    """'inc-9f8e...' -> 'inc'; ('x-1f2e...', 0, 1) -> 'x'; other -> its type name."""
    if type(key) is str:
        return _split_str(key)
    if isinstance(key, tuple) and key:
        key = key[0]
        if type(key) is str:
            return _split_name(key)
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if isinstance(key, str):
        return _split_str(key)
    return type(key).__name__
