"""The lean upstream client over real loopback sockets: chunked bodies, keep-alive reuse, stale connections."""

from __future__ import annotations

import asyncio

import pytest

from polyserve.gateway.backend import UpstreamFailure, open_stream
from polyserve.gateway.wire import WireClient

from .helpers import run


async def _server(handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/completions"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return await reader.readexactly(n)


def test_chunked_stream_arrives_chunk_by_chunk_and_the_connection_is_reused() -> None:
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        try:
            while True:
                body = await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for part in (b"data: a\n\n", body, b"data: [DONE]\n\n"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()

    async def main():
        server, url = await _server(handler)
        c = WireClient(1.0)
        got = []
        for k in range(3):
            r = await open_stream(c, url, b'{"k": %d}' % k)
            got.append([chunk async for chunk in r.chunks()])
            await r.aclose()
        await c.aclose()
        server.close()
        return got

    got = run(main())
    assert got[2] == [b"data: a\n\n", b'{"k": 2}', b"data: [DONE]\n\n"]
    assert connections == 1


def test_a_stale_keep_alive_connection_is_replaced_and_errors_are_classified() -> None:
    async def closes_after_one(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy")
        await writer.drain()
        writer.close()  # the client's pooled connection is now stale

    async def main():
        server, url = await _server(closes_after_one)
        c = WireClient(1.0)
        with pytest.raises(UpstreamFailure) as first:
            await open_stream(c, url, b"{}")
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamFailure) as second:
            await open_stream(c, url, b"{}")  # a new connection, not an error about the old one
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamFailure) as refused:
            await open_stream(c, url, b"{}")
        return first.value, second.value, refused.value

    first, second, refused = run(main())
    assert first.kind == second.kind == "status" and first.retryable and "503" in second.message
    assert refused.kind == "connect"


def test_a_body_cut_mid_chunk_is_broken() -> None:
    async def cuts(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n9\r\nhal")
        await writer.drain()
        writer.close()

    async def main():
        server, url = await _server(cuts)
        c = WireClient(1.0)
        r = await open_stream(c, url, b"{}")
        got = []
        with pytest.raises(UpstreamFailure) as e:
            async for chunk in r.chunks():
                got.append(chunk)
        await r.aclose()
        server.close()
        return got, e.value

    got, e = run(main())
    assert got == [b"hello"] and e.kind == "broken"
