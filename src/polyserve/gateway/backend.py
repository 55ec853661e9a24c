"""Talking to one backend: open a generation stream, read it, classify what went wrong.

``open_stream`` sends the request (always ``stream: true`` upstream, so the first token is seen for every
request) and returns the response once its headers say 200. Failures are ``UpstreamFailure`` with a ``kind``:

- ``connect``: refused or timed out connecting: the backend is treated as down (marked dead at once);
- ``status``: an HTTP error. 5xx, 429 are the backend's trouble and are ``retryable`` on another server;
  other 4xx are the request's fault (context too long, ...): passed to the client as they are, not retried;
- ``timeout``: no first token within ``first_token_s``, or a stream silent for ``idle_s`` (each
  ``UpstreamStream`` enforces it on its reads, the caller's own time between chunks not counted);
- ``broken``: the connection dropped or the body ended without ``[DONE]``.

Two ``Upstream`` implementations: ``WireClient`` (``wire``: lean HTTP/1.1 over asyncio sockets, the default
over TCP) and ``HttpxUpstream`` (an ``httpx.AsyncClient`` with any transport: tests route ``http://e0`` to an
in-process engine app). Both keep connections alive (no TCP handshake per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx


@dataclass(eq=False)
class Backend:
    """One server in the fleet. ``sid`` is its index in the router's ``FleetState``."""

    sid: int
    url: str
    priority: bool = False  # forward the tier as `priority` (vLLM --scheduling-policy priority)
    name: str = ""
    deadlines: bool = False  # forward the token deadlines as `polyserve_slo` (polyserve engine)
    # from the last scrape of its /metrics (None: never scraped, or it failed)
    running: float | None = None
    waiting: float | None = None
    scrape_failures: int = 0
    last_error: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"s{self.sid}"


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


def make_client(
    connect_s: float, idle_s: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One client for every backend: long-lived keep-alive pool, per-read timeout = the idle timeout."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(connect=connect_s, read=idle_s, write=idle_s, pool=connect_s),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=4096, keepalive_expiry=60),
        headers={"user-agent": "polyserve-gateway"},
    )


_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


class UpstreamStream(Protocol):
    """An open upstream response: ``status`` known, body read with ``chunks()`` (raises ``UpstreamFailure``).
    ``idle_s`` (None: no limit), settable while reading: ``chunks()`` raises ``UpstreamFailure("timeout")``
    once it has waited that long for the next bytes (the time the caller spends between chunks, e.g. writing
    to a slow client, does not count)."""

    status: int
    idle_s: float | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read_all(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def post(self, url: str, body: bytes) -> UpstreamStream: ...

    async def aclose(self) -> None: ...


def idle_failure(url: str) -> UpstreamFailure:
    return UpstreamFailure("timeout", f"{url} stopped sending (idle timeout)", retryable=True, status=504)


class _HttpxStream:
    def __init__(self, resp: httpx.Response, url: str) -> None:
        self.resp = resp
        self.status = resp.status_code
        self.url = url
        self.idle_s: float | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
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

    async def post(self, url: str, body: bytes) -> _HttpxStream:
        req = self.client.build_request("POST", url, content=body, headers=_HEADERS)
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


async def open_stream(upstream: Upstream, url: str, body: bytes) -> UpstreamStream:
    """POST ``body`` to ``url`` as a stream; the response once its status is 200, else ``UpstreamFailure``."""
    resp = await upstream.post(url, body)
    if resp.status == 200:
        return resp
    try:
        data = await resp.read_all()
    except UpstreamFailure:
        data = b""
    finally:
        await resp.aclose()
    code = resp.status
    retryable = code >= 500 or code == 429
    raise UpstreamFailure(
        "status",
        f"backend answered HTTP {code}: {data[:300].decode(errors='replace')}",
        retryable=retryable,
        status=502 if retryable else code,
        body=None if retryable else data,
    )


def classify_read_error(e: BaseException, url: str) -> UpstreamFailure:
    """A failure while reading an open stream."""
    if isinstance(e, httpx.TimeoutException):
        return idle_failure(url)
    return UpstreamFailure("broken", f"stream from {url} broke: {e!r}", retryable=True, status=502)
