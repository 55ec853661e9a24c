"""``run_benchmark``: send the requests on schedule, read every stream, and stop by itself.

Each request is sent at ``start + at_s`` on the injected clock (the arrival schedule is kept even when the
server is slow: requests are not held back by earlier ones), at most ``--max-concurrency`` at a time when
given (then a request waits for a slot and its send time is when it actually goes out, as in
``vllm bench serve``). The run ends when every sent request has completed or failed; each request is bounded
by ``--timeout``, so the run is bounded by the last send time plus the timeout. ``--duration`` stops sending:
requests due after it, or still waiting for a ``--max-concurrency`` slot when it passes, are not sent
(``not_sent``).

``--num-warmups`` requests (copies of the first) go out before the start and are not part of the result. A
ramp-up's requests carry the rate they were scheduled at; each new whole rate reached is recorded with the
wall-clock time (vLLM's ``rps_change_events``).

The HTTP client is injectable (``httpx.AsyncClient`` with any transport: sockets, or an in-process app), as is
the clock; without one, generation streams go over ``WireClient`` (``default_upstream``). Failure modes: a
server that cannot list its models when ``--model`` is not given raises ``BenchError``; failed requests are
results, never exceptions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from polyserve.bench.client import Outcome, send_request
from polyserve.bench.clock import Clock, RealClock
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import BenchRequest
from polyserve.bench.metrics import RequestRecord, request_record
from polyserve.core.errors import PolyServeError
from polyserve.serving.upstream import HttpxUpstream, Upstream
from polyserve.serving.wire import WireClient


class BenchError(PolyServeError):
    """The benchmark cannot run (no model to name, server unreachable before the first request)."""


@dataclass
class Progress:
    """Live counters, handed to the progress callback after every send and every finished request."""

    total: int
    started: float  # clock time of the start
    sent: int = 0
    completed: int = 0
    failed: int = 0
    attained: int = 0
    tier_attained: dict[str, int] = field(default_factory=dict)
    tier_done: dict[str, int] = field(default_factory=dict)


@dataclass
class BenchRun:
    model: str  # the model id (--model, or the server's first model's root)
    records: list[RequestRecord]  # in request order; only requests that were sent
    duration_s: float  # start of sending to the end of the last request
    not_sent: int
    started_at: str  # ISO 8601 wall-clock time of the start (for the report only)
    outcomes: list[Outcome] = field(default_factory=list)  # raw observations, aligned with ``records``
    model_name: str = ""  # the name sent in requests (--served-model-name, else the id)
    rps_change_events: list[dict[str, object]] = field(default_factory=list)  # a ramp-up: {rps, timestamp}


async def resolve_model(client: httpx.AsyncClient, cfg: BenchConfig) -> tuple[str, str]:
    """(model id, name sent in requests), as vllm bench serve: ``--model`` and ``--served-model-name`` (else
    the model), or, without ``--model``, the first model ``GET /v1/models`` lists (its ``id`` is the name,
    its ``root`` the id)."""
    if cfg.model:
        return cfg.model, cfg.served_model_name or cfg.model
    url = cfg.base_url.rstrip("/") + "/v1/models"
    try:
        r = await client.get(url)
        r.raise_for_status()
        first = r.json()["data"][0]
        name = str(first["id"])
        return str(first.get("root") or name), name
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise BenchError(f"no --model given and {url} did not list one ({e!r}); pass --model NAME") from None


KEEPALIVE_EXPIRY_S = 2.0  # below the 5 s after which uvicorn (vLLM, the emulated engine) closes idle connections


async def warm_up(upstream: Upstream, cfg: BenchConfig, model: str, first: BenchRequest, clock: Clock) -> None:
    """``--num-warmups`` copies of the first request, at most ``--max-concurrency`` at a time, before the
    measured run (as vllm bench serve); their outcomes are not part of the result."""
    slots = asyncio.Semaphore(cfg.max_concurrency or cfg.num_warmups)

    async def one() -> None:
        async with slots:
            await send_request(upstream, cfg, model, first, clock)

    await asyncio.gather(*(one() for _ in range(cfg.num_warmups)))


def default_client(cfg: BenchConfig) -> httpx.AsyncClient:
    """No connection limit beyond --max-concurrency; no read timeout (each request has --timeout). Idle
    connections are dropped after ``KEEPALIVE_EXPIRY_S``, well before a uvicorn server (vLLM's, 5 s) drops
    them: a request sent on a connection the server is closing at that moment is lost in flight (a reset),
    and the benchmark would count the server's keep-alive timer as its failure."""
    limits = httpx.Limits(max_connections=cfg.max_concurrency, max_keepalive_connections=cfg.max_concurrency,
                          keepalive_expiry=KEEPALIVE_EXPIRY_S)
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0), limits=limits)


