"""Test doubles for the bench client: a hand-advanced clock and a scripted streaming server.

``ScriptedTransport`` answers each request from a script keyed by its tier header: the status, and the times
(after the send) at which each text chunk and ``[DONE]`` arrive. It sets the ``ManualClock`` to a chunk's time
just before the client reads that chunk, so the client measures exactly the scripted timings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx


class ManualClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)
        await asyncio.sleep(0)


@dataclass
class Script:
    token_times: list[float] = field(default_factory=list)  # s after send, one per text chunk
    done_at: float | None = None  # s after send of [DONE]; None: the stream just ends (broken)
    status: int = 200
    usage_tokens: int | None = None  # completion_tokens in a usage chunk (sent just before [DONE])
    error_event_after: int | None = None  # send an error event after this many chunks
    garbage_after: int | None = None  # send a non-JSON data line after this many chunks
    chat: bool = False


class _Body(httpx.AsyncByteStream):
    def __init__(self, clock: ManualClock, send: float, s: Script) -> None:
        self.clock, self.send, self.s = clock, send, s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        s = self.s
        for k, t in enumerate(s.token_times):
            if s.error_event_after == k:
                yield b'data: {"error": {"message": "backend died", "code": 502}}\n\n'
                return
            if s.garbage_after == k:
                yield b"data: <html>oops\n\n"
                return
            self.clock.t = self.send + t
            choice = (
                {"index": 0, "delta": {"content": f" w{k}"}} if s.chat else {"index": 0, "text": f" w{k}"}
            )
            yield ("data: " + json.dumps({"choices": [choice]}) + "\n\n").encode()
        if s.done_at is None:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        self.clock.t = self.send + s.done_at
        if s.usage_tokens is not None:
            yield (
                "data: "
                + json.dumps(
                    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": s.usage_tokens}}
                )
                + "\n\n"
            ).encode()
        yield b"data: [DONE]\n\n"


class ScriptedTransport(httpx.AsyncBaseTransport):
    """Answers by tier header (``scripts[tier]``); records every request (headers, JSON body)."""

    def __init__(self, clock: ManualClock, scripts: dict[str, Script]) -> None:
        self.clock = clock
        self.scripts = scripts
        self.requests: list[tuple[dict[str, str], dict]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "scripted"}]})
        body = json.loads(await request.aread())
        self.requests.append((dict(request.headers), body))
        s = self.scripts[request.headers["x-polyserve-tier"]]
        if s.status != 200:
            return httpx.Response(s.status, json={"error": {"message": "scripted failure", "code": s.status}})
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(self.clock, self.clock.now(), s)
        )
