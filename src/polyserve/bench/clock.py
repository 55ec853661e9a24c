"""The bench client's clock, injectable so tests can give a request exact, known timings.

``RealClock`` is ``time.perf_counter`` and ``asyncio.sleep``. A test clock advances when the fake server says
so (see ``tests/bench``); the runner reads time only through this protocol.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (the origin is arbitrary)."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return at ``now() >= t`` (at once if already past)."""
        ...


class RealClock:
    def now(self) -> float:
        return time.perf_counter()

    async def sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
