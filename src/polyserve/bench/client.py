"""One benchmark request: send it, read its SSE stream, time every content chunk, classify any failure.

What is measured, on the injected clock: the send time (just before the request goes out), the arrival time
of each chunk carrying text (``choices[0].text`` for completions, ``choices[0].delta.content`` for chat; the
role-only first chat chunk and the usage chunk carry none), and the end of the stream. ``usage`` (asked for
with ``stream_options.include_usage``) gives the output token count when the server reports it.

The request goes out through an ``Upstream`` (``serving.upstream``), the gateway's own client side:
``WireClient`` over sockets by default (httpx's connection pool scans every connection on each request and
each close, and anyio re-arms the socket's reader on every read: with thousands of streams open at once the
client, not the server, became the bottleneck), or ``HttpxUpstream`` over an injected ``httpx.AsyncClient``.

Failure kinds (every request ends completed or with exactly one of these):
- ``http_<status>``: the server answered with an error status;
- ``timeout``: the whole request took longer than ``--timeout``;
- ``connection``: no response (refused, reset or closed before the status line);
- ``stream_broken``: the body stopped before ``data: [DONE]`` (connection dropped mid-stream);
- ``stream_error``: the server sent an error event in the stream;
- ``invalid_response``: a ``data:`` line that is not JSON;
- ``empty_response``: ``[DONE]`` with no text at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from polyserve.bench.clock import Clock
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import BenchRequest
from polyserve.serving.upstream import Upstream, UpstreamFailure, UpstreamStream


@dataclass
class Outcome:
    """Raw observations of one request (clock seconds); ``error`` is None iff it completed."""

    send: float
    chunk_times: list[float] = field(default_factory=list)
    end: float | None = None
    usage_output_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    error: str | None = None
    error_detail: str = ""
    text: list[str] = field(default_factory=list)  # the generated text, piece by piece

    def fail(self, kind: str, detail: str) -> Outcome:
        self.error = kind
        self.error_detail = detail[:300]
        return self


def slo_headers(req: BenchRequest) -> dict[str, str]:
    """The SLO headers of the request's tier (the Gateway API Inference Extension names, plus ours)."""
    return {
        "x-slo-ttft-ms": f"{req.ttft_slo_ms:g}",
        "x-slo-tpot-ms": f"{req.tpot_slo_ms:g}",
        "x-polyserve-tier": req.tier,
    }


def payload(cfg: BenchConfig, model: str, req: BenchRequest) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if cfg.chat:
        body["messages"] = [{"role": "user", "content": req.prompt}]
        body["max_completion_tokens"] = req.output_tokens
    else:
        body["prompt"] = req.prompt
        body["max_tokens"] = req.output_tokens
    if cfg.sends_ignore_eos:
        body["ignore_eos"] = True
    body.update(cfg.extra_body)
    return body


def _text(chunk: dict[str, object]) -> str | None:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    c = choices[0]
    if "text" in c:
        return c["text"] if isinstance(c["text"], str) else None
    delta = c.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        return content if isinstance(content, str) else None
    return None


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the body as text."""
    try:
        doc = json.loads(body)
        msg = doc.get("error", {}).get("message") if isinstance(doc, dict) else None
        if msg:
            return str(msg)
    except (ValueError, AttributeError):
        pass
    return body.decode(errors="replace")


async def send_request(
    upstream: Upstream, cfg: BenchConfig, model: str, req: BenchRequest, clock: Clock
) -> Outcome:
    """Send ``req`` and read its stream to the end; never raises for a failed request (see ``error``)."""
    o = Outcome(send=clock.now())
    body = json.dumps(payload(cfg, model, req)).encode()
    resp: UpstreamStream | None = None
    body_chunks: AsyncGenerator[bytes, None] | None = None
    complete = False
    try:
        async with asyncio.timeout(cfg.timeout_s):
            resp = await upstream.post(cfg.url, body, slo_headers(req))
            if resp.status != 200:
                return o.fail(f"http_{resp.status}", _error_message(await resp.read_all()))
            lines = _Lines()
            done = False
            body_chunks = resp.chunks()
            async for data in body_chunks:
                t = clock.now()  # every line that came in this read arrived now
                for line in lines.feed(data):
                    done = _take(o, line, t)
                    if done or o.error is not None:
                        break
                if done or o.error is not None:
                    break
            else:
                for line in lines.rest():  # a last line without its line break
                    done = _take(o, line, clock.now())
            if o.error is not None:
                return o
            o.end = clock.now()
            if not done:
                return o.fail("stream_broken", "the stream ended without data: [DONE]")
            if not o.chunk_times:
                return o.fail("empty_response", "the stream carried no text")
            complete = True
            return o
    except TimeoutError:
        return o.fail("timeout", f"no complete response within {cfg.timeout_s:g} s")
    except UpstreamFailure as e:
        if e.kind == "timeout":
            return o.fail("timeout", e.message)
        return o.fail("stream_broken" if resp is not None else "connection", e.message)
    finally:
        if body_chunks is not None:
            if complete:  # outside the request's --timeout: the result is in already
                await _drain(body_chunks)
            else:
                await body_chunks.aclose()
        if resp is not None:
            await resp.aclose()


class _Lines:
    """SSE lines out of the body as it arrives (a line may straddle two reads; ``\\n`` or ``\\r\\n`` ends one)."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        parts = (self.tail + data).split(b"\n") if self.tail else data.split(b"\n")
        self.tail = parts.pop()
        return parts

    def rest(self) -> list[bytes]:
        tail, self.tail = self.tail, b""
        return [tail] if tail else []


def _take(o: Outcome, line: bytes, t: float) -> bool:
    """Account one line at time ``t``; True at ``data: [DONE]``. A malformed or error event sets ``o.error``."""
    if not line.startswith(b"data:"):
        return False  # blank separators, comments, event names
    data = line[5:].strip()
    if data == b"[DONE]":
        return True
    try:
        chunk = json.loads(data)
    except ValueError:
        o.fail("invalid_response", f"not JSON: {data[:200].decode(errors='replace')}")
        return False
    if not isinstance(chunk, dict):
        o.fail("invalid_response", f"not a JSON object: {data[:200].decode(errors='replace')}")
        return False
    if "error" in chunk:
        err = chunk["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        o.fail("stream_error", str(msg))
        return False
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            o.usage_output_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            o.usage_prompt_tokens = usage["prompt_tokens"]
    piece = _text(chunk)
    if piece:
        o.chunk_times.append(t)
        o.text.append(piece)
    return False


DRAIN_S = 1.0  # after [DONE], how long the end of the body may take before the connection is given up


async def _drain(body_chunks: AsyncGenerator[bytes, None]) -> None:
    """Read past ``[DONE]`` to the body's end, so the connection can carry the next request (a server that
    sends [DONE] and then holds the body open costs its connection, never the request's result)."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in body_chunks:
                pass
    except (TimeoutError, UpstreamFailure):
        pass
    finally:
        await body_chunks.aclose()
