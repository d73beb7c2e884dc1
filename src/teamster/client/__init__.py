"""The user-facing API: Client, Future, wait, as_completed (dask.distributed's shape)."""

from teamster.client.client import Client, default_client
from teamster.client.future import Future
from teamster.client.waiting import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    DoneAndNotDoneFutures,
    as_completed,
    wait,
)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "DoneAndNotDoneFutures",
    "Future",
    "as_completed",
    "default_client",
    "wait",
]
