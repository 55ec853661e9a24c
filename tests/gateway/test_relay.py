"""The first token's relay from the upstream socket's callback (``_until_first_token`` with the server's
``polyserve.start`` extension and the upstream's push mode): the head and the first token leave inside the
callback, once; the attempt's timeout firing after that relay cannot turn a served request into a retry."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import polyserve.gateway.app as app_mod
from polyserve.gateway import config_from_dict, create_gateway_app
from polyserve.gateway.httpconn import START_EXTENSION, WRITE_EXTENSION
from polyserve.serving.wire import PUSH_STOP, TAKEN

MODEL = "llama-3.1-8b"


def _event(i: int) -> bytes:
    return b"data: " + json.dumps({"id": "x", "object": "text_completion", "choices": [
        {"index": 0, "text": f" t{i}", "finish_reason": None}]}).encode() + b"\n\n"


class _Stream:
    """An upstream stream in push mode. ``stall_s``: how long the callback's push waits after the sink stopped
    it (the attempt's timeout can fire then, after the relay, before the gateway's task runs again)."""

    status = 200

    def __init__(self, parts: list[bytes], stall_s: float, log: list[str]) -> None:
        self.parts = parts
        self.i = 0
        self.stall_s = stall_s
        self.log = log
        self.idle_s: float | None = None

    async def push(self, sink: Any) -> bool:
        while self.i < len(self.parts):
            r = sink(self.parts[self.i])
            if not r:
                return False
            self.i += 1
            if r != TAKEN:
                assert r == PUSH_STOP
                self.log.append("push stopped")
                await asyncio.sleep(self.stall_s)
                return False
        return True

    async def chunks(self):
        while self.i < len(self.parts):
            self.i += 1
            yield self.parts[self.i - 1]

    async def aclose(self) -> None:
        pass


def _serve_one(monkeypatch: pytest.MonkeyPatch, stall_s: float, first_token_s: float) -> dict[str, Any]:
    parts = [_event(i) for i in range(5)] + [b"data: [DONE]\n\n"]
    log: list[str] = []
    opened: list[str] = []

    async def fake_open(upstream: Any, url: str, body: bytes) -> _Stream:
        opened.append(url)
        return _Stream(parts, stall_s, log)

    monkeypatch.setattr(app_mod, "open_stream", fake_open)
    cfg = config_from_dict({"model": MODEL, "backends": ["http://e0"], "policy": "minimal", "retries": 2,
                            "timeouts": {"first_token_s": first_token_s, "first_token_slo_factor": 0}})
    out: dict[str, Any] = {"relayed": [], "written": [], "sent": []}

    def start_now(start: dict, body: bytes) -> bool:
        out["relayed"].append((start, body))
        log.append("relay")
        return True

    def write_now(body: bytes) -> bool:
        out["written"].append(body)
        return True

    async def main() -> None:
        gw = create_gateway_app(cfg)
        body = json.dumps({"model": MODEL, "prompt": "a b", "max_tokens": 5, "stream": True}).encode()
        scope = {"type": "http", "method": "POST", "path": "/v1/completions", "http_version": "1.1",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "extensions": {START_EXTENSION: start_now, WRITE_EXTENSION: write_now}}
        msgs = [{"type": "http.request", "body": body, "more_body": False}]
        forever = asyncio.Event()

        async def receive() -> dict:
            if msgs:
                return msgs.pop()
            await forever.wait()
            return {"type": "http.disconnect"}

        async def send(m: dict) -> None:
            out["sent"].append(m)

        try:
            await asyncio.wait_for(gw(scope, receive, send), 10)
        finally:
            await gw.aclose()
        out["failed"] = [(s.labels, s.value) for f in gw.metrics.registry.collect() for s in f.samples
                         if s.name == "polyserve_backend_errors_total" and s.value
                         and s.labels["kind"] != "scrape"]  # (http://e0 has no /metrics to scrape)

    asyncio.run(main())
    out["opened"], out["log"] = opened, log
    return out


def test_the_first_token_and_the_head_are_relayed_once_from_the_callback(monkeypatch) -> None:
    out = _serve_one(monkeypatch, stall_s=0.0, first_token_s=5.0)
    (start, first), = out["relayed"]
    assert out["log"][:2] == ["relay", "push stopped"]  # inside the push, before the task ran again
    assert start["status"] == 200 and (b"x-polyserve-server", b"0") in start["headers"]
    assert first == _event(0)
    assert not any(m["type"] == "http.response.start" for m in out["sent"])  # no second head
    rest = b"".join(out["written"]) + b"".join(m.get("body", b"") for m in out["sent"])
    assert rest == b"".join(_event(i) for i in range(1, 5)) + b"data: [DONE]\n\n"
    assert out["sent"][-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_an_attempt_timeout_that_fires_after_the_relay_is_no_failure_and_no_retry(monkeypatch) -> None:
    """The relay went out, then the attempt's first-token timer fired before the task resumed: the client has
    a 200 and its first token, so the request is served on, never retried (a second head) nor a 504."""
    out = _serve_one(monkeypatch, stall_s=0.3, first_token_s=0.05)
    assert len(out["opened"]) == 1 and len(out["relayed"]) == 1 and out["failed"] == []
    rest = b"".join(out["written"]) + b"".join(m.get("body", b"") for m in out["sent"])
    assert rest.endswith(b"data: [DONE]\n\n") and b"error" not in rest


# ---- the upstream body with the forwarded fields spliced in -----------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from polyserve.gateway.app import splice_json  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                     max_leaves=8)


@given(st.dictionaries(st.text(max_size=6), _json, min_size=1, max_size=5),
       st.dictionaries(st.sampled_from(["polyserve_slo", "priority", "x"]), _json, min_size=1),
       st.sampled_from([None, 2]), st.sampled_from(["", "\n", " \r\n"]))
@settings(max_examples=200, deadline=None)
def test_a_spliced_body_decodes_to_the_body_with_the_fields_added(body, extra, indent, tail) -> None:
    body = {k: v for k, v in body.items() if k not in extra}
    if not body:
        body = {"prompt": "a"}
    raw = json.dumps(body, indent=indent).encode() + tail.encode()
    assert json.loads(splice_json(raw, extra)) == {**body, **extra}
