"""Scraping the backends' ``/metrics``: cross-check the ledger, and find dead backends.

Every ``interval`` seconds each backend the actuator expects to be up is asked for ``/metrics`` (vLLM's
names: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``). The
figures are kept on the ``Backend`` and exported next to the ledger's own count, so an operator can see the
two agree (they differ by what is in flight on the wire). ``dead_after`` consecutive failures (refused,
timed out, non-200) mark the backend dead: the router stops using it. The first success afterwards marks it
alive again (back in the idle pool). Requests that fail to connect mark a backend dead at once, without
waiting for the scrape: a dead backend must not collect retries.

Failure modes: a backend that answers /metrics but fails every request stays routable; each failure is
retried elsewhere and marks the backend dead until its next good scrape (a circuit breaker with the scrape
interval as its reset time).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from polyserve.gateway.actuator import Actuator
from polyserve.gateway.backend import Backend
from polyserve.gateway.dispatcher import Dispatcher

_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage_perc",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sums of the vLLM gauges we read (over their label sets), from Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = _GAUGES.get(name)
        if key is None:
            continue
        try:
            v = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[key] = out.get(key, 0.0) + v
    return out


class Scraper:
    def __init__(
        self,
        client: httpx.AsyncClient,
        backends: list[Backend],
        dispatcher: Dispatcher,
        actuator: Actuator,
        *,
        timeout_s: float,
        dead_after: int,
        on_error: object = None,
    ) -> None:
        self.client = client
        self.backends = backends
        self.dispatcher = dispatcher
        self.actuator = actuator
        self.timeout_s = timeout_s
        self.dead_after = dead_after
        self.on_error = on_error  # callable(backend, kind) for the error counter

    async def scrape_one(self, b: Backend) -> bool:
        try:
            r = await self.client.get(b.url + "/metrics", timeout=self.timeout_s)
            ok = r.status_code == 200
            why = f"HTTP {r.status_code}"
            text = r.text if ok else ""
        except httpx.HTTPError as e:
            ok, why, text = False, repr(e), ""
        if not self.actuator.expects_up(b.sid):
            return ok  # stopped (or starting) on purpose: not a failure
        if ok:
            vals = parse_vllm_metrics(text)
            b.running = vals.get("running")
            b.waiting = vals.get("waiting")
            b.extra = vals
            b.scrape_failures = 0
            self.dispatcher.mark_alive(b.sid)
            return True
        b.scrape_failures += 1
        b.last_error = why
        b.running = b.waiting = None
        if callable(self.on_error):
            self.on_error(b, "scrape")
        if b.scrape_failures >= self.dead_after:
            self.dispatcher.mark_dead(b.sid)
        return False

    async def scrape_all(self) -> None:
        # a dead engine is replaced before it is looked at; until its replacement serves (a Ray actor can take
        # tens of seconds on a busy node) it is unroutable, so new requests go to servers that answer now
        # instead of waiting on the launch (the good scrape of the replacement marks it alive)
        for sid in self.actuator.supervise():
            self.dispatcher.mark_dead(sid)
        todo = [b for b in self.backends if self.actuator.expects_up(b.sid)]
        await asyncio.gather(*(self.scrape_one(b) for b in todo))

    async def run(self, interval_s: float) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.scrape_all()
            await asyncio.sleep(interval_s)
