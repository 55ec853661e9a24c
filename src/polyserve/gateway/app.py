"""``Gateway``: the OpenAI-compatible front, as a plain ASGI app (no framework on the token path).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``,
``GET /health`` (200 while at least one backend is routable, else 503), ``GET /metrics``.

One generation request, in order:

1. checks, each an OpenAI-style error and outcome ``rejected``: API key (401), body size (413), JSON and
   fields (400, the engine's own parser), model (404), SLO headers (400) and the key's tiers (403), prompt +
   ``max_tokens`` within a server's KV capacity (400, as vLLM's context check);
2. accepted: the ``Dispatcher`` routes it with the policy (at once, or after waiting in the router);
3. the upstream request is sent as a stream (the tier in ``priority`` for ``priority: true`` backends, and
   the field removed for the others; for ``deadlines: true`` backends the request's token deadlines as the
   ``polyserve_slo`` extension, ``ttft_ms`` counted from the moment it is sent, see ``serving/openai.py``;
   a client's own ``polyserve_slo`` is never forwarded) and read **until its first token** before anything
   is sent to the client. So a backend failing before the first token (refused, 5xx, timeout, dropped) is invisible to
   the client: the request is retried on another server, up to ``retries`` times, and the failed server is
   marked dead until its next good scrape;
4. streaming: the response starts with the first token's bytes and then every upstream chunk is forwarded
   as it arrives (never re-framed, never buffered whole). Non-streaming: the chunks are collected and the
   whole response built at the end (``events.Aggregator``);
5. the end: ``[DONE]`` -> ``completed`` (ledger told the output length, TTFT/TPOT/DSLO recorded). A stream
   that breaks or stalls (``idle_s``) after tokens were sent ends with an error event (``data: {"error":
   ...}``) and no ``[DONE]``: ``failed``. A client that goes away (noticed while waiting, too, by listening
   for ``http.disconnect``) closes the upstream stream, so the engine aborts the request, and the ledger
   entry is freed: ``failed``. Shedding: ``shed``, 429 (policy) or 503 (``max_pending``), with
   ``Retry-After``.

Every accepted request is counted once in exactly one of completed, failed, shed (the invariant the tests
check). Background tasks (the router tick and the scrape) start with the ASGI lifespan, or on the first
request when there is none (in-process transports).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from polyserve.core.fleet import FleetConfig, RequestInfo, ScaleAction
from polyserve.gateway.actuator import Actuator, StaticActuator
from polyserve.gateway.backend import Backend, make_client, open_stream
from polyserve.gateway.batch import BatchMerger
from polyserve.gateway.breaker import Breaker
from polyserve.gateway.config import GatewayConfig
from polyserve.gateway.dispatcher import Dispatcher, NoSeat, Refused, Shed
from polyserve.gateway.errors import GatewayError, error_bytes
from polyserve.gateway.events import Aggregator, EventScanner, is_token_event
from polyserve.gateway.httpconn import START_EXTENSION, WRITE_EXTENSION
from polyserve.gateway.latency import build_gateway_model
from polyserve.gateway.metrics import CONTENT_TYPE, NO_TIER, GatewayMetrics
from polyserve.gateway.scrape import Scraper
from polyserve.gateway.slo import TTFT_HEADER, authorize, resolve_slo
from polyserve.latency.base import kv_transfer_time
from polyserve.serving.openai import (
    KV_FIELD,
    SLO_FIELD,
    GenerationRequest,
    RequestError,
    parse_chat,
    parse_completion,
    parse_json,
)
from polyserve.serving.upstream import HttpxUpstream, Upstream, UpstreamFailure, UpstreamStream
from polyserve.serving.wire import PUSH_STOP, TAKEN, WireClient

log = logging.getLogger("polyserve.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(slots=True, eq=False)
class _Live:
    """One accepted request while it is served."""

    info: RequestInfo
    tier: str
    arrival: float  # clock() at receipt
    deadline0: float  # clock() time the first token is due
    tpot: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    worst_slack: float = float("inf")
    max_tokens: int | None = None  # as asked (None: the engine's default)
    complete: bool = False  # the last byte is being sent: a disconnect now is not the client leaving early
    gone: bool = False  # the client went away
    write: Callable[[bytes], bool] | None = None  # the server's synchronous chunk writer (httpconn), if any
    start: Callable[[dict[str, Any], bytes], bool] | None = None  # ... and its synchronous response start

    def saw(self, n: int, t: float) -> None:
        if n <= 0:
            return
        slack = self.deadline0 + self.tokens * self.tpot - t  # deadline of the first of the new tokens
        if slack < self.worst_slack:
            self.worst_slack = slack
        if self.first is None:
            self.first = t
        self.tokens += n
        self.last = t


class Gateway:
    """The gateway app. ``transport`` (tests) routes upstream requests in-process; ``actuator`` defaults to
    ``StaticActuator`` (fixed backends); ``latency_model`` overrides the one built from ``config.engine``."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        actuator: Actuator | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        latency_model: object | None = None,
        backends: list[Backend] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from polyserve.policy import make_router

        self.config = config
        self.clock = clock
        self.tiers = config.load_tiers()
        self.default_tier = config.default_tier_index(self.tiers)
        self.keys = (
            {k.key: frozenset(self.tiers.index(t) for t in k.tiers) for k in config.api_keys}
            if config.api_keys
            else None
        )
        eng = config.engine
        self.model = latency_model if latency_model is not None else build_gateway_model(eng)
        self.kv_capacity = int(eng.kv_capacity_tokens or self.model.deployment.kv_capacity_tokens)  # type: ignore[attr-defined]
        options = dict(config.policy_options)
        self.router = make_router(config.policy, random.Random(config.seed), **options)
        autoscaler = None
        if config.autoscaler is not None:
            from polyserve.core.errors import ConfigError
            from polyserve.policy import AUTOSCALERS

            if self.router.tiered:
                raise ConfigError(f"{config.source}: autoscaler: policy {config.policy} scales its own tiers; "
                                  "an autoscaler applies to untiered policies only")
            autoscaler = AUTOSCALERS.create(config.autoscaler, **config.autoscaler_options)
        self.backends = backends or [Backend(i, b.url, b.priority, deadlines=b.deadlines)
                                     for i, b in enumerate(config.backends)]
        self.actuator: Actuator = actuator or StaticActuator()
        self.breaker = Breaker(config.breaker_failures)
        self.metrics = GatewayMetrics(self.tiers.names, [b.name for b in self.backends])
        self.dispatcher = Dispatcher(
            self.tiers,
            FleetConfig(self.kv_capacity, eng.max_num_seqs, eng.max_num_batched_tokens,
                        kv_transfer_s_per_token=self._kv_s_per_token(eng, config.disaggregated)),
            self.model,  # type: ignore[arg-type]
            self.router,
            self.actuator,
            len(self.backends),
            clock=clock,
            max_pending=config.max_pending if config.shedding else None,
            on_scale=self._on_scale,
            shed=config.shedding,
            autoscaler=autoscaler,
            roles=[b.role for b in config.backends] if len(config.backends) == len(self.backends) else None,
            decode_seat_s=config.timeouts.idle_s,  # the driver ends a longer wait for a decode seat (one rule)
        )
        self.metrics.bind(
            self.dispatcher.pending_by_tier,
            self.dispatcher.servers_by_state,
            lambda: [
                (s.num_requests, None if b.running is None else b.running + (b.waiting or 0.0))
                for s, b in zip(self.dispatcher.fleet.servers, self.backends, strict=True)
            ],
        )
        t = config.timeouts
        self.client = make_client(t.connect_s, t.idle_s, transport)  # scrapes (and upstream, in-process)
        self.upstream: Upstream = HttpxUpstream(self.client) if transport is not None else WireClient(t.connect_s)
        self.scraper = Scraper(
            self.client,
            self.backends,
            self.dispatcher,
            self.actuator,
            timeout_s=t.scrape_s,
            dead_after=config.dead_after,
            on_error=lambda b, kind: self.metrics.backend_errors.labels(b.name, kind).inc(),
        )
        self.created = int(time.time())
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._salt = secrets.token_hex(6)  # per process: a batch's response id is unique across gateways
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.accepted = 0
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": config.model,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "polyserve",
                        "root": config.model,
                        "parent": None,
                        "max_model_len": self.kv_capacity,
                    }
                ],
            }
        ).encode()

    def _kv_s_per_token(self, eng: Any, disaggregated: bool) -> float:
        """Seconds per prompt token of the prefill -> decode KV hand-off, on the backends' (scaled) clock."""
        if not disaggregated:
            return 0.0
        return kv_transfer_time(self.model.deployment, 1, eng.kv_link_gbps) / eng.time_scale  # type: ignore[attr-defined]

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def _on_scale(self, a: ScaleAction, kind: str) -> None:
        self.metrics.scaling.labels(kind).inc()

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._tasks = [
            loop.create_task(self._tick_loop()),
            loop.create_task(self.scraper.run(self.config.scrape_interval_s)),
        ]

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self.dispatcher.tick()
            except Exception:  # a policy bug must not stop the loop that releases servers
                log.exception("router tick failed")

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        self._loop = None
        await self.upstream.aclose()
        await self.client.aclose()
        await self.actuator.aclose()

    # ---- ASGI ---------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        try:
            await self._http(scope, receive, send)
        except Exception:  # a bug: still an OpenAI-shaped answer (if none was started) and a log line, never
            log.exception("internal error serving %s %s", scope.get("method"), scope.get("path"))  # plain text
            with contextlib.suppress(Exception):
                await _send_error(send, GatewayError(500, "internal error in the gateway (see its log)"))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ensure_started()
        path = scope["path"]
        method = scope["method"]
        if path in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                await _send_error(send, GatewayError(405, f"{method} {path}: use POST"))
                return
            await self._generate(scope, receive, send, path == "/v1/chat/completions")
        elif path == "/health" and method == "GET":
            n = self.dispatcher.routable_count()
            status = 200 if n else 503
            doc = {"status": "ok" if n else "no backend is up", "backends_up": n}
            await _send(send, status, json.dumps(doc).encode(), _JSON)
        elif path == "/v1/models" and method == "GET":
            await _send(send, 200, self._models_body, _JSON)
        elif path.startswith("/v1/models/") and method == "GET":
            name = path[len("/v1/models/"):]
            if name == self.config.model:
                await _send(send, 200, json.dumps(json.loads(self._models_body)["data"][0]).encode(), _JSON)
            else:
                await _send_error(send, GatewayError(
                    404, f"The model `{name}` does not exist; this gateway serves `{self.config.model}`.", "model"))
        elif path == "/openapi.json" and method == "GET":
            from polyserve.gateway.openapi import openapi

            await _send(send, 200, json.dumps(openapi(self.config.model, self.tiers.names)).encode(), _JSON)
        elif path == "/metrics" and method == "GET":
            await _send(send, 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())])
        else:
            await _send_error(send, GatewayError(404, f"{method} {path}: no such route"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.ensure_started()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- generation ---------------------------------------------------------------------------------------
    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The whole body, within ``max_body_bytes`` (413) and ``timeouts.request_body_s`` (408); both close the
        connection, since the rest of the body is not read."""
        limit = self.config.max_body_bytes
        cl = headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            raise GatewayError(413, f"request body of {cl} bytes is over the limit of {limit} bytes", close=True)
        msg = await receive()
        if msg["type"] == "http.request" and not msg.get("more_body", False):  # the usual case: one message
            body = msg.get("body", b"")
            if len(body) > limit:
                raise GatewayError(413, f"request body is over the limit of {limit} bytes", close=True)
            return body
        parts: list[bytes] = []
        size = 0
        wait = self.config.timeouts.request_body_s
        try:
            async with asyncio.timeout(wait):
                while True:
                    if msg["type"] == "http.disconnect":
                        raise GatewayError(400, "client disconnected while sending the body")
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise GatewayError(413, f"request body is over the limit of {limit} bytes", close=True)
                    parts.append(chunk)
                    if not msg.get("more_body", False):
                        return b"".join(parts)
                    msg = await receive()
        except TimeoutError:
            raise GatewayError(408, f"request body not received within {wait:g} s (timeouts.request_body_s)",
                               close=True) from None

    def _check(self, raw: bytes, chat: bool) -> tuple[dict[str, Any], GenerationRequest]:
        """The body as JSON and the fields the gateway reads (the engine's parser: same rules, same errors)."""
        try:
            body = parse_json(raw)
            g = parse_chat(body) if chat else parse_completion(body)
        except RequestError as e:
            raise GatewayError(400, e.message, e.param) from None
        if g.model is not None and g.model != self.config.model:
            raise GatewayError(
                404, f"The model `{g.model}` does not exist; this gateway serves `{self.config.model}`.", "model"
            )
        return body, g

    async def _generate(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        arrival = self.clock()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        tier_label = NO_TIER
        try:
            allowed = authorize(headers, self.keys)
            raw = await self._read_body(headers, receive)
            body, g = self._check(raw, chat)
            slo = resolve_slo(headers, self.tiers, self.default_tier, allowed)
            tier_label = self.tiers[slo.tier].name
            need = g.prompt_tokens + (g.max_tokens or 0)
            if need > self.kv_capacity:
                raise GatewayError(
                    400,
                    f"This model's maximum context length is {self.kv_capacity} tokens. However, you "
                    f"requested {need} tokens ({g.prompt_tokens} in the prompt, {g.max_tokens} in the "
                    "completion).",
                    "max_tokens",
                )
            if slo.ttft_ms is not None:
                fastest = self.dispatcher.driver.lost_test.min_first_token_s(g.prompt_tokens)
                if fastest * 1e3 > slo.ttft_ms:  # not overload: no server could ever meet it, so retrying is futile
                    raise GatewayError(
                        400,
                        f"header {TTFT_HEADER}: {slo.ttft_ms:g} ms can never be met: the first token of a "
                        f"{g.prompt_tokens}-token prompt takes at least {fastest * 1e3:.1f} ms on an idle server",
                        TTFT_HEADER,
                    )
        except GatewayError as e:
            self.metrics.outcome(tier_label, "rejected")
            await _send_error(send, e)
            return
        except Exception:
            self.metrics.outcome(tier_label, "failed")  # counted; the caller answers 500
            raise
        if g.batch:
            await self._serve_batch(receive, send, body, g, slo, tier_label, arrival, chat, scope["path"])
            return
        live, body_for = self._accept(body, g, slo, tier_label, arrival, raw)
        ext = scope.get("extensions")
        if ext:
            live.write = ext.get(WRITE_EXTENSION)
            live.start = ext.get(START_EXTENSION)
        main = asyncio.current_task()
        assert main is not None
        watcher = self._watch(receive, live, main)
        outcome = "failed"
        try:
            outcome = await self._serve(send, live, body_for, chat, g.stream, scope["path"])
        except asyncio.CancelledError:
            if not live.gone:
                raise
            main.uncancel()
            self.metrics.disconnects.inc()
        finally:
            watcher.cancel()
            self.dispatcher.finish(live.info.rid, None)  # no-op if already finished; frees a pending or running slot
            self.metrics.outcome(tier_label, outcome)

    def _watch(self, receive: Receive, holder: Any, main: asyncio.Task[Any]) -> asyncio.Task[None]:
        """Listen for the client going away while it is served: ``holder.gone`` set and ``main`` cancelled,
        unless ``holder.complete`` (its last bytes are being sent)."""

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    if not holder.complete:
                        holder.gone = True
                        main.cancel()
                    return

        return asyncio.get_running_loop().create_task(watch())

    def _accept(self, body: dict[str, Any], g: GenerationRequest, slo: Any, tier_label: str, arrival: float,
                raw: bytes | None = None) -> tuple[_Live, Callable[..., bytes]]:  # fmt: skip
        """Count one accepted request; its ``_Live`` record and the builder of its upstream bodies. ``raw``:
        the body as received, forwarded as it is when nothing in it needs changing (a streamed request naming
        the model, with no field the gateway sets or strips), so a long prompt is not encoded again."""
        self.accepted += 1
        self.metrics.accept(tier_label)
        rid = next(self._ids)
        t0 = self.dispatcher.t0
        ttft = slo.ttft_s(self.tiers, g.prompt_tokens)
        tpot = slo.tpot_ms / 1e3
        info = RequestInfo(rid, arrival - t0, g.prompt_tokens, slo.tier, ttft, tpot, g.max_tokens)
        live = _Live(info, tier_label, arrival, arrival + ttft, tpot, max_tokens=g.max_tokens)
        as_sent = raw is not None and g.stream and g.model is not None and not any(
            k in body for k in ("priority", SLO_FIELD, KV_FIELD))
        body["stream"] = True
        if not g.stream:
            body["stream_options"] = {"include_usage": True}
        body.pop("priority", None)
        body.pop(SLO_FIELD, None)
        body.pop(KV_FIELD, None)
        if g.model is None:
            body["model"] = self.config.model
        plain = raw if as_sent and raw is not None else json.dumps(body).encode()
        prio = None
        clock = self.clock

        def body_for(b: Backend, leg: str = "whole", handoff: dict[str, Any] | None = None) -> bytes:
            """``leg``: the whole request (co-located), or the ``prefill`` (up to the first token) or the
            ``decode`` (a hand-off: the KV travels, tokens 2..N; ``handoff``: the response's id and created,
            so the decode leg's chunks continue the prefill's response) of a disaggregated one."""
            nonlocal prio
            extra: dict[str, Any] = {}
            if leg == "prefill":
                extra = {"max_tokens": 1, "stream": True}
                if "max_completion_tokens" in body:
                    extra["max_completion_tokens"] = 1
                base = {k: v for k, v in body.items() if k != "stream_options"}
            else:
                base = body
                if leg == "decode":
                    extra[KV_FIELD] = {"prefilled": True, **(handoff or {})}
            if b.deadlines:  # built per attempt: the time left shrinks while the request waits or retries
                left_ms = (live.deadline0 - clock()) * 1e3 - self.config.deadline_margin_ms
                extra[SLO_FIELD] = {"ttft_ms": round(left_ms, 3), "tpot_ms": slo.tpot_ms}
            if b.priority:
                extra["priority"] = slo.tier
            if not extra:
                return plain
            if leg == "whole":  # the body as forwarded with these fields added, not encoded again
                if b.priority and not b.deadlines:
                    if prio is None:
                        prio = splice_json(plain, extra)
                    return prio
                return splice_json(plain, extra)
            return json.dumps({**base, **extra}).encode()

        return live, body_for

    async def _serve_batch(self, receive: Receive, send: Send, body: dict[str, Any], g: GenerationRequest,
                           slo: Any, tier_label: str, arrival: float, chat: bool, path: str) -> None:  # fmt: skip
        """A list of prompts: one request per prompt, each placed and served as any other (and counted: a batch
        of n is n requests), their answers merged into vLLM's batch answer (``batch.BatchMerger``)."""
        assert g.batch is not None
        prompts = body["prompt"]
        assert isinstance(prompts, list)
        so = body.get("stream_options")
        include_usage = bool(g.stream and isinstance(so, dict) and so.get("include_usage"))
        merger = BatchMerger(len(prompts), g.stream, include_usage, f"cmpl-{self._salt}{next(self._batch_ids):x}",
                             int(time.time()), [(b"x-polyserve-tier", tier_label.encode())])
        subs = [self._accept({**body, "prompt": p}, replace(g, prompt_tokens=n, batch=None), slo, tier_label,
                             arrival) for p, n in zip(prompts, g.batch, strict=True)]  # fmt: skip

        counted = [False] * len(subs)

        async def one(i: int, live: _Live, body_for: Callable[..., bytes]) -> None:
            outcome = "failed"
            try:
                outcome = await self._serve(merger.sender(i), live, body_for, chat, g.stream, path)
            finally:
                counted[i] = True
                self.dispatcher.finish(live.info.rid, None)
                self.metrics.outcome(tier_label, outcome)

        main = asyncio.current_task()
        assert main is not None
        watcher = self._watch(receive, merger, main)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(one(i, live, bf)) for i, (live, bf) in enumerate(subs)]
        for i, t in enumerate(tasks):  # even a task cancelled before its first step tells the merger it ended
            t.add_done_callback(lambda _t, i=i: merger.ended(i))
        try:
            await merger.run(send, tasks)
        except asyncio.CancelledError:
            if not merger.gone:
                raise
            main.uncancel()
            self.metrics.disconnects.inc()
        finally:
            watcher.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for i, (live, _) in enumerate(subs):  # every prompt counted once, even one that never started
                if not counted[i]:
                    self.dispatcher.finish(live.info.rid, None)
                    self.metrics.outcome(tier_label, "failed")

    async def _serve(
        self, send: Send, live: _Live, body_for: Callable[[Backend], bytes], chat: bool, stream: bool, path: str
    ) -> str:
        if self.dispatcher.disaggregated:
            return await self._serve_disaggregated(send, live, body_for, chat, stream, path)
        d = self.dispatcher
        info = live.info
        attempts = 0
        while True:
            sid = await self._placement(send, d.acquire(info))
            if isinstance(sid, str):
                return sid
            backend = self.backends[sid]
            extra = [(b"x-polyserve-tier", live.tier.encode()), (b"x-polyserve-server", str(sid).encode())]
            relay = None
            if stream and live.start is not None:  # the first token goes out from the upstream socket's callback
                start = {"type": "http.response.start", "status": 200, "headers": _SSE + extra}
                relay = functools.partial(live.start, start)
            try:
                await self._ready(sid)
                resp, it, first, scanner, relayed = await self._until_first_token(
                    backend, body_for(backend), path, stream, live, relay)
            except UpstreamFailure as f:
                attempts += 1
                if self._attempt_failed(f, sid, info, attempts):
                    if f.body is not None:
                        await _send(send, f.status, f.body, _JSON)
                    else:
                        msg = f"backend failure: {_public(f.message, backend)}"
                        await _send_error(send, GatewayError(f.status, msg))
                    return "failed"
                continue
            break
        self.breaker.success(sid)
        if not relayed:
            live.saw(scanner.tokens, self.clock())
        d.first_token(info.rid, scanner.tokens)
        if stream:  # (relayed: the head and those first bytes went out already)
            return await self._pump(send, live, backend, resp, it, [] if relayed else first, scanner, extra,
                                    started=relayed)
        return await self._collect(send, live, backend, resp, it, scanner, chat, extra)

    async def _serve_disaggregated(
        self, send: Send, live: _Live, body_for: Callable[..., bytes], chat: bool, stream: bool, path: str
    ) -> str:
        """Prefill leg on a prefill engine (``max_tokens`` 1: the first token goes to the client at once), the
        hand-off (the driver routes the decode phase, as in the simulator), then the decode leg on a decode
        engine (``polyserve_kv``: its KV is transferred, it streams tokens 2..N, forwarded as they come).
        A failure before a leg's first token retries that leg elsewhere; after, the stream ends with an error
        event, as co-located."""
        d = self.dispatcher
        info = live.info
        attempts = 0
        while True:  # ---- prefill leg
            sid = await self._placement(send, d.acquire(info))
            if isinstance(sid, str):
                return sid
            backend = self.backends[sid]
            try:
                await self._ready(sid)
                events = await self._prefill_leg(backend, body_for(backend, "prefill"), path)
            except UpstreamFailure as f:
                attempts += 1
                if self._attempt_failed(f, sid, info, attempts):
                    await _send_error(send, GatewayError(f.status, f"backend failure: {_public(f.message, backend)}"))
                    return "failed"
                continue
            break
        self.breaker.success(sid)
        live.saw(1, self.clock())
        d.first_token(info.rid, 1)
        head, first, identity = _first_token_events(events, chat)
        extra = [(b"x-polyserve-tier", live.tier.encode()), (b"x-polyserve-server", str(sid).encode())]
        if live.max_tokens == 1:  # nothing to decode: the prefill engine's answer is the whole answer
            self._completed(live)
            live.complete = True
            if stream:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE + extra})
                await send({"type": "http.response.body", "body": b"".join(events_bytes(events)) + _DONE_EVENT,
                            "more_body": False})
            else:
                await _send(send, 200, json.dumps(Aggregator(chat).build(events)).encode(), _JSON + extra)
            return "completed"
        if stream:  # the client has its first token now, before the hand-off
            await send({"type": "http.response.start", "status": 200, "headers": _SSE + extra})
            await send({"type": "http.response.body", "body": head + first, "more_body": True})
        fut = d.handoff(info)
        attempts = 0
        while True:  # ---- decode leg
            try:
                # the wait for a decode seat is a silence in the stream, bounded like one (a request whose next
                # token can no longer be on time waits behind every one that can, so it could wait long): the
                # driver ends it after timeouts.idle_s, as the simulator does (NoSeat: a 503 event)
                sid = fut.result() if fut.done() else await fut
            except NoSeat as e:
                return await self._fail_after_first(send, live, stream, f"overloaded: {e} (timeouts.idle_s)", 503)
            except (Shed, Refused) as e:
                return await self._fail_after_first(send, live, stream, f"no decode server: {e}")
            backend = self.backends[sid]
            try:
                await self._ready(sid)
                resp, it, chunks, scanner, _ = await self._until_first_token(
                    backend, body_for(backend, "decode", identity), path, stream, live)
            except UpstreamFailure as f:
                attempts += 1
                if self._attempt_failed(f, sid, info, attempts):
                    msg = f"backend failure: {_public(f.message, backend)}"
                    return await self._fail_after_first(send, live, stream, msg)
                fut = d.reroute_decode(info)
                continue
            break
        self.breaker.success(sid)
        live.saw(scanner.tokens, self.clock())
        d.tokens(info.rid, scanner.tokens + 1)
        if stream:
            return await self._pump(send, live, backend, resp, it, chunks, scanner, extra, started=True,
                                    token_offset=1)
        scanner.events[:0] = [ev for ev in events if is_token_event(ev)]
        return await self._collect(send, live, backend, resp, it, scanner, chat, extra, token_offset=1)

    async def _placement(self, send: Send, fut: asyncio.Future[int]) -> int | str:
        """The server the driver placed the request on; or, its error answer sent, the outcome (shed/failed)."""
        try:
            return fut.result() if fut.done() else await fut
        except Shed as e:
            what = "overloaded, request shed" if e.status == 429 else "unavailable"
            await _send_error(send, GatewayError(e.status, f"{what}: {e.reason}", None, self.config.retry_after_s))
            return "shed"
        except Refused as e:
            await _send_error(send, GatewayError(503, f"no server can serve this request: {e}"))
            return "failed"

    async def _ready(self, sid: int) -> None:
        if not self.actuator.is_ready(sid):
            await self.actuator.wait_ready(sid)

    def _attempt_failed(self, f: UpstreamFailure, sid: int, info: RequestInfo, attempts: int) -> bool:
        """Account for a failure before the first token (the ledger, the error counter, the circuit breaker);
        True: give up, since it is not retryable, the retries are spent, or no server is left to retry on."""
        d = self.dispatcher
        d.finish(info.rid, None)
        self.metrics.backend_errors.labels(self.backends[sid].name, f.kind).inc()
        if f.retryable and self.breaker.failure(sid, info.rid, f.kind):
            d.mark_dead(sid)  # unroutable until its next good scrape
        if not f.retryable or attempts > self.config.retries or d.routable_count() == 0:
            return True
        self.metrics.retries.inc()
        return False

    async def _prefill_leg(self, backend: Backend, body: bytes, path: str) -> list[bytes]:
        """The whole (one-token) prefill stream's events; ``UpstreamFailure`` if it fails or has no token."""
        scanner = EventScanner(keep=True)
        resp: UpstreamStream | None = None
        try:
            async with asyncio.timeout(self.config.timeouts.first_token_s):
                resp = await open_stream(self.upstream, backend.url + path, body)
                async for chunk in resp.chunks():
                    scanner.feed(chunk)
                    if scanner.done or scanner.error is not None:
                        break
        except TimeoutError:
            raise UpstreamFailure(
                "timeout", f"no first token from {backend.url} within {self.config.timeouts.first_token_s:g} s",
                retryable=True, status=504,
            ) from None  # fmt: skip
        finally:
            if resp is not None:
                await resp.aclose()
        if scanner.tokens == 0 or scanner.error is not None:
            what = "sent an error event" if scanner.error is not None else "ended the stream"
            raise UpstreamFailure("broken", f"{backend.url} {what} before the first token", retryable=True)
        return scanner.events

    async def _fail_after_first(self, send: Send, live: _Live, stream: bool, message: str, status: int = 502) -> str:
        """The first token went out (streaming) but the decode leg cannot be served: end with an error."""
        self.dispatcher.finish(live.info.rid, None)
        live.complete = True
        if stream:
            tail = b"data: " + error_bytes(status, message) + b"\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        else:
            await _send_error(send, GatewayError(status, message))
        return "failed"

    def _attempt_timeout(self, live: _Live) -> tuple[float, str]:
        """Seconds one attempt may wait for its first token, and the kind of failure when it does not come:
        ``timeout`` (the hard limit) or ``slow`` (the request has waited its TTFT SLO times the factor: it is
        re-routed, and it is no strike against the backend, which may just be loaded)."""
        t = self.config.timeouts
        hard = t.first_token_s
        if t.first_token_slo_factor <= 0:
            return hard, "timeout"
        slo_s = live.arrival + t.first_token_slo_factor * live.info.ttft_slo - self.clock()
        soft = max(1.0, slo_s)
        return (soft, "slow") if soft < hard else (hard, "timeout")

    async def _until_first_token(
        self, backend: Backend, body: bytes, path: str, stream: bool, live: _Live | None = None,
        relay: Callable[[bytes], bool] | None = None,
    ) -> tuple[UpstreamStream, Any, list[bytes], EventScanner, bool]:
        """Open the stream on ``backend`` and read it up to its first token: (the stream, its chunk iterator,
        the bytes read so far, their scanner, whether ``relay`` sent them). ``relay(data) -> bool``: called
        with those bytes from the upstream socket's callback the moment the first token is in them (the
        client's first token, with no task switch before it); False when it could not write them at once
        (they are then the caller's to send). ``UpstreamFailure`` (retryable) when no token comes: timeout,
        error event, end of stream; nothing was relayed then."""
        scanner = EventScanner(keep=not stream)
        first: list[bytes] = []
        resp: UpstreamStream | None = None
        relayed = False
        limit, kind = self._attempt_timeout(live) if live is not None else (self.config.timeouts.first_token_s,
                                                                            "timeout")
        try:
            async with asyncio.timeout(limit):
                resp = await open_stream(self.upstream, backend.url + path, body)
                it = resp.chunks()
                push = getattr(resp, "push", None) if relay is not None else None
                if push is not None:
                    clock = self.clock

                    def sink(data: bytes) -> int:
                        nonlocal relayed
                        first.append(data)
                        scanner.feed(data)
                        if not (scanner.tokens or scanner.done or scanner.error is not None):
                            return TAKEN
                        if scanner.tokens and relay(b"".join(first)):
                            relayed = True
                            if live is not None:
                                live.saw(scanner.tokens, clock())
                        return PUSH_STOP

                    await push(sink)
                else:
                    async for chunk in it:
                        first.append(chunk)
                        scanner.feed(chunk)
                        if scanner.tokens or scanner.done or scanner.error is not None:
                            break
        except TimeoutError:
            if not relayed:  # (relayed, then timed out before this task ran again: it is served)
                if resp is not None:
                    await resp.aclose()
                raise UpstreamFailure(
                    kind, f"no first token from {backend.url} within {limit:.3g} s", retryable=True, status=504,
                ) from None  # fmt: skip
        except BaseException:
            if resp is not None:
                await resp.aclose()
            raise
        assert resp is not None
        if scanner.tokens == 0 and not scanner.done:
            await resp.aclose()
            what = "sent an error event" if scanner.error is not None else "ended the stream"
            raise UpstreamFailure("broken", f"{backend.url} {what} before the first token", retryable=True)
        return resp, it, first, scanner, relayed

    async def _pump(
        self,
        send: Send,
        live: _Live,
        backend: Backend,
        resp: UpstreamStream,
        it: Any,
        first: list[bytes],
        scanner: EventScanner,
        extra: list[tuple[bytes, bytes]],
        started: bool = False,
        token_offset: int = 0,
    ) -> str:
        """``started``: the response (and a first token) already went out; ``token_offset``: tokens that
        came from elsewhere (a disaggregated prefill), added to the ledger's count."""
        d = self.dispatcher
        rid = live.info.rid
        failure: UpstreamFailure | None = None
        try:
            if scanner.done:  # the client has everything once these bytes are sent: leaving then is no failure
                live.complete = True
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE + extra})
            if first:
                await send({"type": "http.response.body", "body": b"".join(first), "more_body": True})
            if not scanner.done:
                clock = self.clock
                # the idle timeout times the upstream reads only (a slow client is not a stalled backend): the
                # stream enforces it on its own waits (UpstreamStream.idle_s), with no timer work per chunk
                resp.idle_s = self.config.timeouts.idle_s
                push = getattr(resp, "push", None)
                write = live.write
                if push is not None and write is not None:
                    # relay from the upstream socket's callback while the client's socket takes each chunk at
                    # once: no task switch per token; the loop below takes over when it does not
                    def sink(data: bytes) -> bool:
                        if not write(data):
                            return False
                        n = scanner.feed(data)
                        if n:
                            live.saw(n, clock())
                            d.tokens(rid, scanner.tokens + token_offset)
                        if scanner.done:
                            live.complete = True
                        return True

                    await push(sink)
                async for chunk in it:
                    n = scanner.feed(chunk)
                    if n:
                        live.saw(n, clock())
                        d.tokens(rid, scanner.tokens + token_offset)
                    if scanner.done:
                        live.complete = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamFailure as e:
            failure = e
        finally:
            await resp.aclose()
        if failure is None and scanner.done and scanner.error is None:
            self._completed(live)
            live.complete = True
            with contextlib.suppress(OSError):  # a client that left right after [DONE] has its whole answer
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return "completed"
        if failure is None:
            why = "sent an error event" if scanner.error is not None else "ended without [DONE]"
            failure = UpstreamFailure("broken", f"stream from {backend.url} {why}", retryable=True)
        self.metrics.backend_errors.labels(backend.name, failure.kind).inc()
        d.finish(rid, None)
        tail = b""
        if scanner.error is None:
            msg = f"backend failure mid-stream: {_public(failure.message, backend)}"
            tail = b"data: " + error_bytes(failure.status, msg) + b"\n\n"
        live.complete = True
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return "failed"

    async def _collect(
        self,
        send: Send,
        live: _Live,
        backend: Backend,
        resp: UpstreamStream,
        it: Any,
        scanner: EventScanner,
        chat: bool,
        extra: list[tuple[bytes, bytes]],
        token_offset: int = 0,
    ) -> str:
        d = self.dispatcher
        rid = live.info.rid
        failure: UpstreamFailure | None = None
        try:
            if not scanner.done:
                clock = self.clock
                resp.idle_s = self.config.timeouts.idle_s
                async for chunk in it:
                    n = scanner.feed(chunk)
                    if n:
                        live.saw(n, clock())
                        d.tokens(rid, scanner.tokens + token_offset)
        except UpstreamFailure as e:
            failure = e
        finally:
            await resp.aclose()
        if failure is None and scanner.done and scanner.error is None:
            doc = Aggregator(chat).build(scanner.events)
            self._completed(live)
            live.complete = True
            await _send(send, 200, json.dumps(doc).encode(), _JSON + extra)
            return "completed"
        if failure is None:
            failure = UpstreamFailure("broken", f"stream from {backend.url} ended without [DONE]", retryable=True)
        self.metrics.backend_errors.labels(backend.name, failure.kind).inc()
        d.finish(rid, None)
        live.complete = True
        await _send_error(send, GatewayError(failure.status, f"backend failure: {_public(failure.message, backend)}"))
        return "failed"

    def _completed(self, live: _Live) -> None:
        self.dispatcher.finish(live.info.rid, live.tokens)
        m = self.metrics
        if live.first is not None:
            m.ttft.labels(live.tier).observe(live.first - live.arrival)
            if live.tokens > 1 and live.last is not None:
                m.tpot.labels(live.tier).observe((live.last - live.first) / (live.tokens - 1))
        if live.tokens and live.worst_slack >= 0:
            m.attained.labels(live.tier).inc()


