"""The live gateway: an OpenAI-compatible front that routes with the simulator's own policy objects.

The router keeps every queue; engines stay SLO-unaware. Each request gets a tier from its SLO headers, the
policy (``polyserve.policy``, pure and clock-free) places it with the wall clock as ``now``, and the gateway
feeds the policy's ledger (``polyserve.core.fleet.FleetState``) from what it sent and what has streamed back.

Reading guide:
- ``config``     ``GatewayConfig`` and ``load_config(path)`` (YAML or TOML), validated in one place;
- ``errors``     ``GatewayError``: an HTTP status with an OpenAI-style body;
- ``slo``        headers and API keys -> the request's tier and SLOs (400/401/403);
- ``latency``    the latency model the policy predicts the backends with (time scale included);
- ``dispatcher`` ``Dispatcher``: drives the router on the wall clock (pending queues, retries, ticks,
                 scale actions, dead backends), the live twin of ``polyserve.sim.cluster``;
- ``actuator``   ``Actuator`` protocol; ``StaticActuator`` (fixed backends), ``LocalEngineActuator``
                 (local emulated engines, started and stopped as the policy scales);
- ``backend``    ``Backend`` records, the ``Upstream`` interface (open a stream, classify failures) and its
                 httpx implementation (any transport: in-process tests);
- ``wire``       ``WireClient``: the lean HTTP/1.1 upstream client used over TCP (the hot path);
- ``events``     reading SSE just enough to count tokens, and building non-streaming answers;
- ``scrape``     periodic ``/metrics`` scrapes of the backends: cross-check, dead-backend detection;
- ``metrics``    the gateway's Prometheus metrics (one registry per app);
- ``app``        ``Gateway``: the ASGI app (``create_gateway_app``);
- ``server``     serving it with uvicorn (``polyserve gateway``); ``up``: gateway plus local engines
                 (``polyserve up``); ``process``: start either as a subprocess; ``cli``: the two commands.

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
