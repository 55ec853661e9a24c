"""``GuardedH11Protocol``: uvicorn's HTTP/1.1 connection handling with the limits a public endpoint needs.

uvicorn's h11 protocol times a connection only while it is idle *after* a response: a client that opens a
connection and sends nothing, or sends a request's head a byte at a time (slowloris), or one byte after a
response (which disarms the idle timer), holds the connection, and its memory, forever. Its answer to a
malformed request is a plain-text 400, unlike every other error of the gateway. This subclass adds:

- a fresh connection is idle too: closed after ``keep_alive_s`` if no byte comes;
- a request's head (request line and headers) must be whole within ``head_s`` of its first byte, else
  ``408`` and the connection is closed (the body has its own limit, ``timeouts.request_body_s``, enforced by the
  app, which is reading it by then);
- a malformed request (bad request line, header, framing; headers over h11's 16 KiB) is a ``400`` with an
  OpenAI-shaped JSON body, and the connection is closed, as uvicorn does;
- the body chunks of a streamed (chunked) response are written straight to the socket, not through h11's
  state machine (``_fast_body``): the gateway's per-token cost.

Nothing here touches a request once its head is parsed: the app answers everything after that. Failure
modes: none raised; a connection that breaks the rules is answered (when the protocol state allows) and
closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from polyserve.gateway.errors import error_body


def raw_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, written without h11 (whose state may not
    allow a response: no request was parsed)."""
    body = json.dumps(error_body(status, message)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


class GuardedH11Protocol(H11Protocol):
    """Build with ``guarded_protocol(head_s)`` (uvicorn instantiates the class itself)."""

    head_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._fast_cycle: Any = None
        # idle from the start: uvicorn arms its keep-alive timer only after a first response
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # cancels the keep-alive timer, parses, starts the app on a whole head
        cycle = self.cycle
        if cycle is not None and cycle is not self._fast_cycle:
            self._fast_cycle = cycle
            _fast_body(cycle, self.transport, self.flow)
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.trailing_data[0] and not self.transport.is_closing():
            if self._head_timer is None:  # part of a head is in: it has head_s from its first byte
                self._head_timer = self.loop.call_later(self.head_s, self._head_timeout)
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        msg = f"request head (request line and headers) not received within {self.head_s:g} s"
        self.transport.write(raw_error(408, "Request Timeout", msg))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request: a JSON 400, then close (uvicorn's own is plain text)."""
        self.transport.write(raw_error(400, "Bad Request", "invalid HTTP request: malformed request line, "
                                                           "header or body framing, or headers over 16 KiB"))
        self.transport.close()


_NO_BODY = (204, 304)
WRITE_EXTENSION = "polyserve.write"  # scope["extensions"]: the synchronous chunk writer (``_fast_body``)


class _Capture:
    """Stands in for the transport while uvicorn writes a deferred head (it only calls ``write`` then)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)


def _fast_body(cycle: Any, transport: asyncio.Transport, flow: Any) -> None:
    """Give ``cycle`` (uvicorn's request/response cycle, before its app runs) a ``send`` that writes the body
    chunks of a chunked response straight to the transport, in HTTP/1.1 chunked framing: the gateway's hot
    path, one chunk per token. h11 would build an event, run its state machine and frame the same bytes;
    for chunked bodies it counts nothing, so its state stays right (the response's start and its end still go
    through it: the last message, ``more_body`` false, writes the terminating chunk). Everything else goes to
    uvicorn's own ``send``. The app reads ``send`` when it starts, which is after this runs.

    The start of a chunked response is held until its first body message and written with it (the gateway
    always sends them back to back): one packet, and one wake-up of the client, for the head and the first
    token.

    Also puts ``write_now(body) -> bool`` in ``scope["extensions"]["polyserve.write"]``: the same write,
    callable from a plain callback (the gateway relays upstream bytes from the upstream socket's callback,
    with no task switch per token); it refuses (False) whenever ``send`` would have had to wait."""
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

    cycle.scope.setdefault("extensions", {})[WRITE_EXTENSION] = write_now

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
            status = message["status"]
            framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in message.get("headers", ()))
            chunked = status >= 200 and status not in _NO_BODY and not framed  # h11 chooses chunked then
            if chunked:
                deferred = message  # one write, one packet, one wake-up of the client for head + first token
                return
        await orig(message)

    cycle.send = send


def guarded_protocol(head_s: float) -> type[Any]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this head limit."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_s": head_s})
