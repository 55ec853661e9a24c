"""Talking to one backend: open a generation stream, read it, classify what went wrong.

``open_stream`` sends the request (always ``stream: true`` upstream, so the first token is seen for every
request) and returns the response once its headers say 200. Failures are ``UpstreamFailure`` with a ``kind``:

- ``connect``: refused or timed out connecting: the backend is treated as down (marked dead at once);
- ``status``: an HTTP error. 5xx, 429 are the backend's trouble and are ``retryable`` on another server;
  other 4xx are the request's fault (context too long, ...): passed to the client as they are, not retried;
- ``timeout``: no first token within ``first_token_s``, or a stream silent for ``idle_s`` (each
  ``UpstreamStream`` enforces it on its reads, the caller's own time between chunks not counted);
- ``broken``: the connection dropped or the body ended without ``[DONE]``.

Two ``Upstream`` implementations (``serving.upstream``, shared with the benchmark client): ``WireClient``
(``serving.wire``: lean HTTP/1.1 over asyncio sockets, the default over TCP) and ``HttpxUpstream`` (an
``httpx.AsyncClient`` with any transport: tests route ``http://e0`` to an in-process engine app).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from polyserve.serving.upstream import Upstream, UpstreamFailure, UpstreamStream


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
