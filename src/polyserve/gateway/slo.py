"""A request's SLO and tier, from its headers and its API key.

Headers (the Gateway API Inference Extension's names, plus ours):

- ``x-slo-tpot-ms``: the TPOT the client needs. The request joins the **loosest tier whose TPOT is at most
  that** (``TierSet.index_for_tpot``): a tier that promises at least what was asked, and no tighter than
  needed. Asking for less than the tightest tier offers is refused (400, naming the tightest tier);
- ``x-slo-ttft-ms``: the client's own TTFT; without it the tier's (base + per prompt token);
- ``x-polyserve-tier``: a tier by name. With a TPOT header too, the tier must be at least as tight as the
  TPOT asked, else 400 (the two disagree).

Without any of them the request gets the config's default tier. Values must be finite numbers > 0, else 400.

API keys (``Authorization: Bearer KEY`` as the OpenAI clients send, or ``x-api-key``): when the config lists
keys, a missing or unknown key is 401; a key asking for a tier it is not allowed is 403 (a tighter tier than
it may use is the case that matters: tight tiers cost the most). A key's default tier is the config's default
if the key may use it, else the loosest tier it may use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from polyserve.core.tiers import TierSet
from polyserve.gateway.errors import GatewayError

TTFT_HEADER = "x-slo-ttft-ms"
TPOT_HEADER = "x-slo-tpot-ms"
TIER_HEADER = "x-polyserve-tier"


@dataclass(frozen=True, slots=True)
class SloChoice:
    tier: int  # index into the TierSet (0 = tightest)
    ttft_ms: float | None  # the client's own TTFT; None: the tier's, for the prompt length
    tpot_ms: float  # the client's own TPOT, else the tier's

    def ttft_s(self, tiers: TierSet, input_tokens: int) -> float:
        if self.ttft_ms is not None:
            return self.ttft_ms / 1e3
        return tiers[self.tier].ttft_slo_ms(input_tokens) / 1e3


def _ms(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise GatewayError(400, f"header {name}: must be a number of milliseconds > 0, got {raw!r}", name)
    return v


def api_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


def authorize(headers: Mapping[str, str], keys: Mapping[str, frozenset[int]] | None) -> frozenset[int] | None:
    """The tiers the caller may use (None: no keys configured, all tiers). 401 if keys are required."""
    if keys is None:
        return None
    key = api_key(headers)
    if key is None:
        raise GatewayError(401, "missing API key: send 'Authorization: Bearer KEY'")
    allowed = keys.get(key)
    if allowed is None:
        raise GatewayError(401, "invalid API key")
    return allowed


def resolve_slo(
    headers: Mapping[str, str], tiers: TierSet, default_tier: int, allowed: frozenset[int] | None = None
) -> SloChoice:
    """The request's tier and SLOs. Raises ``GatewayError`` 400 (bad or contradictory headers) or 403."""
    ttft = _ms(headers, TTFT_HEADER)
    tpot = _ms(headers, TPOT_HEADER)
    name = headers.get(TIER_HEADER)
    asked = True
    if name is not None:
        name = name.strip()
        if name not in tiers.names:
            raise GatewayError(
                400, f"header {TIER_HEADER}: unknown tier {name!r}; known: {', '.join(tiers.names)}", TIER_HEADER
            )
        tier = tiers.index(name)
        if tpot is not None and tiers[tier].tpot_ms > tpot:
            raise GatewayError(
                400,
                f"headers disagree: tier {name} promises a TPOT of {tiers[tier].tpot_ms:g} ms, "
                f"looser than the {tpot:g} ms asked in {TPOT_HEADER}",
                TPOT_HEADER,
            )
    elif tpot is not None:
        found = tiers.index_for_tpot(tpot)
        if found is None:
            t0 = tiers[0]
            raise GatewayError(
                400,
                f"header {TPOT_HEADER}: {tpot:g} ms is tighter than every tier; the tightest is {t0.name} "
                f"({t0.tpot_ms:g} ms)",
                TPOT_HEADER,
            )
        tier = found
    else:
        tier = default_tier
        asked = False
    if allowed is not None and tier not in allowed:
        if not asked:
            tier = max(allowed)  # the loosest tier the key may use
        else:
            names = ", ".join(tiers[i].name for i in sorted(allowed))
            what = "tighter than" if tier < min(allowed) else "not among"
            raise GatewayError(
                403, f"this API key may not use tier {tiers[tier].name} ({what} the tiers it may use: {names})"
            )
    return SloChoice(tier, ttft, tpot if tpot is not None else tiers[tier].tpot_ms)
