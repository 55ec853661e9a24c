"""The goodput search (``goodput.py``): criteria nest, the bracket reaches the tolerance, the search stays
below the work bound, and the verdicts read the summary as documented."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.data import AZURE_CONV
from polyserve.experiments.goodput import CRITERIA, GoodputSearch, GoodputSettings
from polyserve.experiments.runner import PolicySpec, load_tiers
from polyserve.latency.build import FleetSpec, build_model
from polyserve.sim.config import SimConfig
from polyserve.workload import read_trace

TIERS = load_tiers(None)
TRACE = read_trace(str(AZURE_CONV), None, TIERS)
MODEL = build_model(FleetSpec())


def search(policy="polyserve", **kw):
    st = GoodputSettings(duration_s=60.0, warmup_s=15.0, **kw)
    return GoodputSearch(TRACE, TIERS, MODEL, PolicySpec(router=policy), SimConfig(instances=4, overload="shed"), 0, st)


@pytest.fixture(scope="module")
def done():
    gs = search(rel_tol=0.01)
    return gs, gs.run()


def test_criteria_nest_tail_bounded_under_every_tier_under_overall(done):
    _, r = done
    assert 0 < r.goodput_rps_tail_bounded <= r.goodput_rps_all_tiers <= r.goodput_rps


def test_every_probe_is_judged_on_every_criterion_and_a_stricter_pass_implies_the_looser(done):
    gs, _ = done
    for p in gs.probes:
        assert set(p.passed) == set(CRITERIA)
        if p.passed["tail_bounded"]:
            assert p.passed["all_tiers"]
        if p.passed["all_tiers"]:
            assert p.passed["overall"]


@pytest.mark.parametrize("criterion,attr", [("overall", "goodput_rps"), ("all_tiers", "goodput_rps_all_tiers"),
                                            ("tail_bounded", "goodput_rps_tail_bounded")])
def test_bracket_reaches_one_percent_a_failing_rate_just_above_each_goodput(done, criterion, attr):
    gs, r = done
    g = getattr(r, attr)
    hi = min([p.rate for p in gs.probes if not p.passed[criterion] and p.rate > g]
             + [gs.bounds()[0 if criterion == "overall" else 1]])
    assert (hi - g) / hi < 0.01
    assert any(p.rate == g and p.passed[criterion] for p in gs.probes), "the goodput itself was a passing run"


def test_search_never_simulates_above_the_work_bound(done):
    gs, r = done
    assert all(p.rate < r.bound_rps for p in gs.probes)
    assert r.goodput_rps < r.bound_rps and r.goodput_rps_all_tiers < r.bound_rps_all_tiers <= r.bound_rps


def test_tail_verdict_reads_p99_ttft_over_slo_of_every_tier():
    gs = search(tail_factor=2.0)
    tiers = {"t20": {"attainment": 0.95, "ttft_over_slo_p99": 1.5},
             "t30": {"attainment": 0.91, "ttft_over_slo_p99": 2.5}}
    v = gs.verdicts({"attainment": 0.93, "tiers": tiers})
    assert v == {"overall": True, "all_tiers": True, "tail_bounded": False}
    tiers["t30"]["ttft_over_slo_p99"] = 2.0
    assert gs.verdicts({"attainment": 0.93, "tiers": tiers})["tail_bounded"]
    tiers["t30"]["attainment"] = 0.89
    assert gs.verdicts({"attainment": 0.93, "tiers": tiers}) == {"overall": True, "all_tiers": False,
                                                                 "tail_bounded": False}


def test_stationarity_reports_the_quarters_of_the_counted_window(done):
    _, r = done
    st = r.stationarity
    assert st is not None and len(st["quarters"]) == 4 and st["rate"] == r.goodput_rps_tail_bounded
    assert st["max_gap"] == pytest.approx(max(abs(q - st["attainment"]) for q in st["quarters"]), abs=1e-6)


def test_bad_settings_are_refused_with_the_field():
    with pytest.raises(ConfigError, match="tail_factor"):
        GoodputSettings(tail_factor=0)
    with pytest.raises(ConfigError, match="start-rate"):
        GoodputSettings(start_rate=-1)
    with pytest.raises(ConfigError, match="unknown goodput criterion"):
        search().search("p99")
