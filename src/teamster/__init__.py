"""teamster: a distributed task scheduler for Python whose edge is placement.

Public API mirrors dask.distributed's futures API; import lazily so that a
worker process pays only for what it uses.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "teamster.client.client",
    "Future": "teamster.client.future",
    "wait": "teamster.client.waiting",
    "as_completed": "teamster.client.waiting",
    "LocalCluster": "teamster.cluster.local",
    "Security": "teamster.security",
    "KilledWorker": "teamster.errors",
    "CancelledError": "teamster.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teamster' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
