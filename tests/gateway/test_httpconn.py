"""The gateway's HTTP/1.1 connection handling: the synchronous chunk writer refuses whenever ``send`` would
have to wait, and writes exactly the chunked framing h11 would; the synchronous response start (the first
token's relay) writes the head and the first chunk at once, through uvicorn's own cycle; heads are bounded."""

from __future__ import annotations

import asyncio
import json

import h11

from polyserve.gateway.httpconn import MAX_HEAD_BYTES, START_EXTENSION, WRITE_EXTENSION, _fast_body


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
        self.response_started = False
        self.response_complete = False
        self.transport = transport
        self.sent: list[dict] = []

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
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


# ---- the real protocol (uvicorn's httptools cycle) over a recording transport ----------------------------------
class _RecTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):  # type: ignore[override]
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _serve(app, data: list[bytes], head_s: float = 10.0, settle: int = 20) -> _RecTransport:
    """Feed ``data`` (one read each) to a ``GuardedHttpProtocol`` running ``app``; what it wrote."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from polyserve.gateway.httpconn import guarded_protocol

    async def main() -> _RecTransport:
        cfg = Config(app=app, http=guarded_protocol(head_s), ws="none", lifespan="off", log_level="critical")
        cfg.load()
        proto = cfg.http_protocol_class(config=cfg, server_state=ServerState(), app_state={})
        t = _RecTransport()
        proto.connection_made(t)
        for d in data:
            proto.data_received(d)
            for _ in range(settle):  # let the app's task run
                await asyncio.sleep(0)
        proto.connection_lost(None)
        return t

    return asyncio.run(main())


def _response(out: list[bytes]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Parse what a server wrote as an HTTP/1.1 client would: (status, headers, body)."""
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    c.send(h11.EndOfMessage())
    c.receive_data(b"".join(out))
    resp = c.next_event()
    assert isinstance(resp, h11.Response), resp
    body = b""
    while True:
        ev = c.next_event()
        if isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            return resp.status_code, list(resp.headers), body
        else:
            raise AssertionError(ev)


REQ = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


def test_start_now_writes_the_head_and_the_first_chunk_in_one_write_and_send_goes_on() -> None:
    """The gateway's first token leaves from a plain callback (no await): head and first chunk in one write,
    then the body goes on through ``send`` and ends as a well-formed chunked response."""
    seen = {}

    async def app(scope, receive, send):
        await receive()
        start_now = scope["extensions"][START_EXTENSION]
        start = {"type": "http.response.start", "status": 200, "headers": [(b"x-polyserve-tier", b"t20")]}
        seen["first"] = start_now(start, b"data: 1\n\n")  # synchronous, as from a socket callback
        seen["again"] = start_now(start, b"data: 1\n\n")  # a response is under way: refused, nothing written
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    t = _serve(app, [REQ])
    assert seen == {"first": True, "again": False}
    assert t.out[0].startswith(b"HTTP/1.1 200 OK\r\n") and t.out[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    status, headers, body = _response(t.out)
    assert status == 200 and (b"x-polyserve-tier", b"t20") in headers and (b"transfer-encoding", b"chunked") in headers
    assert body == b"data: 1\n\ndata: 2\n\n"


def test_start_now_refuses_a_framed_response_and_a_backed_up_socket() -> None:
    seen = {}

    async def app(scope, receive, send):
        await receive()
        start_now = scope["extensions"][START_EXTENSION]
        framed = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        seen["framed"] = start_now(framed, b"ok")
        app.proto_flow.write_paused = True
        seen["paused"] = start_now({"type": "http.response.start", "status": 200, "headers": []}, b"x")
        app.proto_flow.write_paused = False
        await send(framed)
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    from polyserve.gateway import httpconn

    orig = httpconn._fast_body

    def spy(cycle, transport, flow):
        app.proto_flow = flow
        orig(cycle, transport, flow)

    httpconn._fast_body = spy
    try:
        t = _serve(app, [REQ])
    finally:
        httpconn._fast_body = orig
    assert seen == {"framed": False, "paused": False}
    assert _response(t.out) == (200, _response(t.out)[1], b"ok")


def _error(t: _RecTransport) -> tuple[int, dict]:
    status, headers, body = _response(t.out)
    assert (b"content-type", b"application/json") in headers and t.closed
    return status, json.loads(body)["error"]


async def _never(scope, receive, send):  # a head that is refused never reaches the app
    raise AssertionError("the app ran")


def test_a_head_over_64_kib_is_a_431_whether_it_comes_in_one_read_or_dripped() -> None:
    big = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
    endless = big[:-4] + b"a" * 4096  # a header that never ends: the parser holds its pieces; the reads count
    for reads in ([big], [big[i : i + 1024] for i in range(0, len(big), 1024)],
                  [endless[i : i + 1024] for i in range(0, len(endless), 1024)]):
        status, err = _error(_serve(_never, reads, settle=1))
        assert status == 431 and err["code"] == 431 and "64 KiB" in err["message"]


def test_a_head_just_under_the_limit_is_served() -> None:
    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n"
    for reads in ([head], [head[i : i + 4096] for i in range(0, len(head), 4096)]):
        assert _response(_serve(ok, reads).out)[0] == 200


def test_a_malformed_request_is_a_json_400_and_the_connection_closes() -> None:
    status, err = _error(_serve(_never, [b"GET / HTTP/1.1\r\nbad header\r\n\r\n"], settle=1))
    assert status == 400 and err["code"] == 400 and "invalid HTTP request" in err["message"]
