"""One benchmark request: send it, read its SSE stream, time every content chunk, classify any failure.

What is measured, on the injected clock: the send time (just before the request goes out), the arrival time
of each chunk carrying text (``choices[0].text`` for completions, ``choices[0].delta.content`` for chat; the
role-only first chat chunk and the usage chunk carry none), and the end of the stream. ``usage`` (asked for
with ``stream_options.include_usage``) gives the output token count when the server reports it.

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
from dataclasses import dataclass, field

import httpx

from polyserve.bench.clock import Clock
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import BenchRequest


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
    try:
        doc = json.loads(body)
        msg = doc.get("error", {}).get("message") if isinstance(doc, dict) else None
        if msg:
            return str(msg)
    except (ValueError, AttributeError):
        pass
    return body.decode(errors="replace")


async def send_request(
    client: httpx.AsyncClient, cfg: BenchConfig, model: str, req: BenchRequest, clock: Clock
) -> Outcome:
    """Send ``req`` and read its stream to the end; never raises for a failed request (see ``error``)."""
    o = Outcome(send=clock.now())
    started = False
    try:
        async with asyncio.timeout(cfg.timeout_s):
            async with client.stream(
                "POST", cfg.url, json=payload(cfg, model, req), headers=slo_headers(req)
            ) as r:
                started = True
                if r.status_code != 200:
                    return o.fail(f"http_{r.status_code}", _error_message(await r.aread()))
                done = False
                async for line in r.aiter_lines():
                    t = clock.now()
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        return o.fail("invalid_response", f"not JSON: {data[:200]}")
                    if not isinstance(chunk, dict):
                        return o.fail("invalid_response", f"not a JSON object: {data[:200]}")
                    if "error" in chunk:
                        err = chunk["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        return o.fail("stream_error", str(msg))
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
                o.end = clock.now()
                if not done:
                    return o.fail("stream_broken", "the stream ended without data: [DONE]")
                if not o.chunk_times:
                    return o.fail("empty_response", "the stream carried no text")
                return o
    except TimeoutError:
        return o.fail("timeout", f"no complete response within {cfg.timeout_s:g} s")
    except httpx.TimeoutException as e:
        return o.fail("timeout", repr(e))
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        return o.fail("stream_broken" if started else "connection", str(e) or repr(e))
    except httpx.TransportError as e:
        return o.fail("connection", str(e) or repr(e))
