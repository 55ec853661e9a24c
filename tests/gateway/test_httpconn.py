"""The gateway's HTTP/1.1 connection handling: the synchronous chunk writer refuses whenever ``send`` would
have to wait, and writes exactly the chunked framing h11 would."""

from __future__ import annotations

import asyncio

import h11

from polyserve.gateway.httpconn import WRITE_EXTENSION, _fast_body


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, b: bytes) -> None:
        self.out.append(b)


class _Flow:
    write_paused = False

    async def drain(self) -> None:
        self.write_paused = False


class _Cycle:
    """uvicorn's cycle, as far as ``_fast_body`` uses it: ``send`` writes a marker head to ``transport``."""

    def __init__(self, transport: _Transport) -> None:
        self.scope = {"type": "http", "http_version": "1.1", "method": "POST"}
        self.disconnected = False
        self.response_complete = False
        self.transport = transport
        self.sent: list[dict] = []

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.transport.write(b"HEAD")
        else:
            self.sent.append(message)


def test_the_fast_writer_refuses_until_chunked_and_while_paused_and_frames_as_h11() -> None:
    transport, flow = _Transport(), _Flow()
    cycle = _Cycle(transport)
    _fast_body(cycle, transport, flow)  # type: ignore[arg-type]
    write = cycle.scope["extensions"][WRITE_EXTENSION]
    assert write(b"early") is False  # no response started: nothing written

    async def main() -> None:
        await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
        assert write(b"data: x\n\n") is False  # the head is held for the first body message: send writes both
        await cycle.send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        assert cycle.sent == [] and transport.out == [b"HEAD9\r\ndata: x\n\n\r\n"]  # one write: head + chunk
        transport.out.pop()
        assert write(b"data: x\n\n") is True
        flow.write_paused = True
        assert write(b"data: y\n\n") is False  # backed up: the caller must await send
        await cycle.send({"type": "http.response.body", "body": b"data: y\n\n", "more_body": True})
        cycle.disconnected = True
        assert write(b"data: z\n\n") is False

    asyncio.run(main())
    # one chunk written by each path, framed as h11 frames a chunk
    ref = h11.Connection(h11.SERVER)
    ref.receive_data(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    ref.next_event()
    ref.next_event()
    ref.send(h11.Response(status_code=200, headers=[]))
    framed = ref.send(h11.Data(data=b"data: x\n\n"))
    assert transport.out == [framed, framed.replace(b"x", b"y")]
    assert cycle.sent == []  # the start was held for the first bytes; no body went through uvicorn


def test_a_content_length_response_is_never_written_around_h11() -> None:
    transport, flow = _Transport(), _Flow()
    cycle = _Cycle(transport)
    _fast_body(cycle, transport, flow)  # type: ignore[arg-type]
    write = cycle.scope["extensions"][WRITE_EXTENSION]

    async def main() -> None:
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        assert write(b"abc") is False
        await cycle.send({"type": "http.response.body", "body": b"abc", "more_body": True})

    asyncio.run(main())
    assert transport.out == [b"HEAD"] and len(cycle.sent) == 1
