"""The live gateway: an OpenAI-compatible front that routes with the simulator's own policy objects.

The router keeps every queue. Each request gets a tier from its SLO headers; the ``FleetDriver``
(``polyserve.control``, the simulator's own control loop) places it with the policy (``polyserve.policy``, pure
and clock-free) and the wall clock as ``now``; the gateway feeds the ledger (``polyserve.core.fleet.FleetState``)
from what it sent and what has streamed back, and forwards each request's deadlines to engines that schedule by
them. Co-located or disaggregated (prefill and decode engines, emulated KV hand-off).

Reading guide:
- ``config``     ``GatewayConfig`` and ``load_config(path)`` (YAML or TOML), validated in one place;
- ``errors``     ``GatewayError``: an HTTP status with an OpenAI-style body;
- ``slo``        headers and API keys -> the request's tier and SLOs (400/401/403);
- ``latency``    the latency model the policy predicts the backends with (time scale included);
- ``dispatcher`` ``Dispatcher``: the wall-clock host of the ``FleetDriver`` (futures the handler awaits,
                 the actuator), as ``polyserve.sim.cluster`` is its virtual-clock host;
- ``breaker``    when a failed request marks a backend dead (refused at once; else 3 different requests);
- ``actuator``   ``Actuator`` protocol; ``StaticActuator`` (fixed backends), ``LocalEngineActuator``
                 (local emulated engines, started and stopped as the policy scales); ``ray_actuator``:
                 the same on Ray actors; ``k8s``: engine pods by label selector, scaled through their
                 Deployments' scale subresource (the ``kubernetes`` config section);
- ``backend``    ``Backend`` records and ``open_stream`` (a non-200 answer classified); the ``Upstream``
                 interface, its httpx implementation (any transport: in-process tests) and ``WireClient``
                 (the lean HTTP/1.1 client used over TCP; ``push`` relays a stream from the socket's
                 callback) live in ``polyserve.serving`` (``upstream``, ``wire``), shared with the bench;
- ``httpconn``   ``GuardedHttpProtocol``: uvicorn's HTTP/1.1 (httptools) connections with limits (idle,
                 head and body timeouts, head size, JSON 400s), the fast chunk writer the relay uses and
                 the synchronous response start the first token's relay uses;
- ``batch``      ``BatchMerger``: a list of prompts served as one request each, merged into vLLM's answer;
- ``events``     reading SSE just enough to count tokens, and building non-streaming answers;
- ``scrape``     periodic ``/metrics`` scrapes of the backends: cross-check, dead-backend detection;
- ``metrics``    the gateway's Prometheus metrics (one registry per app);
- ``app``        ``Gateway``: the ASGI app (``create_gateway_app``);
- ``server``     serving it with uvicorn (``polyserve gateway``); ``process``: start it (or ``polyserve up``,
                 which lives in ``polyserve.up``) as a subprocess; ``cli``: the ``gateway`` command.

Python use::

    gw = create_gateway_app(load_config("gateway.yaml"))
    async with httpx.AsyncClient(transport=StreamingASGITransport(gw), base_url="http://gw") as c:
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyserve.gateway.config import GatewayConfig, config_from_dict, load_config

if TYPE_CHECKING:
    from polyserve.gateway.actuator import LocalEngineActuator, StaticActuator
    from polyserve.gateway.app import Gateway, create_gateway_app

_LAZY = {
    "Gateway": "polyserve.gateway.app",
    "create_gateway_app": "polyserve.gateway.app",
    "LocalEngineActuator": "polyserve.gateway.actuator",
    "StaticActuator": "polyserve.gateway.actuator",
}


def __getattr__(name: str) -> object:
    """Heavy parts (httpx, prometheus) load on first use, so ``polyserve --help`` stays fast."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'polyserve.gateway' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)


__all__ = [
    "Gateway",
    "GatewayConfig",
    "LocalEngineActuator",
    "StaticActuator",
    "config_from_dict",
    "create_gateway_app",
    "load_config",
]
