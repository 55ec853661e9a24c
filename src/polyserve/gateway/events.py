"""Reading an upstream SSE stream just enough to account for it, without re-framing what is forwarded.

The gateway forwards the backend's bytes as they arrive; it only needs to know, per chunk, how many *tokens*
it carried (to time the first token, feed the ledger and check the deadlines), whether ``data: [DONE]`` came
(the stream finished properly) and whether the backend sent an error event. ``EventScanner`` splits bytes into
whole events (an event may straddle two reads; the tail is kept) and classifies each with byte searches, not
a JSON parse, so a token costs a few microseconds.

What counts as a token event: a ``data: {...}`` event with a non-empty ``text`` (completions) or ``content``
(chat) field. Not tokens: the chat role chunk (``"content":""``), the usage chunk (``"choices":[]``), a
final chunk with empty text. A backend that packs several tokens in one event is counted as one (vLLM sends
one event per engine step); the count then undercounts and TPOT is overestimated, never the reverse.

``Aggregator`` builds the non-streaming response from the events of a stream (the gateway always streams
upstream, so it sees the first token of every request), with the chunks' ``logprobs`` concatenated (a real
engine's: completions' ``tokens``/``token_logprobs``/``top_logprobs``/``text_offset``, whose offsets vLLM
streams as absolute, and chat's ``content``), so asking for them works without streaming too.
"""

from __future__ import annotations

import json
import re

_TOKEN = re.compile(rb'"(?:text|content)":\s*"(?!")')
_DONE = b"data: [DONE]"
_ERROR = re.compile(rb'^data:\s*\{\s*"error"')


def is_token_event(ev: bytes) -> bool:
    """Whether one event (``data: {...}``, without the blank line) carries a token."""
    return _TOKEN.search(ev) is not None


class EventScanner:
    __slots__ = ("done", "error", "events", "keep", "tail", "tokens")

    def __init__(self, keep: bool = False) -> None:
        self.tail = b""
        self.tokens = 0  # token events seen so far
        self.done = False  # data: [DONE] seen
        self.error: bytes | None = None  # the first error event, if the backend sent one
        self.keep = keep  # keep the data of every event (the non-streaming path needs them)
        self.events: list[bytes] = []

    def feed(self, chunk: bytes) -> int:
        """Account for ``chunk``; returns the number of token events it completed."""
        if (not self.tail and not self.keep and chunk.startswith(b"data: {") and chunk.endswith(b"\n\n")
                and chunk.find(b"\n\n") == len(chunk) - 2 and b"\r" not in chunk):
            # the usual chunk of a stream: one whole JSON event (a token); no split, no tail
            if _ERROR.match(chunk) is not None:
                if self.error is None:
                    self.error = chunk[:-2]
                return 0
            if _TOKEN.search(chunk) is not None:
                self.tokens += 1
                return 1
            return 0
        data = self.tail + chunk if self.tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        parts = data.split(b"\n\n")
        self.tail = parts.pop()
        n = 0
        for ev in parts:
            if not ev.startswith(b"data:"):
                continue  # comments, event:/id: lines
            if ev.startswith(_DONE):
                self.done = True
                continue
            if _ERROR.match(ev) is not None:
                if self.error is None:
                    self.error = ev
            elif _TOKEN.search(ev) is not None:
                n += 1
            if self.keep:
                self.events.append(ev)
        self.tokens += n
        return n


class Aggregator:
    """The whole (non-streaming) OpenAI response from a stream's events, as vLLM would have answered."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat

    def build(self, events: list[bytes]) -> dict[str, object]:
        texts: list[str] = []
        head: dict[str, object] = {}
        usage: object = None
        finish: object = None
        logprobs: dict[str, list[object]] | None = None  # the chunks' logprobs, concatenated
        for ev in events:
            try:
                doc = json.loads(ev[5:])
            except ValueError:
                continue
            if not isinstance(doc, dict) or "error" in doc:
                continue
            if not head:
                head = doc
            if doc.get("usage"):
                usage = doc["usage"]
            for ch in doc.get("choices") or []:
                piece = ch.get("delta", {}).get("content") if self.chat else ch.get("text")
                if piece:
                    texts.append(piece)
                lp = ch.get("logprobs")
                if isinstance(lp, dict):
                    logprobs = logprobs if logprobs is not None else {}
                    for k, v in lp.items():
                        if isinstance(v, list):
                            logprobs.setdefault(k, []).extend(v)
                if ch.get("finish_reason") is not None:
                    finish = ch["finish_reason"]
        text = "".join(texts)
        if self.chat:
            choice: dict[str, object] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            obj = "text_completion"
        return {
            "id": head.get("id"),
            "object": obj,
            "created": head.get("created"),
            "model": head.get("model"),
            "choices": [choice],
            "usage": usage,
        }
