"""``WireClient``: a minimal HTTP/1.1 client for the upstream hot path (generation streams over TCP).

Why not httpx here: profiling the gateway at 10 streams showed httpx/httpcore/h11 and anyio cancel scopes
as the largest share of the gateway's own CPU per request, and the request's headers and body going out in
two writes. Why not asyncio streams either: a ``StreamReader`` costs two awaits and a waiter per chunk
(``readline`` for the size, ``readexactly`` for the data). This client is an ``asyncio.Protocol`` per
connection that parses the response as bytes arrive, in ``data_received``: the status line and headers, then
the body (chunked transfer encoding, ``Content-Length``, or until close); the reader is woken once per read,
and takes every body piece that came in it at once (``chunks()`` yields them joined: SSE framing does not
depend on how the bytes are cut). Requests go out in one ``write`` (head and JSON body). asyncio sets
``TCP_NODELAY`` on its TCP sockets, so small writes are never held back by Nagle.

Push mode (``WireResponse.push``): the body goes to a callback straight from ``data_received``, with no
task switch per read; the gateway relays a stream's tokens that way (parse, account, write to the client's
socket) while the client's socket takes them at once, and falls back to ``chunks()`` when it does not; and
it relays the first token that way too (the response's head with it), then stops the push (``PUSH_STOP``)
to do the first token's accounting in its task.

Backpressure: a response whose unread body passes ``HIGH_WATER`` bytes (a slow client downstream) stops the
socket being read until the reader has caught up, so a stalled client cannot make the gateway buffer a whole
stream.

Connections are pooled per (host, port). A pooled connection the server has closed meanwhile (uvicorn closes
idle keep-alive connections after 5 s) is detected at checkout (EOF or loss seen) or, in a race, by EOF or a
reset before any byte of the response, in which case the request is sent once more on a fresh connection
(the server never read it).

Failures are ``UpstreamFailure`` as in ``backend``: ``connect`` (refused, unreachable, connect timeout),
``broken`` (reset, EOF mid-body, a malformed response). A response whose body was not read to its end is
closed, never reused. Timeouts other than connect are the caller's (the gateway times the first token and
the idle gaps).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from urllib.parse import urlsplit

from polyserve.serving.upstream import UpstreamFailure, idle_failure

HIGH_WATER = 256 * 1024  # unread body bytes at which reading the socket pauses
MAX_HEAD = 64 * 1024  # a response head larger than this is malformed
MAX_CHUNK = 16 * 1024 * 1024  # a chunk larger than this is malformed (a chunk is buffered whole)

_HEAD, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _LENGTH, _UNTIL_CLOSE, _DONE = range(7)

# what a push sink returns (``WireResponse.push``): True / False are TAKEN / refused
TAKEN = 1
PUSH_STOP = 2  # taken, and the push ends there: the rest of the body is left to ``chunks()``


class _Conn(asyncio.Protocol):
    """One upstream connection and the response being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _DONE  # nothing expected until a request is sent
        self.left = 0  # bytes left in the current chunk (chunked) or the body (content-length)
        self.pieces: list[bytes] = []  # body bytes parsed, not yet taken by the reader
        self.pending = 0  # their size
        self.head: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False  # connection lost or EOF seen
        self.error: str | None = None  # why the response cannot go on (malformed, cut)
        self.got_bytes = False  # any byte of the current response arrived
        self.paused = False
        self.reuse = False
        self.sink: Callable[[bytes], int] | None = None  # push mode (WireResponse.push)
        self.sink_error: BaseException | None = None
        self.last_data = 0.0  # time.monotonic() of the last bytes (push mode's idle check)
        self.idle_since = 0.0  # time.monotonic() it went back to the pool

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        try:
            self._parse()
        except ValueError as e:
            self._fail(f"malformed response: {e}")
            return
        sink = self.sink
        if sink is not None:
            self.last_data = time.monotonic()
            if self.pieces:
                data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
                try:
                    ok = sink(data)
                except Exception as e:  # the consumer's bug: stop pushing and hand it the exception
                    self.sink_error = e
                    ok = False
                if ok:
                    self.pieces.clear()
                    self.pending = 0
                if ok != TAKEN:  # refused, or taken and the push ends (PUSH_STOP): the reader is woken
                    self.sink = None
            if self.sink is not None and self.state != _DONE:
                return  # pushed on: nobody to wake
        if self.pending > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._lost("the server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(f"connection lost: {exc!r}" if exc is not None else "the server closed the connection")

    # ---- parsing -------------------------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self.buf
        while True:
            st = self.state
            if st == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ValueError(f"head over {MAX_HEAD} bytes")
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                try:
                    status = int(lines[0].split(" ", 2)[1])
                except (IndexError, ValueError):
                    raise ValueError(f"bad status line {lines[0][:80]!r}") from None
                headers: dict[str, str] = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers[k.strip().lower()] = v.strip()
                te = headers.get("transfer-encoding", "").lower()
                cl = headers.get("content-length")
                if "chunked" in te:
                    self.state = _CHUNK_SIZE
                    framed = True
                elif cl is not None and cl.isdigit():
                    self.left = int(cl)
                    self.state = _LENGTH if self.left else _DONE
                    framed = True
                else:
                    self.state = _UNTIL_CLOSE
                    framed = False
                self.reuse = framed and headers.get("connection", "").lower() != "close"
                if self.head is not None and not self.head.done():
                    self.head.set_result((status, headers))
            elif st == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ValueError("chunk size line too long")
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0].strip() or b"0", 16)
                if size > MAX_CHUNK:
                    raise ValueError(f"chunk of {size} bytes (over {MAX_CHUNK})")
                del buf[: end + 2]
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self.left = size
                    self.state = _CHUNK_DATA
            elif st == _CHUNK_DATA:
                if len(buf) < self.left + 2:
                    return  # a chunk is handed on whole (a cut one never reaches the client)
                if buf[self.left : self.left + 2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                self._piece(bytes(buf[: self.left]))
                del buf[: self.left + 2]
                self.left = 0
                self.state = _CHUNK_SIZE
            elif st == _TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self.state = _DONE
            elif st == _LENGTH:
                if not buf:
                    return
                take = bytes(buf[: self.left])
                del buf[: len(take)]
                self._piece(take)
                self.left -= len(take)
                if self.left == 0:
                    self.state = _DONE
            elif st == _UNTIL_CLOSE:
                if buf:
                    self._piece(bytes(buf))
                    buf.clear()
                return
            else:  # _DONE: bytes after the response (none expected)
                return

    def _piece(self, b: bytes) -> None:
        if b:
            self.pieces.append(b)
            self.pending += len(b)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, why: str) -> None:
        self.error = why
        if self.head is not None and not self.head.done():
            self.head.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _lost(self, why: str) -> None:
        self.closed = True
        if self.state == _UNTIL_CLOSE:
            self.state = _DONE  # the body ends with the connection
        elif self.state != _DONE and self.error is None:
            self.error = why
        if self.head is not None and not self.head.done():
            self.head.set_exception(ConnectionError(why))
        self._wake()

    # ---- the reader's side ---------------------------------------------------------------------------------
    def take(self) -> bytes:
        data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces.clear()
        self.pending = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data


