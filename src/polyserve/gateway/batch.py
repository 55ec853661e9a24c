"""A batch of prompts (``/v1/completions`` with ``prompt`` a list): one answer merged from one request each.

The gateway fans a batch of n prompts out as n requests, each placed by the policy on its own (a prompt is
what a server serves and what the ledger counts; vLLM too turns a batch into one engine request per prompt)
and each served by the usual path, which writes its ASGI messages to its own ``sender(i)``. ``BatchMerger``
turns those n answers into the one answer vLLM gives a batch:

- non-streaming: one JSON document, ``choices[i]`` the answer to prompt ``i`` (``index`` i), ``usage`` the
  sums, one ``id`` (the gateway's) and ``created``;
- streaming: one SSE stream, started when the first prompt's first token comes; every chunk is re-written
  with ``index`` i and the batch's ``id``; each prompt's usage chunk and ``[DONE]`` are held back, and at the
  end one usage chunk (the sums, if the client asked for usage) and one ``[DONE]``.

A prompt that fails fails the batch, as in vLLM: before anything was sent, its error answer (status, body,
``Retry-After``) is the batch's; after, the stream ends with an error event and no ``[DONE]``. The other
prompts are then cancelled (each is counted, ``failed``, and its ledger entry freed by its own path).
Re-writing chunks costs a JSON parse per event, paid by batches only: a single prompt's bytes are forwarded
untouched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from polyserve.gateway.errors import error_bytes

Send = Callable[[dict[str, Any]], Any]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class BatchMerger:
    def __init__(self, n: int, stream: bool, include_usage: bool, rid: str, created: int,
                 headers: list[tuple[bytes, bytes]]) -> None:  # fmt: skip
        self.n = n
        self.stream = stream
        self.include_usage = include_usage
        self.rid = rid
        self.created = created
        self.headers = headers  # extra headers of the merged answer
        self.complete = False  # the last byte is being sent: a disconnect now is not the client leaving early
        self.gone = False  # the client went away
        self._q: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()
        self._model: str | None = None  # from the first chunk (the usage chunk at the end names it)

    def sender(self, i: int) -> Send:
        """The ``send`` prompt ``i`` is served with."""
        q = self._q

        async def send(msg: dict[str, Any]) -> None:
            q.put_nowait((i, msg))

        return send

    def ended(self, i: int) -> None:
        """Prompt ``i``'s task is over (whatever it sent)."""
        self._q.put_nowait((i, None))

    async def run(self, send: Send, tasks: list[asyncio.Task[Any]]) -> None:
        """Merge until every prompt's task has ended; on a prompt's failure, cancel the others."""
        n = self.n
        status: list[int | None] = [None] * n
        heads: list[list[tuple[bytes, bytes]]] = [[] for _ in range(n)]
        bodies: list[list[bytes]] = [[] for _ in range(n)]
        tails = [b""] * n
        whole = [False] * n  # its answer was sent to its end
        done = [False] * n  # streaming: its [DONE] came
        docs: list[dict[str, Any] | None] = [None] * n
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        started = False
        failed = False
        ended = 0

        async def fail(code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            nonlocal failed
            failed = True
            for t in tasks:
                t.cancel()
            self.complete = True
            if started:  # the stream is under way: end it with an error event, no [DONE]
                msg = _error_message(body) or f"a prompt of the batch failed with HTTP {code}"
                tail = b"data: " + error_bytes(code if code >= 400 else 502, msg) + b"\n\n"
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            else:
                hs = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                await send({"type": "http.response.start", "status": code, "headers": hs})
                await send({"type": "http.response.body", "body": body, "more_body": False})

        while ended < n:
            i, msg = await self._q.get()
            if msg is None:
                ended += 1
                if not whole[i] and not failed:
                    await fail(502, error_bytes(502, "a prompt of the batch ended without an answer"), [])
                continue
            if failed:
                continue
            if msg["type"] == "http.response.start":
                status[i] = msg["status"]
                heads[i] = list(msg.get("headers", []))
                continue
            body = msg.get("body", b"")
            last = not msg.get("more_body", False)
            if status[i] != 200:  # an error answer: the batch's, once whole
                bodies[i].append(body)
                if last:
                    whole[i] = True
                    await fail(status[i] or 502, b"".join(bodies[i]), heads[i])
                continue
            if not self.stream:
                bodies[i].append(body)
                if last:
                    whole[i] = True
                    docs[i] = json.loads(b"".join(bodies[i]))
                continue
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": _SSE + self.headers})
            out, error = self._rewrite(i, tails, body, done, usage)
            if error is not None:
                whole[i] = True
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                await fail(502, error, [])
                continue
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if last:
                whole[i] = True
                if not done[i]:
                    await fail(502, error_bytes(502, "a prompt's stream ended without [DONE]"), [])
        if failed:
            return
        self.complete = True
        if not self.stream:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), *self.headers]})
            await send({"type": "http.response.body", "body": json.dumps(self._merge(docs)).encode(),
                        "more_body": False})
            return
        tail = b""
        if self.include_usage:
            doc = {"id": self.rid, "object": "text_completion", "created": self.created,
                   "model": self._model, "choices": [], "usage": usage}
            tail = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})

    def _rewrite(self, i: int, tails: list[bytes], chunk: bytes, done: list[bool],
                 usage: dict[str, int]) -> tuple[bytes, bytes | None]:  # fmt: skip
        """Prompt ``i``'s SSE bytes re-written for the batch: (bytes to send, an error event's JSON or None)."""
        data = tails[i] + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        tails[i] = events.pop()
        out = []
        for ev in events:
            if not ev.startswith(b"data:"):
                continue
            payload = ev[5:].strip()
            if payload == b"[DONE]":
                done[i] = True
                continue
            try:
                doc = json.loads(payload)
            except ValueError:
                return b"".join(out), error_bytes(502, f"a prompt's stream sent an event that is not JSON: {ev[:80]!r}")
            if not isinstance(doc, dict):
                continue
            if "error" in doc:
                return b"".join(out), payload
            if self._model is None:
                self._model = doc.get("model")
            if not doc.get("choices"):
                for k, v in (doc.get("usage") or {}).items():
                    if k in usage and isinstance(v, int):
                        usage[k] += v
                continue
            doc["id"] = self.rid
            doc["created"] = self.created
            for ch in doc["choices"]:
                ch["index"] = i
            out.append(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
        return b"".join(out), None

    def _merge(self, docs: list[dict[str, Any] | None]) -> dict[str, Any]:
        base = dict(docs[0] or {})
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for i, d in enumerate(docs):
            assert d is not None
            for ch in d.get("choices") or []:
                choices.append({**ch, "index": i})
            for k, v in (d.get("usage") or {}).items():
                if k in usage and isinstance(v, int):
                    usage[k] += v
        base.update(id=self.rid, created=self.created, choices=choices, usage=usage)
        return base


def _error_message(body: bytes) -> str | None:
    try:
        msg = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return msg if isinstance(msg, str) else None
