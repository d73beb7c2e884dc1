"""Registration over real TCP: the scheduler numbers each worker in its
acknowledgement, and the worker's reports carry that number
(``TaskFinished.worker_slot``: the scheduler finds the worker by it)."""

from __future__ import annotations

import asyncio

import pytest

from teamster.runtime.scheduler_server import SchedulerServer
from teamster.runtime.worker_server import WorkerServer

pytestmark = pytest.mark.timeout(60)


def test_each_worker_learns_the_number_the_scheduler_gave_it() -> None:
    async def main() -> None:
        async with SchedulerServer(validate=True) as server:
            slots = server.state.worker_slots
            async with WorkerServer(server.address, validate=True) as a, \
                    WorkerServer(server.address, validate=True) as b:
                assert a.state is not None and b.state is not None
                assert (a.state.worker_slot, b.state.worker_slot) == (
                    slots.slot_of(a.address), slots.slot_of(b.address))
                assert {a.state.worker_slot, b.state.worker_slot} == {0, 1}
            # (Their removals may still be on the way: any number will do, so
            # long as the scheduler's and the worker's agree.)
            async with WorkerServer(server.address, validate=True) as c:
                assert c.state is not None
                assert c.state.worker_slot == slots.slot_of(c.address) >= 0

    asyncio.run(main())
