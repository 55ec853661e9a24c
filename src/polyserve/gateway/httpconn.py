"""``GuardedHttpProtocol``: uvicorn's HTTP/1.1 connection handling (httptools) with the limits a public endpoint
needs.

Why httptools rather than uvicorn's h11 protocol: on the gateway's first-token path h11, a pure-Python state
machine, parsed each request in ~0.4 ms and built each response head in ~0.3 ms on the 2-core development
machine (timestamps along the path, one stream); httptools (llhttp, in C) is what vLLM's own uvicorn serves
with. uvicorn's protocol times a connection only while it is idle *after* a response: a client that opens a
connection and sends nothing, or sends a request's head a byte at a time (slowloris), holds the connection,
and its memory, forever; it bounds neither the head's size nor its time; its answer to a malformed request
is a plain-text 400, unlike every other error of the gateway. This subclass adds:

- a fresh connection is idle too: closed after ``keep_alive_s`` if no byte comes;
- a request's head (request line and headers) must be whole within ``head_s`` of its first byte, else
  ``408`` and the connection is closed (the body has its own limit, ``timeouts.request_body_s``, enforced by the
  app, which is reading it by then);
- a head over ``MAX_HEAD_BYTES`` is a ``431`` and the connection is closed;
- a malformed request (bad request line, header, framing) is a ``400`` with an OpenAI-shaped JSON body, and
  the connection is closed, as uvicorn does;
- the body chunks of a streamed (chunked) response are written straight to the socket (``_fast_body``), the
  response's head with its first chunk: the gateway's per-token cost.

Nothing here touches a request once its head is parsed: the app answers everything after that. Failure
modes: none raised; a connection that breaks the rules is answered (when no response is under way) and
closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from polyserve.gateway.errors import error_body

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; a larger head is answered 431


def raw_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, written by hand (no request was parsed,
    so there is no response cycle to write it)."""
    body = json.dumps(error_body(status, message)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


class _HeadTooLarge(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """Build with ``guarded_protocol(head_s)`` (uvicorn instantiates the class itself)."""

    head_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = -1  # bytes of the head in progress, as the parser hands them on; -1: none in progress
        self._head_raw = 0  # bytes of the reads that came while that head was in progress
        self._too_large = False
        self._fast_cycle: Any = None
        # idle from the start: uvicorn arms its keep-alive timer only after a first response
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        in_head = self._head_bytes >= 0
        super().data_received(data)  # cancels the keep-alive timer, parses, starts the app on a whole head
        if self.parser is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle is not self._fast_cycle:
            self._fast_cycle = cycle
            _fast_body(cycle, self.transport, self.flow)
        if self._head_bytes >= 0:  # a head still incomplete after this read: the reads it spans are bounded
            if in_head:  # (the parser keeps a header's pieces until it is whole: a slow giant header)
                self._head_raw += len(data)
            if self._head_raw > MAX_HEAD_BYTES:
                self._too_large = True
                self.send_400_response("")

    # parser callbacks (llhttp calls them from feed_data)
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_raw = 0
        if self._head_timer is None:  # the head has head_s from its first byte
            self._head_timer = self.loop.call_later(self.head_s, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = -1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        """A head that arrived whole in one read is measured here (the parser raises what this raises: a 431)."""
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._head_bytes < 0:
            return
        msg = f"request head (request line and headers) not received within {self.head_s:g} s"
        self._head_bytes = -1
        self.transport.write(raw_error(408, "Request Timeout", msg))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """The parser could not take the request: a JSON 400 (431 for a head too large), then close (uvicorn's own
        is plain text)."""
        if self.transport.is_closing():
            return
        if self._too_large:
            out = raw_error(431, "Request Header Fields Too Large",
                            f"request head (request line and headers) over {MAX_HEAD_BYTES // 1024} KiB")
        else:
            out = raw_error(400, "Bad Request", "invalid HTTP request: malformed request line, header or body "
                                                "framing")
        self.transport.write(out)
        self.transport.close()


_NO_BODY = (204, 304)
WRITE_EXTENSION = "polyserve.write"  # scope["extensions"]: the synchronous chunk writer (``_fast_body``)
START_EXTENSION = "polyserve.start"  # scope["extensions"]: the synchronous response start (``_fast_body``)


def _chunked(start: dict[str, Any]) -> bool:
    """Whether uvicorn frames the body of this (HTTP/1.1) response start in chunks: it has a body and neither
    a content-length nor a transfer-encoding of its own."""
    framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in start.get("headers", ()))
    return start["status"] >= 200 and start["status"] not in _NO_BODY and not framed


def _now(coro: Any) -> None:
    """Run ``coro`` to its end now; it must not suspend (uvicorn's ``send`` of a response start, which awaits
    only while writing is paused: callers check that first). One that does is closed and is a RuntimeError."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a response start that was to be written at once had to wait")


class _Capture:
    """Stands in for the transport while uvicorn writes a deferred head (it only calls ``write`` then)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)


def _fast_body(cycle: Any, transport: asyncio.Transport, flow: Any) -> None:
    """Give ``cycle`` (uvicorn's request/response cycle, before its app runs) a ``send`` that writes the body
    chunks of a chunked response straight to the transport, in HTTP/1.1 chunked framing: the gateway's hot
    path, one chunk per token, without uvicorn's per-message checks (the response's start and its end still go
    through uvicorn: the last message, ``more_body`` false, writes the terminating chunk; for chunked bodies it
    counts nothing, so its state stays right). Everything else goes to
    uvicorn's own ``send``. The app reads ``send`` when it starts, which is after this runs.

    The start of a chunked response is held until its first body message and written with it (the gateway
    always sends them back to back): one packet, and one wake-up of the client, for the head and the first
    token.

    Also puts ``write_now(body) -> bool`` in ``scope["extensions"]["polyserve.write"]``: the same write,
    callable from a plain callback (the gateway relays upstream bytes from the upstream socket's callback,
    with no task switch per token); it refuses (False) whenever ``send`` would have had to wait. And
    ``start_now(start, body) -> bool`` in ``["polyserve.start"]``: a chunked response's start and first chunk
    written from a plain callback (the gateway's first token, relayed from the upstream socket's callback);
    after it, ``send`` goes on with the body."""
    orig = cycle.send
    http11 = cycle.scope.get("http_version") == "1.1" and cycle.scope.get("method") != "HEAD"
    chunked = False
    deferred: dict[str, Any] | None = None  # a chunked response's start, written with its first bytes

    def write_now(body: bytes) -> bool:
        """Write a body chunk now, synchronously, if the response is chunked, under way and its socket
        not backed up; False (nothing written) otherwise: the caller then uses ``send``."""
        if not chunked or deferred is not None or flow.write_paused or cycle.disconnected or cycle.response_complete:
            return False
        if body:
            transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return True

    def start_now(start: dict[str, Any], body: bytes) -> bool:
        """Write a chunked response's start and its first chunk now, synchronously, if no response is under
        way and the socket is not backed up; False (nothing written) otherwise: the caller then uses ``send``.
        Raises what uvicorn raises for a bad header."""
        nonlocal chunked
        if (deferred is not None or chunked or not http11 or cycle.response_started or flow.write_paused
                or cycle.disconnected or not _chunked(start)):
            return False
        head = _Capture()
        cycle.transport = head  # uvicorn writes the head there
        try:
            _now(orig(start))
        finally:
            cycle.transport = transport
        chunked = True
        transport.write(b"".join(head.out) + (b"%x\r\n%b\r\n" % (len(body), body) if body else b""))
        return True

    ext = cycle.scope.setdefault("extensions", {})
    ext[WRITE_EXTENSION] = write_now
    ext[START_EXTENSION] = start_now

    async def send(message: dict[str, Any]) -> None:
        nonlocal chunked, deferred
        if deferred is not None:  # the head goes out now, in the same write as these bytes when they are a chunk
            start, deferred = deferred, None
            if (message["type"] == "http.response.body" and message.get("more_body", False)
                    and not flow.write_paused and not cycle.disconnected):
                head = _Capture()
                cycle.transport = head  # uvicorn writes the head there
                try:
                    await orig(start)
                finally:
                    cycle.transport = transport
                body = message.get("body", b"")
                transport.write(b"".join(head.out) + (b"%x\r\n%b\r\n" % (len(body), body) if body else b""))
                return
            await orig(start)
        if chunked and message["type"] == "http.response.body" and message.get("more_body", False):
            if flow.write_paused and not cycle.disconnected:
                await flow.drain()
            if cycle.disconnected or cycle.response_complete:
                return
            body = message.get("body", b"")
            if body:
                transport.write(b"%x\r\n%b\r\n" % (len(body), body))
            return
        if message["type"] == "http.response.start" and http11:
            chunked = _chunked(message)
            if chunked:
                deferred = message  # one write, one packet, one wake-up of the client for head + first token
                return
        await orig(message)

    cycle.send = send


def guarded_protocol(head_s: float) -> type[Any]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this head limit."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"head_s": head_s})
