"""``WireClient``: a minimal HTTP/1.1 client for the upstream hot path (generation streams over TCP).

Why not httpx here: profiling the gateway at 10 streams showed httpx/httpcore/h11 and anyio cancel scopes
as the largest share of the gateway's own CPU per request, and the request's headers and body going out in
two writes. This client does one thing: POST a JSON body on a keep-alive connection (one ``write``),
parse the status line and headers, and yield the body as it arrives, chunk by chunk (chunked transfer
encoding, ``Content-Length``, or until close). asyncio sets ``TCP_NODELAY`` on its TCP sockets, so small
writes are never held back by Nagle.

Connections are pooled per (host, port). A pooled connection the server has closed meanwhile (uvicorn closes
idle keep-alive connections after 5 s) is detected at checkout (EOF seen) or, in a race, by EOF before the
status line, in which case the request is sent once more on a fresh connection (the server never read it).

Failures are ``UpstreamFailure`` as in ``backend``: ``connect`` (refused, unreachable, connect timeout),
``broken`` (reset, EOF mid-body). A response whose body was not read to its end is closed, never reused.
Timeouts other than connect are the caller's (the gateway times the first token and the idle gaps).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from polyserve.gateway.backend import UpstreamFailure

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class WireResponse:
    __slots__ = ("_chunked", "_client", "_conn", "_done", "_key", "_left", "_reuse", "status", "url")

    def __init__(self, client: WireClient, key: tuple[str, int], conn: _Conn, status: int, headers: dict[str, str],
                 url: str) -> None:  # fmt: skip
        self._client = client
        self._key = key
        self._conn = conn
        self.status = status
        self.url = url
        te = headers.get("transfer-encoding", "")
        self._chunked = "chunked" in te.lower()
        cl = headers.get("content-length")
        self._left = int(cl) if cl is not None and cl.isdigit() and not self._chunked else None
        self._reuse = headers.get("connection", "").lower() != "close" and (self._chunked or self._left is not None)
        self._done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Raises ``UpstreamFailure("broken")`` if the connection drops mid-body."""
        reader = self._conn[0]
        try:
            if self._chunked:
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):
                        raise asyncio.IncompleteReadError(line, None)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        self._done = True
                        return
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif self._left is not None:
                while self._left > 0:
                    data = await reader.read(min(self._left, 65536))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", self._left)
                    self._left -= len(data)
                    yield data
                self._done = True
            else:
                while data := await reader.read(65536):
                    yield data
                self._done = True
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise UpstreamFailure("broken", f"stream from {self.url} broke: {e!r}", retryable=True) from None

    async def read_all(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        if self._done and self._reuse:
            self._client._release(self._key, conn)
        else:
            conn[1].close()


class WireClient:
    def __init__(self, connect_s: float, max_idle_per_host: int = 1024) -> None:
        self.connect_s = connect_s
        self.max_idle = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._split: dict[str, tuple[tuple[str, int], bytes, bytes]] = {}

    def _parts(self, url: str) -> tuple[tuple[str, int], bytes, bytes]:
        p = self._split.get(url)
        if p is None:
            u = urlsplit(url)
            if u.scheme != "http":
                raise UpstreamFailure("connect", f"{url}: only http:// backends are supported", retryable=False)
            port = u.port or 80
            host = u.hostname or "127.0.0.1"
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            p = self._split[url] = ((host, port), path.encode(), f"{u.netloc}".encode())
        return p

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < self.max_idle and not conn[1].is_closing():
            pool.append(conn)
        else:
            conn[1].close()

    async def _connect(self, key: tuple[str, int], url: str) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_s):
                return await asyncio.open_connection(key[0], key[1])
        except TimeoutError:
            raise UpstreamFailure("connect", f"connect to {url} timed out", retryable=True) from None
        except OSError as e:
            raise UpstreamFailure("connect", f"cannot connect to {url}: {e!r}", retryable=True) from None

    def _checkout(self, key: tuple[str, int]) -> _Conn | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if conn[0].at_eof() or conn[1].is_closing():
                conn[1].close()
                continue
            return conn
        return None

    async def post(self, url: str, body: bytes) -> WireResponse:
        """POST ``body`` (JSON); the response after its headers. Non-200 is returned, not raised."""
        key, path, host = self._parts(url)
        head = (
            b"POST " + path + b" HTTP/1.1\r\nhost: " + host + b"\r\ncontent-type: application/json\r\n"
            b"accept: text/event-stream\r\nuser-agent: polyserve-gateway\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n"
        )  # fmt: skip
        msg = head + body
        for attempt in (0, 1):
            conn = self._checkout(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, url)
            reader, writer = conn
            try:
                writer.write(msg)
                raw = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                writer.close()
                if reused and (not isinstance(e, asyncio.IncompleteReadError) or not e.partial):
                    continue  # a stale keep-alive connection: the server never saw this request
                raise UpstreamFailure("broken", f"{url} closed the connection: {e!r}", retryable=True) from None
            lines = raw.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                writer.close()
                raise UpstreamFailure("broken", f"{url}: bad status line {lines[0]!r}", retryable=True) from None
            headers = {}
            for ln in lines[1:]:
                if ln:
                    k, _, v = ln.partition(":")
                    headers[k.strip().lower()] = v.strip()
            return WireResponse(self, key, conn, status, headers, url)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for _, w in pool:
                w.close()
        self._idle.clear()
