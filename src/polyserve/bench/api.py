"""``benchmark(cfg)``: the whole run in one call (requests, sending, result document), for Python callers."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from polyserve.bench.clock import Clock
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import build_requests, load_tiers
from polyserve.bench.result import build_result
from polyserve.bench.runner import Progress, run_benchmark


async def benchmark(
    cfg: BenchConfig,
    *,
    client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict:
    """Run ``cfg`` and return the result document (``polyserve.bench.result``); save it with ``save_result``.

    Raises ``ConfigError``/``InputError`` for bad flags or files and ``BenchError`` if no model can be named;
    failed requests are counted in the result, never raised.
    """
    tiers = load_tiers(cfg)
    requests, workload = build_requests(cfg, tiers)
    run = await run_benchmark(cfg, requests, client=client, clock=clock, progress=progress)
    return build_result(cfg, run, workload.tiers, workload.description)
