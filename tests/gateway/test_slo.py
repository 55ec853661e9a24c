"""SLO headers -> tier: the loosest tier whose TPOT is at most the one asked; keys limit the tiers."""

from __future__ import annotations

import pytest

from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.gateway.errors import GatewayError
from polyserve.gateway.slo import authorize, resolve_slo

TIERS = TierSet.from_toml(DEFAULT_TIERS)  # t20, t30, t50, t100
LOOSEST = 3


CASES = [("20", "t20"), ("29.9", "t20"), ("30", "t30"), ("45", "t30")]
CASES += [("50", "t50"), ("99", "t50"), ("100", "t100"), ("5000", "t100")]


@pytest.mark.parametrize(("tpot", "tier"), CASES)
def test_tpot_header_picks_the_loosest_tier_that_still_meets_it(tpot: str, tier: str) -> None:
    c = resolve_slo({"x-slo-tpot-ms": tpot}, TIERS, LOOSEST)
    assert TIERS[c.tier].name == tier
    assert c.tpot_ms == float(tpot)
    assert TIERS[c.tier].tpot_ms <= float(tpot)


def test_a_tpot_tighter_than_every_tier_is_rejected_with_the_tightest_named() -> None:
    with pytest.raises(GatewayError) as e:
        resolve_slo({"x-slo-tpot-ms": "10"}, TIERS, LOOSEST)
    assert e.value.status == 400 and "t20 (20 ms)" in e.value.message


def test_ttft_header_is_the_requests_own_deadline_else_the_tiers() -> None:
    own = resolve_slo({"x-slo-ttft-ms": "250", "x-slo-tpot-ms": "50"}, TIERS, LOOSEST)
    assert own.ttft_s(TIERS, 1000) == 0.25
    tiers_own = resolve_slo({"x-slo-tpot-ms": "50"}, TIERS, LOOSEST)
    assert tiers_own.ttft_s(TIERS, 1000) == pytest.approx((2000 + 0.1 * 1000) / 1e3)


def test_tier_header_and_default_tier() -> None:
    assert resolve_slo({"x-polyserve-tier": "t30"}, TIERS, LOOSEST).tier == 1
    assert resolve_slo({}, TIERS, 2).tier == 2
    with pytest.raises(GatewayError, match="unknown tier 'gold'"):
        resolve_slo({"x-polyserve-tier": "gold"}, TIERS, LOOSEST)
    with pytest.raises(GatewayError, match="headers disagree"):
        resolve_slo({"x-polyserve-tier": "t100", "x-slo-tpot-ms": "30"}, TIERS, LOOSEST)


@pytest.mark.parametrize("bad", ["abc", "0", "-5", "nan", "inf", ""])
def test_bad_slo_header_values_are_400(bad: str) -> None:
    for h in ("x-slo-tpot-ms", "x-slo-ttft-ms"):
        with pytest.raises(GatewayError) as e:
            resolve_slo({h: bad}, TIERS, LOOSEST)
        assert e.value.status == 400 and h in e.value.message


def test_keys_missing_unknown_401_and_tighter_tier_403() -> None:
    keys = {"sk-a": frozenset({2, 3})}
    with pytest.raises(GatewayError) as e:
        authorize({}, keys)
    assert e.value.status == 401
    with pytest.raises(GatewayError) as e:
        authorize({"authorization": "Bearer nope"}, keys)
    assert e.value.status == 401
    allowed = authorize({"authorization": "Bearer sk-a"}, keys)
    assert allowed == {2, 3}
    assert authorize({"x-api-key": "sk-a"}, keys) == {2, 3}
    assert authorize({}, None) is None
    with pytest.raises(GatewayError) as e:
        resolve_slo({"x-slo-tpot-ms": "20"}, TIERS, LOOSEST, allowed)
    assert e.value.status == 403 and "tighter than" in e.value.message
    assert resolve_slo({"x-slo-tpot-ms": "60"}, TIERS, LOOSEST, allowed).tier == 2
    # no header and a default the key may not use: the loosest tier it may use
    assert resolve_slo({}, TIERS, 0, allowed).tier == 3
