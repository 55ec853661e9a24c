"""Malformed HTTP over raw sockets against a gateway process: never a 5xx, never a hang; the connection is
answered with a 4xx (OpenAI-shaped JSON) or closed, within bounded time. And idle connections: the gateway
keeps them longer than clients do, so a client never sends a request on a connection being closed (a request
lost in flight, never counted: issue 11, item 8)."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from polyserve.bench.runner import KEEPALIVE_EXPIRY_S
from polyserve.engine import EngineConfig, launch_engine
from polyserve.gateway.config import Timeouts
from polyserve.gateway.process import launch_gateway

KEEP_ALIVE_S = 1.0
HEAD_S = 0.5
BODY_S = 0.5
BOUND_S = 6.0  # every exchange below ends (answered or closed) well within this


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    engine = launch_engine(EngineConfig(time_scale=20))
    cfg = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    cfg.write_text(
        f"model: llama-3.1-8b\nbackends: [{engine.url}]\nengine: {{time_scale: 20}}\n"
        f"timeouts: {{keep_alive_s: {KEEP_ALIVE_S}, request_head_s: {HEAD_S}, request_body_s: {BODY_S}}}\n"
    )
    g = launch_gateway(["gateway", "--config", str(cfg), "--port", "0"])
    try:
        yield g
    finally:
        g.stop()
        engine.stop()


def _addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def exchange(url: str, parts: list[bytes], *, gap_s: float = 0.0, half_close: bool = False) -> tuple[bytes, float]:
    """Send ``parts`` (``gap_s`` apart), then read until the server closes; (everything read, seconds taken).
    Fails the test if the server neither answers nor closes within ``BOUND_S``."""
    t0 = time.monotonic()
    with socket.create_connection(_addr(url), timeout=BOUND_S) as s:
        for i, p in enumerate(parts):
            if i and gap_s:
                time.sleep(gap_s)
            try:
                s.sendall(p)
            except OSError:
                break  # the server closed on us: what follows is read below
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer and no close within {BOUND_S} s; got {out[:200]!r}")
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
    return out, time.monotonic() - t0


def parse(raw: bytes) -> tuple[list[tuple[int, bytes, bytes]], bytes]:
    """The whole responses at the start of ``raw``: [(status, headers lower-cased, body)], and what is left."""
    out = []
    while True:
        m = re.match(rb"HTTP/1\.[01] (\d{3}) [^\r]*\r\n(.*?)\r\n\r\n", raw, re.S)
        if m is None:
            return out, raw
        headers, rest = m.group(2).lower(), raw[m.end() :]
        cl = re.search(rb"content-length: (\d+)", headers)
        if cl is not None:
            n = int(cl.group(1))
            if len(rest) < n:
                return out, raw
            body, rest = rest[:n], rest[n:]
        elif b"transfer-encoding: chunked" in headers:
            body = b""
            while True:
                line, sep, after = rest.partition(b"\r\n")
                if not sep:
                    return out, raw
                size = int(line, 16)
                if len(after) < size + 2:
                    return out, raw
                body, rest = body + after[:size], after[size + 2 :]
                if size == 0:
                    break
        else:
            body, rest = rest, b""
        out.append((int(m.group(1)), headers, body))
        raw = rest


def statuses(raw: bytes) -> list[int]:
    return [c for c, _, _ in parse(raw)[0]]


def read_response(s: socket.socket) -> tuple[int, bytes, bytes]:
    buf = b""
    while True:
        got, _ = parse(buf)
        if got:
            return got[0]
        data = s.recv(65536)
        assert data, f"closed after {buf[:200]!r}"
        buf += data


def check_errors(raw: bytes) -> list[int]:
    """Every response in ``raw`` is < 500 and every error body is OpenAI-shaped JSON; returns the statuses."""
    got, _ = parse(raw)
    for code, headers, body in got:
        assert code < 500, raw[:500]
        if code >= 400:
            assert b"content-type: application/json" in headers, raw[:500]
            err = json.loads(body)["error"]
            assert isinstance(err["message"], str) and err["code"] == code and isinstance(err["type"], str)
    return [c for c, _, _ in got]


GOOD = b'{"model": "llama-3.1-8b", "prompt": "a b", "max_tokens": 2}'

MALFORMED = {
    "garbage request line": [b"GARBAGE\r\n\r\n"],
    "unknown HTTP version": [b"GET /health HTTP/9.9\r\nhost: x\r\n\r\n"],
    "header without a colon": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n"],
    "control byte in a header": [b"GET /health HTTP/1.1\r\nhost: x\r\nx-a: b\x00c\r\n\r\n"],
    "space before the colon": [b"GET /health HTTP/1.1\r\nhost : x\r\n\r\n"],
    "non-ASCII target": ["GET /héalth HTTP/1.1\r\nhost: x\r\n\r\n".encode()],
    "content-length not a number": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n"],
    "negative content-length": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n"],
    "conflicting content-lengths": [
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 9\r\n\r\nabc"],
    "bad chunk size": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nab\r\n"],
    "unknown transfer-encoding": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n"],
    # a head over 64 KiB is a 431 (httpconn.MAX_HEAD_BYTES); 5,000 small headers (~45 KiB) are served
    "huge header (100 KiB)": [b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n"],
    "many headers": [b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(5000))
                     + b"\r\n"],
    "body shorter than content-length, then EOF": [
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
        b'{"prompt": "a'],
    "body longer than content-length": [
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\n" + GOOD + b"\r\n\r\n"],
    "not JSON": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n{{{{{"],
    "JSON not an object": [b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n[]"],
    "invalid UTF-8 body": [b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n\xff\xfe\xfd\xfc"],
    "wrong method": [b"DELETE /v1/completions HTTP/1.1\r\nhost: x\r\n\r\n"],
    "unknown path": [b"GET /nope/%ff%fe HTTP/1.1\r\nhost: x\r\n\r\n"],
    "request line of NUL bytes": [b"\x00" * 64 + b"\r\n\r\n"],
    "upgrade to h2c (unsupported) with a body": [
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: h2c\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(GOOD), GOOD)],
    "upgrade to websocket (not served)": [
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"],
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_http_gets_a_4xx_or_a_close_never_a_5xx_or_a_hang(gw, name: str) -> None:
    raw, took = exchange(gw.url, MALFORMED[name], half_close=True)
    codes = check_errors(raw)
    assert took < BOUND_S
    if name not in ("body shorter than content-length, then EOF",):
        assert codes, raw[:300]  # answered, not just dropped


def test_pipelined_requests_are_each_answered(gw) -> None:
    one = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(GOOD), GOOD)
    raw, _ = exchange(gw.url, [one + one + b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"])
    assert check_errors(raw) == [200, 200, 200]


def test_responses_do_not_name_the_server_software(gw) -> None:
    """No ``server: uvicorn`` header (it tells a client what software to attack); a forwarded-for header is
    just a header (the proxy-headers middleware is off: the gateway never reads the client's address)."""
    one = (b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 10.9.9.9\r\ncontent-length: %d\r\n\r\n%s"
           % (len(GOOD), GOOD))
    raw, _ = exchange(gw.url, [one + b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"])
    responses, _ = parse(raw)
    assert [c for c, _, _ in responses] == [200, 200]
    assert all(b"\r\nserver:" not in b"\r\n" + h for _, h, _ in responses)


def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_a_408(gw) -> None:
    """Slowloris: the head must be whole within request_head_s of its first byte, however steady the drip."""
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(40))
    raw, took = exchange(gw.url, [head[i : i + 4] for i in range(0, len(head), 4)], gap_s=0.1)
    assert check_errors(raw) == [408]
    assert HEAD_S <= took < HEAD_S + 2.5
    assert b"request head" in raw


def test_a_body_that_stops_coming_gets_a_408_and_the_connection_closes(gw) -> None:
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n"
    raw, took = exchange(gw.url, [head, b'{"prompt": "a b c'])
    assert check_errors(raw) == [408]
    assert b"request_body_s" in raw and b"connection: close" in raw.lower()
    assert BODY_S <= took < BODY_S + 2.5


def test_a_connection_that_never_sends_is_closed_after_the_keep_alive(gw) -> None:
    raw, took = exchange(gw.url, [])
    assert raw == b"" and KEEP_ALIVE_S - 0.2 <= took < KEEP_ALIVE_S + 2.5


def test_an_idle_connection_stays_open_for_keep_alive_s_then_the_gateway_closes_it(gw) -> None:
    req = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection(_addr(gw.url), timeout=BOUND_S) as s:
        s.sendall(req)
        assert read_response(s)[0] == 200
        time.sleep(KEEP_ALIVE_S / 2)
        s.sendall(req)  # still open: reused
        assert read_response(s)[0] == 200
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # then closed by the gateway once idle for keep_alive_s
        assert KEEP_ALIVE_S - 0.3 <= time.monotonic() - t0 < KEEP_ALIVE_S + 2.5


def test_the_gateway_keeps_idle_connections_longer_than_clients_expire_theirs() -> None:
    """The invariant behind item 8: the side that closes an idle keep-alive connection must be the client, or
    a request sent just as the server closes is lost (reset) before the gateway sees it. httpx and the openai
    client expire idle connections after 5 s; the gateway keeps them far longer. And polyserve bench, a client
    of uvicorn servers (vLLM, emulated engines: 5 s), expires its own well before."""
    import openai._constants

    clients = [httpx.Limits().keepalive_expiry, openai._constants.DEFAULT_CONNECTION_LIMITS.keepalive_expiry]
    assert all(c is not None for c in clients)
    assert Timeouts().keep_alive_s >= 10 * max(clients)  # type: ignore[type-var]
    assert KEEPALIVE_EXPIRY_S <= 5.0 / 2


def test_a_client_that_reads_slowly_still_gets_every_token_then_done(gw) -> None:
    """The relay writes tokens straight from the upstream socket's callback (httpconn's write extension, the
    upstream's push mode); a client with a 4 KiB receive buffer that pauses 1 s still gets every byte, in
    order. (Whether the gateway's writes back up far enough to take the awaiting path depends on the kernel's
    buffers; that path is tested on its own in test_httpconn and test_wire.)"""
    n = 1500
    body = json.dumps({"model": "llama-3.1-8b", "prompt": "a b", "max_tokens": n, "stream": True}).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(BOUND_S)
    s.connect(_addr(gw.url))
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        time.sleep(1.0)  # not reading: the gateway's writes back up
        raw = b""
        while data := s.recv(65536):
            raw += data
    finally:
        s.close()
    (code, _, payload), = parse(raw)[0]
    events = [e for e in payload.split(b"\n\n") if e.startswith(b"data: ")]
    assert code == 200 and events[-1] == b"data: [DONE]"
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]]
    assert len(texts) == n and texts[:3] == ["the", " quick", " brown"]
