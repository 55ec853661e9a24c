"""Tiny harness for gateway tests: emulated engine apps in-process behind one switchable transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app
from polyserve.gateway import config_from_dict, create_gateway_app
from polyserve.gateway.app import Gateway

MODEL = "llama-3.1-8b"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Fleet(httpx.AsyncBaseTransport):
    """Routes ``http://eN`` to engine app N in-process. ``down`` hosts refuse connections (a dead engine);
    ``seen`` keeps every generation body sent upstream, per host."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps
        self.transports = {h: StreamingASGITransport(a) for h, a in apps.items()}
        self.down: set[str] = set()
        self.seen: dict[str, list[dict[str, Any]]] = {h: [] for h in apps}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.startswith("/v1/"):
            self.seen[host].append(json.loads(await request.aread()))
        return await self.transports[host].handle_async_request(request)


@dataclass
class Harness:
    gateway: Gateway
    fleet: Fleet
    client: httpx.AsyncClient
    engines: dict[str, Any] = field(default_factory=dict)

    def core(self, host: str) -> Any:
        return self.engines[host].state.engine.core


def engine_configs(n: int, time_scale: float = 20.0, **kw: Any) -> list[EngineConfig]:
    return [EngineConfig(time_scale=time_scale, **kw) for _ in range(n)]


@asynccontextmanager
async def harness(
    engines: list[EngineConfig] | int = 2, doc: dict[str, Any] | None = None, **gw_kw: Any
) -> AsyncIterator[Harness]:
    cfgs = engine_configs(engines) if isinstance(engines, int) else engines
    apps = {f"e{i}": create_engine_app(c) for i, c in enumerate(cfgs)}
    fleet = Fleet(apps)
    base: dict[str, Any] = {
        "model": MODEL,
        "backends": [f"http://{h}" for h in apps],
        "engine": {"time_scale": cfgs[0].time_scale},
        "scrape_interval_s": 0.2,
    }
    base.update(doc or {})
    gw = create_gateway_app(config_from_dict(base, "test-config"), transport=fleet, **gw_kw)
    async with httpx.AsyncClient(transport=StreamingASGITransport(gw), base_url="http://gateway", timeout=30) as c:
        try:
            yield Harness(gw, fleet, c, apps)
        finally:
            await gw.aclose()


def completion(words: int = 4, max_tokens: int = 8, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": " ".join(["w"] * words), "max_tokens": max_tokens, "stream": stream, **extra}


async def read_stream(
    c: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = "/v1/completions"
) -> tuple[int, dict[str, str], list[Any]]:
    """(status, headers, events: parsed JSON or the string "[DONE]")."""
    events: list[Any] = []
    async with c.stream("POST", path, json=body, headers=headers or {}) as r:
        if r.status_code != 200:
            return r.status_code, dict(r.headers), [json.loads(await r.aread())]
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
    return 200, dict(r.headers), events


def texts(events: list[Any]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, dict) and e.get("choices"):
            ch = e["choices"][0]
            t = ch.get("text") if "text" in ch else ch.get("delta", {}).get("content")
            if t:
                out.append(t)
    return out


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for fam in gw.metrics.registry.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def outcomes(gw: Gateway) -> dict[str, float]:
    return {o: metric(gw, "polyserve_requests_total", outcome=o) for o in ("completed", "failed", "shed", "rejected")}
