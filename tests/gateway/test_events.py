"""The SSE scanner counts tokens exactly, across any split of the bytes, and ignores non-token events."""

from __future__ import annotations

import json

from polyserve.gateway.events import Aggregator, EventScanner
from polyserve.serving.openai import ChunkWriter


def _stream(chat: bool, n: int) -> bytes:
    w = ChunkWriter(chat, "id-1", 7, "m", True)
    parts = [w.role()] if chat else []
    parts += [w.token(f" w{k}", k == n - 1) for k in range(n)]
    parts += [w.usage(3, n), w.done()]
    return "".join(parts).encode()


def test_token_count_is_exact_for_every_split_point() -> None:
    for chat in (False, True):
        data = _stream(chat, 5)
        for cut in range(0, len(data), 7):
            s = EventScanner()
            got = s.feed(data[:cut]) + s.feed(data[cut:])
            assert got == 5 and s.tokens == 5 and s.done and s.error is None


def test_role_usage_and_empty_chunks_are_not_tokens_error_events_are_seen() -> None:
    s = EventScanner()
    s.feed(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
    s.feed(b'data: {"choices":[{"text":"","finish_reason":"stop"}]}\n\n')
    s.feed(b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n: comment\n\n')
    assert s.tokens == 0
    s.feed(b'data: {"error": {"message": "boom \\"text\\": \\"x\\"", "code": 500}}\r\n\r\n')
    assert s.tokens == 0 and s.error is not None and not s.done


def test_aggregator_builds_the_non_streaming_answer() -> None:
    for chat in (False, True):
        s = EventScanner(keep=True)
        s.feed(_stream(chat, 3))
        doc = Aggregator(chat).build(s.events)
        text = doc["choices"][0]["message"]["content"] if chat else doc["choices"][0]["text"]
        assert text == " w0 w1 w2"
        assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        assert doc["choices"][0]["finish_reason"] == "length" and doc["id"] == "id-1"
        json.dumps(doc)


def test_the_one_event_fast_path_counts_exactly_as_the_general_path() -> None:
    """A chunk that is one whole event takes a shortcut; fed byte by byte, the same stream counts the same."""
    from polyserve.gateway.events import EventScanner

    stream = [b'data: {"choices":[{"text":"a"}]}\n\n', b'data: {"choices":[{"text":""}]}\n\n',
              b'data: {"error": {"message": "x", "text": "y"}}\n\n', b'data: {"choices":[],"usage":{}}\n\n',
              b': comment\n\n', b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n', b"data: [DONE]\n\n"]
    fast, slow = EventScanner(), EventScanner()
    counts = [fast.feed(c) for c in stream]
    for c in stream:
        for i in range(len(c)):
            slow.feed(c[i : i + 1])
    assert counts == [1, 0, 0, 0, 0, 1, 0]
    assert (fast.tokens, fast.done, fast.error) == (slow.tokens, slow.done, slow.error) == (
        2, True, b'data: {"error": {"message": "x", "text": "y"}}')