def default_upstream(cfg: BenchConfig, http: httpx.AsyncClient) -> Upstream:
    """Where generation streams go when no client was injected: ``WireClient`` for ``http://`` (the lean
    client the gateway uses upstream; measured with 32 emulated engines, 16 req/s and ~4,000 streams open at
    once, httpx's client took most of a core and sent requests seconds late), the httpx client otherwise
    (``https://``). Idle connections are dropped after ``KEEPALIVE_EXPIRY_S``, as ``default_client``'s."""
    if cfg.url.startswith("http://"):
        return WireClient(connect_s=30.0, max_idle_per_host=1 << 16, user_agent="polyserve-bench",
                          keepalive_s=KEEPALIVE_EXPIRY_S)
    return HttpxUpstream(http)


async def run_benchmark(
    cfg: BenchConfig,
    requests: Sequence[BenchRequest],
    *,
    client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> BenchRun:
    clock = clock or RealClock()
    own = client is None
    http = client or default_client(cfg)
    upstream = default_upstream(cfg, http) if own else HttpxUpstream(http)
    try:
        model_id, model = await resolve_model(http, cfg)
        if cfg.num_warmups and requests:
            await warm_up(upstream, cfg, model, requests[0], clock)
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        start = clock.now()
        state = Progress(total=len(requests), started=start)
        stop_at = None if cfg.duration_s is None else start + cfg.duration_s
        slots = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
        records: dict[int, RequestRecord] = {}
        outcomes: dict[int, Outcome] = {}
        events: list[dict[str, object]] = []
        last_rps = int(cfg.ramp_up_start_rps or 0) - 1

        def report() -> None:
            if progress is not None:
                progress(state)

        async def one(req: BenchRequest) -> None:
            if slots is not None:
                await slots.acquire()
            try:
                if slots is not None and stop_at is not None and clock.now() >= stop_at:
                    return  # waited for a slot past --duration
                state.sent += 1
                report()
                o = await send_request(upstream, cfg, model, req, clock)
                rec = request_record(req, o, start)
                records[req.index] = rec
                outcomes[req.index] = o
                if rec.ok:
                    state.completed += 1
                else:
                    state.failed += 1
                state.tier_done[rec.tier] = state.tier_done.get(rec.tier, 0) + 1
                if rec.attained:
                    state.attained += 1
                    state.tier_attained[rec.tier] = state.tier_attained.get(rec.tier, 0) + 1
                report()
            finally:
                if slots is not None:
                    slots.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for req in requests:
                if cfg.duration_s is not None and req.at_s >= cfg.duration_s:
                    break  # due after the bound (a client running late still sends what was due before it)
                await clock.sleep_until(start + req.at_s)
                if req.rate is not None and int(req.rate) > last_rps:  # vLLM's rps_change_events
                    stamp = dt.datetime.now().isoformat()
                    events += [{"rps": r, "timestamp": stamp} for r in range(last_rps + 1, int(req.rate) + 1)]
                    last_rps = int(req.rate)
                tasks.append(asyncio.ensure_future(one(req)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        end = clock.now()
        order = sorted(records)
        recs = [records[i] for i in order]
        return BenchRun(model_id, recs, end - start, len(requests) - len(recs), started_at,
                        [outcomes[i] for i in order], model, events)
    finally:
        if own:
            await upstream.aclose()
            await http.aclose()
