"""Event loop choice: uvloop when installed, asyncio's default otherwise.

uvloop roughly halves per-message event loop overhead and writes memoryviews
without copying them (see tcp.py). Set ``TEAMSTER_UVLOOP=0`` to use the
stdlib loop anyway (e.g. to debug, or to test both).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _uvloop() -> Any:
    if os.environ.get("TEAMSTER_UVLOOP", "1") in ("0", "false", "no"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's if available, else asyncio's default."""
    uvloop = _uvloop()
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def install_event_loop_policy() -> None:
    """Make ``asyncio.run``/``new_event_loop`` everywhere use uvloop if available."""
    uvloop = _uvloop()
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run`` on a loop from ``new_event_loop``."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
