"""The benchmark over real sockets (``WireClient``, the default without an injected client): what it sends,
how it reads a stream cut anywhere, how each failure is named, and that connections are reused."""

from __future__ import annotations

import asyncio
import json

from polyserve.bench.api import benchmark
from polyserve.bench.config import BenchConfig
from polyserve.bench.runner import KEEPALIVE_EXPIRY_S, default_upstream
from polyserve.serving.upstream import HttpxUpstream
from polyserve.serving.wire import WireClient

from .helpers import run


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict]:
    head = await reader.readuntil(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return head, json.loads(await reader.readexactly(n))


def _chunk(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


def _event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text}]}).encode() + b"\n\n"


async def _serve(handler) -> tuple[asyncio.Server, str]:
    """A server answering ``/v1/models`` itself and generation requests with ``handler(body, writer)``;
    counts connections and records each generation request's head."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            while True:
                head, body = (await reader.readuntil(b"\r\n\r\n"), None)
                if head.startswith(b"GET /v1/models"):
                    doc = json.dumps({"data": [{"id": "m"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(doc), doc))
                    await writer.drain()
                    continue
                n = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                body = json.loads(await reader.readexactly(n))
                state["heads"].append(head)
                if not await handler(body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    state: dict = {"connections": 0, "heads": []}
    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.state = state  # type: ignore[attr-defined]
    return server, f"http://127.0.0.1:{port}"


def _cfg(url: str, n: int, **kw) -> BenchConfig:
    return BenchConfig(base_url=url, model="m", num_prompts=n, random_input_len=4, random_output_len=3,
                       request_rate=float("inf"), **kw)


def test_without_a_client_generation_goes_over_sockets_with_the_slo_headers() -> None:
    assert isinstance(default_upstream(_cfg("http://127.0.0.1:1", 1), None), WireClient)  # type: ignore[arg-type]
    assert isinstance(default_upstream(_cfg("https://example.org", 1), None), HttpxUpstream)  # type: ignore[arg-type]

    async def tokens(body: dict, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        # one event cut across two reads, two events in one read, and [DONE] with the body's end
        writer.write(_chunk(_event("a")[:9]))
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(_chunk(_event("a")[9:] + _event("b")))
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(_chunk(_event("c")))
        await writer.drain()
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True

    async def main():
        server, url = await _serve(tokens)
        doc = await benchmark(_cfg(url, 3, max_concurrency=1, save_detailed=True))
        server.close()
        return doc, server.state  # type: ignore[attr-defined]

    doc, state = run(main())
    assert doc["completed"] == 3 and doc["failed"] == 0
    assert doc["generated_texts"] == ["abc"] * 3
    assert all(len(itl) == 2 for itl in doc["itls"])  # three chunk times: "a" (whole once), "b", "c"
    head = state["heads"][0].decode().lower()
    assert "x-slo-ttft-ms: " in head and "x-slo-tpot-ms: " in head and "x-polyserve-tier: " in head
    assert "user-agent: polyserve-bench" in head
    assert state["connections"] <= 2  # /v1/models and the requests, one after another, on kept-alive connections


def test_each_failure_over_sockets_is_named_as_with_httpx() -> None:
    async def script(body: dict, writer: asyncio.StreamWriter) -> bool:
        kind = body["prompt"]  # the test puts the failure to act in the prompt
        if kind == "429":
            doc = json.dumps({"error": {"message": "slow down"}}).encode()
            writer.write(b"HTTP/1.1 429 Too Many\r\ncontent-length: %d\r\n\r\n%s" % (len(doc), doc))
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + _chunk(_event("x")))
        if kind == "cut":  # the connection drops mid-stream
            await writer.drain()
            return False
        if kind == "garbage":
            writer.write(_chunk(b"data: {not json\n\n"))
        elif kind == "error":
            writer.write(_chunk(b'data: {"error": {"message": "engine fell over"}}\n\n'))
        elif kind == "nodone":  # the body ends properly but without [DONE]
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True

    async def main():
        from polyserve.bench.client import send_request
        from polyserve.bench.clock import RealClock
        from polyserve.bench.dataset import BenchRequest

        server, url = await _serve(script)
        cfg = _cfg(url, 1)
        up = default_upstream(cfg, None)  # type: ignore[arg-type]
        out = {}
        for kind in ("429", "cut", "garbage", "error", "nodone", "ok"):
            req = BenchRequest(index=0, prompt=kind, input_tokens=1, output_tokens=1, at_s=0.0, tier="t",
                               ttft_slo_ms=1e4, tpot_slo_ms=1e3)
            o = await send_request(up, cfg, "m", req, RealClock())
            out[kind] = (o.error, o.error_detail)
        await up.aclose()
        server.close()
        await server.wait_closed()
        fresh = default_upstream(cfg, None)  # type: ignore[arg-type]
        o = await send_request(fresh, cfg, "m", req, RealClock())
        out["refused"] = (o.error, o.error_detail)
        return out

    out = run(main())
    assert out["429"] == ("http_429", "slow down")
    assert out["cut"][0] == "stream_broken"
    assert out["garbage"][0] == "invalid_response"
    assert out["error"] == ("stream_error", "engine fell over")
    assert out["nodone"][0] == "stream_broken"
    assert out["ok"] == (None, "")
    assert out["refused"][0] == "connection"


def test_an_idle_connection_older_than_the_keep_alive_expiry_is_not_reused() -> None:
    async def main():
        async def one(body: dict, writer: asyncio.StreamWriter) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            return True

        server, url = await _serve(one)
        c = WireClient(1.0, keepalive_s=0.05)
        for pause in (0.0, 0.2):
            await asyncio.sleep(pause)
            r = await c.post(url + "/v1/completions", b"{}")
            assert await r.read_all() == b"ok"
            await r.aclose()
        await c.aclose()
        server.close()
        return server.state["connections"]  # type: ignore[attr-defined]

    assert KEEPALIVE_EXPIRY_S < 5.0  # uvicorn's idle timeout: the bench drops a connection before the server does
    assert run(main()) == 2
