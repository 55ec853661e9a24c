"""``create_engine_app``: the emulated engine as a FastAPI app (OpenAI-compatible, vLLM-like).

Routes: ``POST /v1/completions`` and ``/v1/chat/completions`` (streaming SSE or not), ``GET /v1/models``,
``GET /health`` (200 once the app can take requests), ``GET /metrics`` (Prometheus, vLLM's names).

A list of prompts in ``/v1/completions`` is a batch, as in vLLM: one engine request per prompt, one choice per
prompt (``index`` its position), usage summed; streamed, the prompts' chunks are merged as they come. Response
ids carry a random part drawn once per process (unique across engines); ``created`` is the request's time.

Each generation request: optional injected delay (``add_latency_ms``), body checks (400 with an OpenAI-style
body, 404 for an unknown model), the ``fail_after`` fault (500), the context check (prompt + max_tokens must
fit the KV cache, else 400, as vLLM's max_model_len check), then ``EngineCore.submit``. A stream sends one
chunk per token (several chunks in one write when the client lags), the usage chunk if asked, then
``data: [DONE]``. Whatever ends a request (done, client gone, crash, server shutdown) aborts it in the engine,
so its seat and KV are freed.

The app holds an ``EmulatedEngine`` at ``app.state.engine``; its ``EngineCore`` is built on first use on the
running event loop (so the app can be created outside one, and several apps can share one loop).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyserve import __version__
from polyserve.engine.config import EngineConfig
from polyserve.engine.core import EngineCore, EngineObserver, TokenStream
from polyserve.engine.metrics import CONTENT_TYPE, EngineMetrics
from polyserve.engine.sse import CrashMiddleware, InjectedCrash, SSEResponse
from polyserve.serving.openai import (
    ChunkWriter,
    GenerationRequest,
    RequestError,
    error_body,
    full_response,
    parse_chat,
    parse_completion,
    parse_json,
    parse_slo,
)
from polyserve.serving.text import output_text, output_word


def _default_model(config: EngineConfig) -> object:
    from polyserve.latency.build import FleetSpec, build_model

    return build_model(
        FleetSpec(
            model=config.model,
            gpu=config.gpu,
            tp=config.tp,
            latency_model=config.latency_model,
            latency_coefficients=config.latency_coefficients,
            latency_profile=config.latency_profile,
            gpu_memory_utilization=config.gpu_memory_utilization,
        )
    )


class EmulatedEngine:
    """Config, latency model, metrics and counters of one engine; the ``EngineCore`` is per event loop.

    ``latency_model`` may be given (tests inject exact ones); by default it is built from the config, which
    raises ``ConfigError`` for an unknown model/GPU or one whose weights do not fit.
    """

    def __init__(self, config: EngineConfig, latency_model: object | None = None) -> None:
        self.config = config
        self.model = latency_model if latency_model is not None else _default_model(config)
        kv = config.kv_capacity_tokens or self.model.deployment.kv_capacity_tokens  # type: ignore[attr-defined]
        self.kv_capacity = int(kv)
        self.metrics = EngineMetrics(config.name)
        self.metrics.bind(
            lambda: self.core.num_running if self.core else 0,
            lambda: self.core.num_waiting if self.core else 0,
            lambda: self.core.kv_usage() if self.core else 0.0,
        )
        m = self.metrics
        self.observer = EngineObserver(
            on_first_token=lambda s, ttft: (m.generation_tokens.inc(), m.ttft.observe(ttft)),
            on_token=lambda s, gap: (m.generation_tokens.inc(), m.itl.observe(gap)),
            on_finish=lambda s, e2e: (m.success.inc(), m.e2e.observe(e2e)),
            on_preempt=lambda s: m.preemptions.inc(),
        )
        self.core: EngineCore | None = None
        self.requests_received = 0  # valid generation requests (what --fail-after counts)
        self.created = int(time.time())  # the model's creation time (/v1/models), not a response's
        self._ids = itertools.count()
        self._salt = secrets.token_hex(6)  # per process: two engines never hand out the same response id

    def get_core(self) -> EngineCore:
        loop = asyncio.get_running_loop()
        if self.core is None or self.core.loop is not loop:
            if self.core is not None:
                if self.core.num_live:
                    raise RuntimeError("an engine app cannot serve from two event loops at once")
                self.core.close()
            self.core = EngineCore(self.config, self.model, loop, self.observer)
        return self.core

    def close(self) -> None:
        if self.core is not None:
            self.core.close()

    def next_id(self, chat: bool) -> str:
        """A response id unique across engines and restarts: a random per-process part, then a counter."""
        return f"{'chatcmpl' if chat else 'cmpl'}-{self._salt}{next(self._ids):x}"


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


async def _wait_disconnect(request: Request) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


def create_engine_app(config: EngineConfig, *, latency_model: object | None = None) -> FastAPI:
    """A new engine app with its own state and metrics registry. Raises ``ConfigError`` for a bad config."""
    engine = EmulatedEngine(config, latency_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(
        title="polyserve emulated engine",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.add_middleware(CrashMiddleware)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {
            "object": "list",
            "data": [
                {
                    "id": config.name,
                    "object": "model",
                    "created": engine.created,
                    "owned_by": "polyserve",
                    "root": config.model,
                    "parent": None,
                    "max_model_len": engine.kv_capacity,
                }
            ],
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, chat=True)

    async def _generate(request: Request, chat: bool) -> Response:
        arrival = asyncio.get_running_loop().time()
        if config.add_latency_ms:
            await asyncio.sleep(config.add_latency_ms / 1000)
        body = parse_json(await request.body())
        g = parse_chat(body) if chat else parse_completion(body)
        if g.model is not None and g.model != config.name:
            raise RequestError(
                404, f"The model `{g.model}` does not exist; this engine serves `{config.name}`.", "model"
            )
        for name in ("logprobs", "top_logprobs"):
            v = body.get(name)
            if v not in (None, False, 0):  # say so rather than answer with logprobs silently null
                raise RequestError(400, f"'{name}' is not supported by the emulated engine (it produces no "
                                   "token probabilities)", name)
        engine.requests_received += 1
        if config.fail_after is not None and engine.requests_received > config.fail_after:
            raise RequestError(
                500,
                f"injected failure: this engine fails every request after the first "
                f"{config.fail_after} (--fail-after)",
            )
        created = g.created if g.created is not None else int(time.time())  # the request's time, as vLLM
        max_tokens = g.max_tokens or config.default_output_len
        if g.prompt_tokens + max_tokens > engine.kv_capacity:  # the longest prompt of a batch
            raise RequestError(
                400,
                f"This model's maximum context length is {engine.kv_capacity} tokens. However, "
                f"you requested {g.prompt_tokens + max_tokens} tokens ({g.prompt_tokens} in the "
                f"prompt, {max_tokens} in the completion).",
                "max_tokens",
            )
        core = engine.get_core()
        try:
            slo = g.slo or parse_slo({}, request.headers)
            if g.prefilled and max_tokens < 2:
                raise RequestError(400, "a prefilled request ('polyserve_kv') needs max_tokens >= 2: the first "
                                   "token came from the prefill engine", "max_tokens")
            deadlines = None if slo is None else (slo.ttft_ms / 1e3, slo.tpot_ms / 1e3)
            streams = [core.submit(n, max_tokens, arrival, g.priority, deadlines, g.prefilled)
                       for n in (g.batch or (g.prompt_tokens,))]  # a batch: one engine request per prompt
        except RuntimeError as e:  # the engine broke on an internal error earlier
            raise RequestError(500, str(e)) from None
        prompt_total = sum(g.batch) if g.batch else g.prompt_tokens
        engine.metrics.prompt_tokens.inc(prompt_total)
        rid = g.response_id or engine.next_id(chat)

        def abort_all() -> None:
            for st in streams:
                core.abort(st)

        if g.stream:
            events = (_events(g, streams[0], rid, created) if len(streams) == 1
                      else _batch_events(g, streams, rid, created))
            return SSEResponse(events, on_close=abort_all)
        waiter = asyncio.ensure_future(asyncio.gather(*(_collect(st) for st in streams)))
        gone = asyncio.ensure_future(_wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            gone.cancel()
            abort_all()
        if waiter not in done:
            return Response(status_code=499)  # the client is gone; nobody reads this
        for st in streams:
            if st.error is not None:
                raise RequestError(500, f"engine failure: {st.error!r}")
        return JSONResponse(
            full_response(chat, rid, created, config.name, output_text(max_tokens), prompt_total,
                          max_tokens * len(streams), len(streams))
        )

    async def _collect(stream: TokenStream) -> None:
        for _ in range(stream.max_tokens):
            await stream.queue.get()
            if stream.error is not None:
                return

    async def _batch_events(g: GenerationRequest, streams: list[TokenStream], rid: str, created: int
                            ) -> AsyncIterator[str]:  # fmt: skip
        """A batch's streams merged as their tokens come, each chunk's ``index`` its prompt's position; one
        usage chunk (the totals) and one ``[DONE]`` at the end, none if an engine failure ended a stream."""
        q: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        async def pump(i: int, st: TokenStream) -> None:
            try:
                async for part in _events(g, st, rid, created, index=i, tail=False):
                    q.put_nowait(part)
            except BaseException as e:  # InjectedCrash, cancellation: the merged stream ends with it
                q.put_nowait(e)
                raise
            finally:
                q.put_nowait(None)

        tasks = [asyncio.ensure_future(pump(i, st)) for i, st in enumerate(streams)]
        try:
            left = len(tasks)
            while left:
                item = await q.get()
                if item is None:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
        if any(st.error is not None for st in streams):
            return
        if g.include_usage:
            n = sum(st.max_tokens for st in streams)
            yield ChunkWriter(g.chat, rid, created, config.name, True).usage(sum(g.batch or ()), n)
        yield ChunkWriter.done()

    async def _events(g: GenerationRequest, stream: TokenStream, rid: str, created: int, index: int = 0,
                      tail: bool = True) -> AsyncIterator[str]:  # fmt: skip
        """One prompt's chunks; ``tail``: then its usage chunk (if asked) and ``[DONE]``."""
        w = ChunkWriter(g.chat, rid, created, config.name, g.include_usage, index)
        n = stream.max_tokens
        offset = 1 if g.prefilled else 0  # a hand-off: token 1 was sent by the prefill engine
        crash = config.crash_mid_stream
        if crash == 0:
            raise InjectedCrash
        sent = 0
        q = stream.queue
        while sent < n:
            await q.get()
            parts: list[str] = []
            while True:
                if stream.error is not None:
                    err = error_body(500, f"engine failure: {stream.error!r}")
                    parts.append("data: " + json.dumps(err) + "\n\n")
                    yield "".join(parts)
                    return
                if g.chat and sent == 0 and not offset:
                    parts.append(w.role())
                parts.append(w.token(output_word(sent + offset), sent + 1 == n))
                sent += 1
                if crash is not None and sent >= crash:
                    yield "".join(parts)
                    raise InjectedCrash
                if sent >= n or q.empty():
                    break
                q.get_nowait()
            yield "".join(parts)
        if not tail:
            return
        if g.include_usage:
            yield w.usage(stream.prompt_tokens, n + offset)
        yield w.done()

    return app