class _Idle(Exception):
    pass


class WireResponse:
    """``idle_s``: see ``UpstreamStream``. Timed by one timer per response that re-arms itself only when it
    fires (every ``idle_s`` at most), not per chunk: a wait that began at ``t`` fails at ``t + idle_s`` if no
    body bytes came."""

    __slots__ = ("_client", "_conn", "_key", "_timer", "_wait_start", "idle_s", "status", "url")

    def __init__(self, client: WireClient, key: tuple[str, int], conn: _Conn, status: int, url: str) -> None:
        self._client = client
        self._key = key
        self._conn: _Conn | None = conn
        self.status = status
        self.url = url
        self.idle_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_start = 0.0

    def _check_idle(self) -> None:
        self._timer = None
        c = self._conn
        if c is None or self.idle_s is None:
            return
        loop = asyncio.get_running_loop()
        w = c.waiter
        if w is not None and not w.done():
            start = self._wait_start
            if c.sink is not None:  # push mode: the wait is the whole stream; count the silence since the last bytes
                start = max(start, c.last_data - time.monotonic() + loop.time())
            due = start + self.idle_s
            if loop.time() >= due:
                w.set_exception(_Idle())
                return
        else:
            due = loop.time() + self.idle_s
        self._timer = loop.call_at(due, self._check_idle)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (what came in one read, joined). Raises ``UpstreamFailure("broken")`` if
        the connection drops mid-body or the body is malformed, ``("timeout")`` after ``idle_s`` of waiting."""
        c = self._conn
        assert c is not None
        loop = asyncio.get_running_loop()
        while True:
            if c.pieces:
                yield c.take()
                continue
            if c.state == _DONE:
                return
            if c.error is not None:
                raise UpstreamFailure("broken", f"stream from {self.url} broke: {c.error}", retryable=True)
            await self._next_read(c, loop)

    async def _next_read(self, c: _Conn, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the connection's next read, end or error wakes ``c.waiter``; ``UpstreamFailure`` when the
        stream stays silent for ``idle_s`` (the one self-re-arming idle timer raises ``_Idle`` into the wait)."""
        c.waiter = loop.create_future()
        if self.idle_s is not None:
            self._wait_start = loop.time()
            if self._timer is None:
                self._timer = loop.call_at(self._wait_start + self.idle_s, self._check_idle)
        try:
            await c.waiter
        except _Idle:
            raise idle_failure(self.url) from None
        finally:
            c.waiter = None

    async def push(self, sink: Callable[[bytes], int]) -> bool:
        """Hand the body to ``sink`` from the socket's callback as it arrives (no task switch per read), until
        it ends (True) or ``sink`` refuses some bytes or stops (False: the rest is left to ``chunks()``).
        ``sink(data)`` returns False, having done nothing, when it cannot take ``data`` now (those bytes are
        left too); True (``TAKEN``) when it took them; ``PUSH_STOP`` when it took them and wants no more
        pushed. Raises as ``chunks()`` does (broken, idle timeout), or what ``sink`` raised."""
        c = self._conn
        assert c is not None
        if c.pieces:
            data = c.pieces[0] if len(c.pieces) == 1 else b"".join(c.pieces)
            ok = sink(data)
            if not ok:
                return False
            c.take()
            if ok != TAKEN:
                return False
        loop = asyncio.get_running_loop()
        c.sink = sink
        c.last_data = time.monotonic()
        try:
            while True:
                if c.sink_error is not None:
                    e, c.sink_error = c.sink_error, None
                    raise e
                if c.state == _DONE and not c.pieces:
                    return True
                if c.sink is None:
                    return False
                if c.error is not None:
                    raise UpstreamFailure("broken", f"stream from {self.url} broke: {c.error}", retryable=True)
                await self._next_read(c, loop)
        finally:
            c.sink = None

    async def read_all(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.state == _DONE and conn.reuse and not conn.closed and conn.error is None and not conn.buf:
            self._client._release(self._key, conn)
        elif conn.transport is not None:
            conn.transport.close()


class WireClient:
    """``max_idle_per_host``: keep-alive connections kept per (host, port); ``user_agent``: who is asking
    (the gateway, or the benchmark client); ``keepalive_s``: a pooled connection idle longer than this is
    closed instead of reused (None: reused while the server keeps it), for a caller that must never send a
    request twice: one sent just as the server closes an idle connection is otherwise sent again (the
    server never read it, but a caller counting requests would see a retry it did not ask for)."""

    def __init__(self, connect_s: float, max_idle_per_host: int = 1024, user_agent: str = "polyserve-gateway",
                 keepalive_s: float | None = None) -> None:
        self.connect_s = connect_s
        self.max_idle = max_idle_per_host
        self.user_agent = user_agent
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._split: dict[str, tuple[tuple[str, int], bytes]] = {}

    def _parts(self, url: str) -> tuple[tuple[str, int], bytes]:
        """((host, port), the request's head up to its extra headers and content-length)."""
        p = self._split.get(url)
        if p is None:
            u = urlsplit(url)
            if u.scheme != "http":
                raise UpstreamFailure("connect", f"{url}: only http:// backends are supported", retryable=False)
            port = u.port or 80
            host = u.hostname or "127.0.0.1"
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            head = (
                f"POST {path} HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
                f"accept: text/event-stream\r\nuser-agent: {self.user_agent}\r\n"
            ).encode()
            p = self._split[url] = ((host, port), head)
        return p

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < self.max_idle and conn.transport is not None and not conn.transport.is_closing():
            conn.idle_since = time.monotonic()
            pool.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _connect(self, key: tuple[str, int], url: str) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_s):
                _, conn = await loop.create_connection(_Conn, key[0], key[1])
        except TimeoutError:
            raise UpstreamFailure("connect", f"connect to {url} timed out", retryable=True) from None
        except OSError as e:
            raise UpstreamFailure("connect", f"cannot connect to {url}: {e!r}", retryable=True) from None
        return conn

    def _checkout(self, key: tuple[str, int]) -> _Conn | None:
        pool = self._idle.get(key)
        oldest = float("-inf") if self.keepalive_s is None else time.monotonic() - self.keepalive_s
        while pool:
            conn = pool.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing() or conn.idle_since < oldest:
                if conn.transport is not None:
                    conn.transport.close()
                continue
            return conn
        return None

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> WireResponse:
        """POST ``body`` (JSON) with any extra ``headers``; the response after its head. Non-200 is returned,
        not raised. A header name or value with a CR or LF raises ``ValueError`` (it would split the request)."""
        key, head = self._parts(url)
        if headers:
            for k, v in headers.items():
                if any(c in k or c in v for c in "\r\n"):
                    raise ValueError(f"header {k!r}: a name or value must not contain a line break")
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        msg = head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = self._checkout(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, url)
            conn.state = _HEAD
            conn.error = None
            conn.got_bytes = False
            conn.head = loop.create_future()
            assert conn.transport is not None
            try:
                conn.transport.write(msg)
                status, _ = await conn.head
            except (OSError, ConnectionError) as e:
                if conn.transport is not None:
                    conn.transport.close()
                if reused and not conn.got_bytes:
                    continue  # a stale keep-alive connection: the server never answered this request
                raise UpstreamFailure("broken", f"{url} closed the connection: {e}", retryable=True) from None
            finally:
                conn.head = None
            return WireResponse(self, key, conn, status, url)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
