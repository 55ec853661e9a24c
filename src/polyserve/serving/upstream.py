"""Client side of a streamed HTTP call: the ``Upstream`` protocol, its failures, and the httpx implementation.

Two faces read generation streams from servers: the gateway (from its backends) and the benchmark client (from
the gateway or an engine). Both use ``Upstream``: ``WireClient`` (``serving.wire``: lean HTTP/1.1 over asyncio
sockets, the default over TCP) or ``HttpxUpstream`` (an ``httpx.AsyncClient`` with any transport: tests route
``http://e0`` to an in-process app). Both keep connections alive (no TCP handshake per request).

Failures are ``UpstreamFailure`` with a ``kind``: ``connect`` (refused, unreachable, connect timeout),
``timeout`` (no answer, or a stream silent for ``idle_s``), ``broken`` (reset, EOF mid-body, malformed), and
the gateway's ``status`` (an HTTP error; see ``gateway.backend.open_stream``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

import httpx


class UpstreamFailure(Exception):
    def __init__(
        self, kind: str, message: str, *, retryable: bool, status: int = 502, body: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.status = status  # what the client gets if this ends the request
        self.body = body  # the backend's own error body, passed through for its 4xx


def idle_failure(url: str) -> UpstreamFailure:
    return UpstreamFailure("timeout", f"{url} stopped sending (idle timeout)", retryable=True, status=504)


_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


class UpstreamStream(Protocol):
    """An open upstream response: ``status`` known, body read with ``chunks()`` (raises ``UpstreamFailure``).
    ``idle_s`` (None: no limit), settable while reading: ``chunks()`` raises ``UpstreamFailure("timeout")``
    once it has waited that long for the next bytes (the time the caller spends between chunks, e.g. writing
    to a slow client, does not count)."""

    status: int
    idle_s: float | None

    def chunks(self) -> AsyncGenerator[bytes, None]: ...

    async def read_all(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    """``post`` sends a JSON ``body`` (and any extra ``headers``) and returns the response once its head is in;
    a non-200 status is returned, not raised."""

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> UpstreamStream: ...

    async def aclose(self) -> None: ...


class _HttpxStream:
    def __init__(self, resp: httpx.Response, url: str) -> None:
        self.resp = resp
        self.status = resp.status_code
        self.url = url
        self.idle_s: float | None = None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives. A response built with its whole body in memory (a transport that answers
        with ``content=`` or ``json=``) has it already read: it comes as one chunk. Read twice: ``broken``."""
        if self.resp.is_stream_consumed:
            try:
                body = self.resp.content
            except httpx.ResponseNotRead:
                raise UpstreamFailure("broken", f"the body from {self.url} was already read", retryable=False) from None
            if body:
                yield body
            return
        it = self.resp.aiter_raw().__aiter__()
        while True:
            try:
                if self.idle_s is None:
                    chunk = await it.__anext__()
                else:  # per read, as the transport (an in-process one has no read timeout of its own)
                    async with asyncio.timeout(self.idle_s):
                        chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise idle_failure(self.url) from None
            except httpx.HTTPError as e:
                raise classify_read_error(e, self.url) from None
            yield chunk

    async def read_all(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def aclose(self) -> None:
        await self.resp.aclose()


class HttpxUpstream:
    """Upstream over an ``httpx.AsyncClient`` (any transport: tests route it to in-process engine apps)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> _HttpxStream:
        req = self.client.build_request("POST", url, content=body,
                                        headers=_HEADERS if not headers else {**_HEADERS, **headers})
        try:
            resp = await self.client.send(req, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            raise UpstreamFailure("connect", f"cannot connect to {url}: {e!r}", retryable=True) from None
        except httpx.TimeoutException as e:
            raise UpstreamFailure("timeout", f"{url} did not answer: {e!r}", retryable=True, status=504) from None
        except httpx.HTTPError as e:
            raise UpstreamFailure("broken", f"{url}: {e!r}", retryable=True) from None
        return _HttpxStream(resp, url)

    async def aclose(self) -> None:
        return None  # the client is shared with the scraper; its owner closes it


def classify_read_error(e: BaseException, url: str) -> UpstreamFailure:
    """A failure while reading an open stream."""
    if isinstance(e, httpx.TimeoutException):
        return idle_failure(url)
    return UpstreamFailure("broken", f"stream from {url} broke: {e!r}", retryable=True, status=502)
