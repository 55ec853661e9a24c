"""Hand-built fleets for policy tests."""

from __future__ import annotations

from polyserve.core.fleet import FleetConfig, FleetState, RequestInfo
from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import blis_linear_model


def tiers() -> TierSet:
    return TierSet.from_toml(DEFAULT_TIERS)


def model():
    return blis_linear_model(get_deployment("llama-3.1-8b", "h100"))


def fleet(n: int = 4, roles=None, **cfg) -> FleetState:
    m = model()
    config = FleetConfig(kv_capacity_tokens=m.deployment.kv_capacity_tokens, **cfg)
    return FleetState(tiers(), config, m, roles or ["mixed"] * n)


def req(rid: int, tier: int = 0, input_tokens: int = 1000, arrival: float = 0.0, max_tokens=None) -> RequestInfo:
    t = tiers()[tier]
    return RequestInfo(rid, arrival, input_tokens, tier, t.ttft_slo_ms(input_tokens) / 1e3, t.tpot_ms / 1e3, max_tokens)


def load(f: FleetState, sid: int, n: int, tier: int = 0, first_token: bool = True, start_rid: int = 10_000) -> None:
    """Put ``n`` requests on server ``sid`` (decoding if ``first_token``)."""
    for k in range(n):
        r = req(start_rid + sid * 1000 + k, tier)
        f.on_dispatch(r, sid, 0.0)
        if first_token:
            f.on_first_token(r.rid, 0.0)


def activate(f: FleetState, sid: int, tier: int | None) -> None:
    from polyserve.core.fleet import ScaleAction

    f.apply_scale(ScaleAction(sid, True, tier, "test"), 0.0)
