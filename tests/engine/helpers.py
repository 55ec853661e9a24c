"""Tiny helpers for engine tests: in-process apps, exact latency models, SSE reading."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx

from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def linear(b0_ms: float = 10.0, b1_ms: float = 0.0, b2_ms: float = 1.0) -> LinearLatencyModel:
    """An exact model: iteration = b0 + b1 * prefill tokens + b2 * decode sequences (ms)."""
    return LinearLatencyModel(get_deployment("llama-3.1-8b", "h100"), b0_ms / 1e3, b1_ms / 1e3, b2_ms / 1e3)


def make_app(model: object | None = None, **config: Any):
    return create_engine_app(EngineConfig(**config), latency_model=model)


@asynccontextmanager
async def client_for(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://engine", timeout=30
    ) as c:
        yield c


def completion(prompt_words: int = 4, max_tokens: int | None = 8, stream: bool = True, **extra: Any) -> dict:
    body: dict[str, Any] = {"prompt": " ".join(["w"] * prompt_words), "stream": stream, **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def stream_events(c: httpx.AsyncClient, path: str, body: dict) -> tuple[list[tuple[float, Any]], bool]:
    """(arrival perf_counter time, parsed JSON or "[DONE]") per SSE event, and whether [DONE] came."""
    events: list[tuple[float, Any]] = []
    done = False
    async with c.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line[6:]
            if data == "[DONE]":
                done = True
                events.append((time.perf_counter(), data))
            else:
                events.append((time.perf_counter(), json.loads(data)))
    return events, done


def token_texts(events: list[tuple[float, Any]], chat: bool) -> list[str]:
    out = []
    for _, e in events:
        if e == "[DONE]" or not e["choices"]:
            continue
        ch = e["choices"][0]
        text = ch["delta"].get("content") if chat else ch["text"]
        if text:
            out.append(text)
    return out


async def metric_value(c: httpx.AsyncClient, name: str) -> float:
    """Sum of a metric's samples whose name is exactly ``name`` (any labels)."""
    text = (await c.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
