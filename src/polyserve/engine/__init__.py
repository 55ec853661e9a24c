"""The emulated engine: an OpenAI-compatible server that behaves like vLLM under load, without a GPU.

It runs the simulator's instance model (continuous batching, chunked prefill, KV capacity, preemption) on the
wall clock: requests queue, batch and slow each other down as the latency model says, and each token is
streamed when its iteration ends. Text is filler (one word per token; prompt tokens = whitespace-separated
words); ``max_tokens`` tokens are always generated (vLLM's ``ignore_eos``).

Reading guide:
- ``config``    ``EngineConfig``: model, GPU, limits, pace (``time_scale``) and injected faults;
- ``host``      ``RealtimeHost``: the instance's ``Host`` on asyncio timers (the real-time twin of the
                simulator's event loop);
- ``core``      ``EngineCore``: requests in, per-request token streams out;
- ``protocol``  OpenAI request checks and response/chunk bodies;
- ``text``      filler words and prompt token counting;
- ``metrics``   Prometheus metrics under vLLM's names (one registry per app);
- ``sse``       the streaming response that notices disconnects, and the crash injector;
- ``app``       ``create_engine_app(config)``: the FastAPI app;
- ``transport`` ``StreamingASGITransport``: httpx to an ASGI app in-process, streaming, with disconnects;
- ``server``    uvicorn serving (``polyserve engine``), ``process``: start/stop an engine subprocess;
- ``ray_actor`` an engine hosted by a Ray actor (``polyserve up --backend ray``; the ``ray`` extra).

Python use::

    app = create_engine_app(EngineConfig(time_scale=10))
    async with httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://engine") as c:
        ...
    with launch_engine(EngineConfig()) as proc:  # a separate process on a free port
        httpx.get(proc.url + "/health")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyserve.engine.config import EngineConfig

if TYPE_CHECKING:
    from polyserve.engine.app import EmulatedEngine, create_engine_app
    from polyserve.engine.process import EngineProcess, EngineStartError, engine_argv, launch_engine
    from polyserve.engine.transport import StreamingASGITransport

_LAZY = {
    "create_engine_app": "polyserve.engine.app",
    "EmulatedEngine": "polyserve.engine.app",
    "EngineProcess": "polyserve.engine.process",
    "EngineStartError": "polyserve.engine.process",
    "engine_argv": "polyserve.engine.process",
    "launch_engine": "polyserve.engine.process",
    "StreamingASGITransport": "polyserve.engine.transport",
}


def __getattr__(name: str) -> object:
    """Heavy parts (FastAPI, httpx) load on first use, so ``polyserve --help`` stays fast."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'polyserve.engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)


__all__ = [
    "EmulatedEngine",
    "EngineConfig",
    "EngineProcess",
    "EngineStartError",
    "StreamingASGITransport",
    "create_engine_app",
    "engine_argv",
    "launch_engine",
]
