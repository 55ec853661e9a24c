"""``run(main)``: run a coroutine to its end on uvloop when it is installed, else on asyncio's own loop.

uvicorn already picks uvloop for the gateway and the engines (``loop="auto"``); this is the same choice for
the processes that start their loop themselves (``polyserve bench``): a load generator that spends less CPU
per token reads tokens closer to when they were sent. uvloop is a dependency on every platform but Windows;
where it cannot be imported, asyncio's loop is used and nothing else changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` if uvloop imports, else None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` names."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