_DONE_EVENT = b"data: [DONE]\n\n"


def _public(message: str, backend: Backend) -> str:
    """A failure message fit for the client: the backend's internal URL becomes its server name (the URL stays
    in the gateway's logs and metrics labels)."""
    return message.replace(backend.url, f"server {backend.name}")


def splice_json(obj: bytes, extra: dict[str, Any]) -> bytes:
    """``obj`` (a non-empty JSON object, encoded) with ``extra``'s fields added at its end, as
    ``json.dumps({**obj, **extra})`` would give (the fields must not be in ``obj``), without decoding and
    encoding ``obj`` again: a long prompt is copied, not re-encoded, per attempt."""
    head = obj.rstrip()
    if not head.endswith(b"}") or not extra:
        raise ValueError("splice_json: obj must be an encoded JSON object and extra non-empty")
    return head[:-1] + b", " + json.dumps(extra).encode()[1:]


def events_bytes(events: list[bytes]) -> list[bytes]:
    return [ev + b"\n\n" for ev in events]


def _first_token_events(events: list[bytes], chat: bool) -> tuple[bytes, bytes, dict[str, Any]]:
    """From a one-token prefill stream: (the chat role chunk, if any; the first token's event) re-framed so the
    client's stream goes on: ``finish_reason`` null and no usage (the decode leg sends the real end); and the
    response's identity (``id``, ``created``), which the decode leg is given so its chunks carry the same."""
    head = b""
    first = b""
    identity: dict[str, Any] = {}
    for ev in events:
        try:
            doc = json.loads(ev[5:])
        except ValueError:
            continue
        if not isinstance(doc, dict) or not doc.get("choices"):
            continue  # the usage chunk
        if not identity:
            identity = {k: doc[k] for k, kind in (("id", str), ("created", int))
                        if isinstance(doc.get(k), kind) and not isinstance(doc.get(k), bool)}
        ch = doc["choices"][0]
        piece = (ch.get("delta") or {}).get("content") if chat else ch.get("text")
        if not piece:
            if chat and not head and (ch.get("delta") or {}).get("role"):
                head = ev + b"\n\n"
            continue
        ch["finish_reason"] = None
        doc.pop("usage", None)
        first = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
        break
    return head, first, identity


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]  # not chunked: one frame, fewer bytes
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: Send, e: GatewayError) -> None:
    headers = list(_JSON)
    if e.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(e.retry_after))).encode()))
    if e.close:
        headers.append((b"connection", b"close"))
    await _send(send, e.status, e.body(), headers)


def create_gateway_app(config: GatewayConfig, **kw: Any) -> Gateway:
    """A new gateway app (own router, ledger, metrics registry). Raises ``ConfigError`` for a bad config."""
    return Gateway(config, **kw)


__all__ = ["Gateway", "create_gateway_app"]
