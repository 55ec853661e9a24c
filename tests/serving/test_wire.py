"""The lean upstream client over real loopback sockets: chunked bodies, keep-alive reuse, stale connections."""

from __future__ import annotations

import asyncio

import pytest

from polyserve.gateway.backend import open_stream
from polyserve.serving.upstream import UpstreamFailure
from polyserve.serving.wire import PUSH_STOP, WireClient

run = asyncio.run


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


async def _chunked_server(parts: list[bytes], gap_s: float = 0.005, end: bool = True):
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for p in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(p), p))
            await writer.drain()
            await asyncio.sleep(gap_s)
        if end:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        else:
            writer.close()

    return await _server(handler)


def test_push_mode_hands_every_chunk_to_the_sink_from_the_callback_and_ends_true() -> None:
    parts = [b"data: %d\n\n" % i for i in range(20)]

    async def main():
        server, url = await _chunked_server(parts)
        c = WireClient(1.0)
        r = await open_stream(c, url, b"{}")
        got: list[bytes] = []
        ended = await r.push(lambda data: got.append(data) is None)
        await r.aclose()
        await c.aclose()
        server.close()
        return b"".join(got), ended

    body, ended = run(main())
    assert ended is True and body == b"".join(parts)


def _push_then_rest(parts: list[bytes], sink, on_pushed=lambda: None) -> tuple[bool, list[bytes]]:
    """Serve ``parts`` chunked, push the response to ``sink`` until it ends or stops, call ``on_pushed``, then
    read the rest with ``chunks()``: (what push returned, the rest)."""

    async def main():
        server, url = await _chunked_server(parts)
        c = WireClient(1.0)
        r = await open_stream(c, url, b"{}")
        ended = await r.push(sink)
        on_pushed()
        rest = [x async for x in r.chunks()]
        await r.aclose()
        server.close()
        return ended, rest

    return run(main())


def test_a_sink_that_refuses_hands_the_rest_back_to_chunks_in_order() -> None:
    parts = [b"data: %d\n\n" % i for i in range(12)]
    got: list[bytes] = []

    def sink(data: bytes) -> bool:
        if len(got) >= 3:
            return False  # e.g. the client's socket is backed up: nothing taken
        got.append(data)
        return True

    ended, rest = _push_then_rest(parts, sink)
    assert ended is False and b"".join(got + rest) == b"".join(parts)


def test_a_sink_that_stops_keeps_what_it_took_and_the_rest_comes_from_chunks_in_order() -> None:
    """PUSH_STOP (the gateway's first-token relay): the bytes of that call are the sink's, none is pushed
    after, and ``chunks()`` goes on from the next byte."""
    parts = [b"data: %d\n\n" % i for i in range(12)]
    got: list[bytes] = []
    calls: list[int] = []

    def sink(data: bytes) -> int:
        got.append(data)
        return PUSH_STOP if b"data: 2" in b"".join(got) else True

    ended, rest = _push_then_rest(parts, sink, lambda: calls.append(len(got)))
    assert ended is False and calls == [len(got)]  # nothing pushed once it stopped
    assert b"data: 2" in b"".join(got) and b"".join(got + rest) == b"".join(parts)


def test_push_mode_raises_on_a_cut_stream_on_silence_and_on_the_sinks_own_error() -> None:
    async def main():
        out = []
        server, url = await _chunked_server([b"data: a\n\n"], end=False)
        c = WireClient(1.0)
        r = await open_stream(c, url, b"{}")
        with pytest.raises(UpstreamFailure) as broken:
            await r.push(lambda d: True)
        out.append(broken.value.kind)
        server.close()

        async def silent(reader, writer):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await asyncio.sleep(3)

        server, url = await _server(silent)
        r = await open_stream(c, url, b"{}")
        r.idle_s = 0.3
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamFailure) as idle:
            await r.push(lambda d: True)
        out += [idle.value.kind, asyncio.get_running_loop().time() - t0]
        await r.aclose()
        server.close()

        server, url = await _chunked_server([b"data: a\n\n", b"data: b\n\n"])
        r = await open_stream(c, url, b"{}")

        def bad(d: bytes) -> bool:
            raise RuntimeError("sink bug")

        with pytest.raises(RuntimeError, match="sink bug"):
            await r.push(bad)
        await r.aclose()
        server.close()
        return out

    broken, idle, took = run(main())
    assert broken == "broken" and idle == "timeout" and 0.25 <= took < 1.5
