"""``metrics.summary`` on a tiny hand-built set of records: attainment per tier and overall, percentiles, and
that a request unfinished at the end counts as not attained (design note §1).

The records (default tiers t20/t30/t50/t100; times in ms from 0):

| # | tier | arrival | status     | first token | finish | out | TTFT | TPOT | E2E |
|---|------|---------|------------|-------------|--------|-----|------|------|-----|
| 0 | t20  | 0       | attained   | 100         | 250    | 11  | 100  | 15   | 250 |
| 1 | t20  | 100     | violated   | 300         | 400    | 5   | 200  | 25   | 300 |
| 2 | t30  | 200     | attained   | 600         | 620    | 2   | 400  | 20   | 420 |
| 3 | t30  | 300     | unfinished | 400         | -      | 50  |      |      |     |
| 4 | t100 | 400     | shed       | -           | -      | 10  |      |      |     |
| 5 | t50  | 5000    | not arrived|             |        |     |      |      |     |
"""

from __future__ import annotations

import math

import numpy as np

from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.experiments.runner import PolicySpec, run_workload
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import blis_linear_model
from polyserve.metrics.records import (
    ATTAINED,
    NO_SLACK,
    NOT_ARRIVED,
    SHED,
    UNFINISHED,
    VIOLATED,
    RequestRecords,
)
from polyserve.metrics.summary import percentiles_ms, summarize, tier_attainments
from polyserve.sim.config import SimConfig
from polyserve.workload import Workload

MS = 1_000_000
TIERS = TierSet.from_toml(DEFAULT_TIERS)


def make_workload(arrival_s, inp, out, tier) -> Workload:
    tier = np.array(tier, dtype=np.int16)
    inp = np.array(inp, dtype=np.int64)
    ttft = np.array([TIERS[t].ttft_slo_ms(i) for t, i in zip(tier, inp, strict=True)], dtype=np.float64)
    tpot = np.array([TIERS[t].tpot_ms for t in tier], dtype=np.float64)
    return Workload(np.array(arrival_s, dtype=np.float64), inp, np.array(out, dtype=np.int64), tier, ttft, tpot,
                    TIERS, {"source": "test"})


def hand_built():
    wl = make_workload([0.0, 0.1, 0.2, 0.3, 0.4, 5.0], [100] * 6, [11, 5, 2, 50, 10, 10], [0, 0, 1, 1, 3, 2])
    rec = RequestRecords(6)
    rec.status[:] = [ATTAINED, VIOLATED, ATTAINED, UNFINISHED, SHED, NOT_ARRIVED]
    rec.first_token[:] = [100 * MS, 300 * MS, 600 * MS, 400 * MS, -1, -1]
    rec.finish[:] = [250 * MS, 400 * MS, 620 * MS, -1, -1, -1]
    # TTFT SLOs: t20 510 ms, t30 1010 ms -> slacks 410, 310, 610, 910 ms (all TTFTs met); #1 missed a later token
    rec.ttft_slack[:] = [410 * MS, 310 * MS, 610 * MS, 910 * MS, NO_SLACK, NO_SLACK]
    rec.worst_slack[:] = [5 * MS, -3 * MS, 10 * MS, NO_SLACK, NO_SLACK, NO_SLACK]
    rec.reason[4] = "TTFT deadline can no longer be met"
    return wl, rec


def test_overall_attainment_counts_every_arrived_request():
    """2 attained of 5 arrived (the not-arrived #5 is excluded): 0.4; status counts as in the table."""
    s = summarize(*hand_built())
    assert (s["requests"], s["attained"], s["attainment"]) == (5, 2, 0.4)
    assert s["status"] == {"unfinished": 1, "attained": 2, "violated": 1, "shed": 1, "rejected": 0, "timed_out": 0}


def test_per_tier_attainment_and_counts():
    """t20: 1/2; t30: 1/2 (the unfinished one is not attained); t50: no request (None); t100: 0/1 (shed)."""
    tiers = summarize(*hand_built())["tiers"]
    got = {n: (b["requests"], b["attained"], b["attainment"], b["completed"]) for n, b in tiers.items()}
    assert got == {"t20": (2, 1, 0.5, 2), "t30": (2, 1, 0.5, 1), "t50": (0, 0, None, 0), "t100": (1, 0, 0.0, 0)}
    assert (tiers["t20"]["ttft_met"], tiers["t20"]["tpot_met"]) == (2, 1)
    assert (tiers["t30"]["ttft_met"], tiers["t30"]["tpot_met"]) == (2, 1)


def test_unfinished_request_counts_as_not_attained():
    """Marking #3 attained instead of unfinished would raise t30 to 2/2; unfinished it stays 1/2 and 0.4 overall."""
    wl, rec = hand_built()
    s = summarize(wl, rec)
    assert s["tiers"]["t30"]["attainment"] == 0.5 and s["attainment"] == 0.4
    rec.status[2] = UNFINISHED  # now every t30 request is unfinished or not attained
    s = summarize(wl, rec)
    assert s["tiers"]["t30"]["attained"] == 0 and s["tiers"]["t30"]["attainment"] == 0.0
    assert s["attainment"] == 0.2


def test_percentiles_of_finished_requests_by_linear_interpolation():
    """TTFT {100, 200, 400}: p50 200, p90 200 + 0.8*200 = 360, p99 396, mean 233.3333 (unfinished/shed excluded).

    TPOT {15, 25, 20}: p50 20, p90 24, p99 24.9, mean 20. E2E {250, 300, 420}: p50 300, p90 396, p99 417.6.
    """
    s = summarize(*hand_built())
    assert s["ttft_ms"] == {"p50": 200.0, "p90": 360.0, "p99": 396.0, "mean": 233.3333}
    assert s["tpot_ms"] == {"p50": 20.0, "p90": 24.0, "p99": 24.9, "mean": 20.0}
    assert s["e2e_ms"] == {"p50": 300.0, "p90": 396.0, "p99": 417.6, "mean": 323.3333}


def test_per_tier_percentiles():
    """t20 TTFT {100, 200}: p50 150, p90 190, p99 199; t30 has one finished request (400 ms); t100 none (nulls)."""
    tiers = summarize(*hand_built())["tiers"]
    assert tiers["t20"]["ttft_ms"] == {"p50": 150.0, "p90": 190.0, "p99": 199.0, "mean": 150.0}
    assert tiers["t20"]["tpot_ms"] == {"p50": 20.0, "p90": 24.0, "p99": 24.9, "mean": 20.0}
    assert tiers["t30"]["ttft_ms"] == {"p50": 400.0, "p90": 400.0, "p99": 400.0, "mean": 400.0}
    assert tiers["t100"]["ttft_ms"] == {"p50": None, "p90": None, "p99": None, "mean": None}


def test_throughput_and_goodput_over_the_span_from_first_arrival_to_last_finish():
    """Span 0 -> 620 ms: 3 completed / 0.62 s = 4.83871 req/s; 2 attained / 0.62 s = 3.225806 req/s."""
    s = summarize(*hand_built())
    assert s["throughput_rps"] == round(3 / 0.62, 6)
    assert s["goodput_rps"] == round(2 / 0.62, 6)


def test_window_keeps_only_requests_arriving_inside_it():
    """Window [0.15, 10) s: #2 (attained), #3 (unfinished), #4 (shed) -> 1/3."""
    s = summarize(*hand_built(), window=(0.15, 10.0))
    assert (s["requests"], s["attained"], s["attainment"]) == (3, 1, round(1 / 3, 6))
    assert s["tiers"]["t20"]["requests"] == 0 and s["tiers"]["t20"]["attainment"] is None


def test_tier_attainments_matches_summary_and_is_nan_for_empty_tiers():
    """The cheap per-tier path gives 0.5, 0.5, NaN, 0.0."""
    got = tier_attainments(*hand_built())
    assert list(got) == ["t20", "t30", "t50", "t100"]
    assert (got["t20"], got["t30"], got["t100"]) == (0.5, 0.5, 0.0)
    assert math.isnan(got["t50"])


def test_percentiles_ms_of_an_empty_array_are_null():
    """No finished request: every figure is None (JSON null), never NaN."""
    assert percentiles_ms(np.array([])) == {"p50": None, "p90": None, "p99": None, "mean": None}


def test_request_cut_by_the_horizon_is_unfinished_and_not_attained():
    """A 1000-token output cannot finish within a 0.2 s horizon: reported unfinished, attainment 0."""
    wl = make_workload([0.0, 0.0], [100, 100], [1000, 2], [3, 3])
    model = blis_linear_model(get_deployment("llama-3.1-8b", "h100"))
    res = run_workload(wl, model, PolicySpec(router="round-robin"), SimConfig(instances=1, horizon_s=0.2), seed=0)
    assert list(res.records.status) == [UNFINISHED, ATTAINED]
    s = res.summary
    assert s["status"]["unfinished"] == 1 and s["attained"] == 1 and s["attainment"] == 0.5
    assert s["tiers"]["t100"]["requests"] == 2 and s["tiers"]["t100"]["completed"] == 1


def test_ttft_of_all_requests_counts_the_unfinished_and_leaves_out_the_shed():
    """``ttft_ms_all``: #0 100, #1 200, #2 400 ms, #3 (first token at 400 ms, unfinished) 100 ms; #4 was shed
    (an explicit error, no TTFT); shed fraction 1/5. A request with no first token by the end counts with
    the time it had waited: with #3's first token unknown and the run ending at 2.3 s it counts 2000 ms."""
    wl, rec = hand_built()
    s = summarize(wl, rec, end_s=2.3)
    assert s["shed_fraction"] == 0.2
    assert s["ttft_ms_all"]["p50"] == 150.0  # {100, 100, 200, 400}
    rec.first_token[3] = -1
    s = summarize(wl, rec, end_s=2.3)
    vals = np.array([100.0, 200.0, 400.0, 2000.0])
    assert s["ttft_ms_all"]["p99"] == round(float(np.percentile(vals, 99)), 4)
    assert s["ttft_ms_all"]["p99.9"] > s["ttft_ms_all"]["p99"] > 1900
    # t30: #2 400 / 1010 ms SLO and #3 2000 / 1010 -> p99 of {0.396, 1.980}
    assert s["tiers"]["t30"]["ttft_over_slo_p99"] == round(float(np.percentile([400 / 1010, 2000 / 1010], 99)), 6)
    assert s["tiers"]["t100"]["shed_fraction"] == 1.0 and s["tiers"]["t100"]["ttft_ms_all"]["p50"] is None
