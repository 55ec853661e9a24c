"""``polyserve compare`` end to end on a tiny fleet: the interface others rely on, n/a pairs, sweeps."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from polyserve.cli import app
from polyserve.experiments.compare import CSV_SKIP, ROW_KEYS

ROW_MIN = ("policy", "mode", "goodput_rps", "goodput_rps_all_tiers", "optimal_rps", "goodput_fraction",
           "autoscaled_goodput_per_instance_s", "scaling_actions", "attainment_by_tier", "goodput_rps_tail_bounded",
           "ttft_p99_ms_all", "shed_fraction", "seeds")

TINY = ["--instances", "4", "--duration", "40", "--warmup", "5", "--rel-tol", "0.1", "--jobs", "1", "--quiet",
        "--autoscale-rate", "2", "--seeds", "0,1"]


def _compare(tmp_path, *extra: str):
    out = tmp_path / "out"
    out.mkdir()  # --out may already exist
    r = CliRunner().invoke(app, ["compare", *TINY, "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return out


def test_compare_writes_rows_with_the_documented_keys_and_marks_colocated_only_pairs_na(tmp_path):
    """compare.json: one row per policy x mode with the fixed keys; co-chunk disaggregated is n/a, not an error."""
    out = _compare(tmp_path, "--policies", "polyserve,co-chunk,round-robin", "--modes", "colocated,disaggregated",
                   "--co-chunk-budgets", "512,4096", "--sensitivity-model", "none", "--rate-sweep", "",
                   "--fleet-sizes", "")
    rows = json.loads((out / "compare.json").read_text())
    assert [(r["policy"], r["mode"]) for r in rows] == [
        ("polyserve", "colocated"), ("polyserve", "disaggregated"), ("co-chunk", "colocated"),
        ("co-chunk", "disaggregated"), ("round-robin", "colocated"), ("round-robin", "disaggregated")]
    for r in rows:
        assert set(ROW_MIN) <= set(r)
    na = rows[3]
    assert na["na"] is True and all(na[k] is None for k in ROW_MIN[2:])
    for r in (x for x in rows if not x["na"]):
        assert r["goodput_rps"] > 0
        assert r["goodput_rps_all_tiers"] <= r["goodput_rps"] + 1e-9, "every-tier goodput never above overall"
        assert r["goodput_rps_tail_bounded"] <= r["goodput_rps_all_tiers"] + 1e-9
        assert r["seeds"] == [0, 1] and [s["seed"] for s in r["per_seed"]] == [0, 1]
        assert r["goodput_rps_tail_bounded_min"] <= r["goodput_rps_tail_bounded"] <= r["goodput_rps_tail_bounded_max"]
        assert r["goodput_rps"] <= r["optimal_rps"], "no policy above the work bound"
        assert all(s["goodput_rps"] <= s["optimal_rps"] for s in r["per_seed"])
        assert 0 <= r["shed_fraction"] <= 1
        assert abs(r["goodput_fraction"] - r["goodput_rps"] / r["optimal_rps"]) < 1e-9
        assert set(r["attainment_by_tier"]) == {"t20", "t30", "t50", "t100"}
        assert r["scaling_actions"] is not None and r["autoscaled_goodput_per_instance_s"] >= 0
    assert rows[2]["token_budget"] in (512, 4096), "co-chunk reports the best budget of its sweep"
    header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    tiers = ("t20", "t30", "t50", "t100")
    assert header == [k for k in ROW_KEYS if k not in CSV_SKIP] + [f"attainment_{t}" for t in tiers]
    assert rows[0]["latency_model"] == "linear" and rows[0]["latency_model_params"]["b0_us"] > 0
    assert (out / "goodput_by_policy.png").stat().st_size > 1000
    details = json.loads((out / "compare_details.json").read_text())
    assert details["meta"]["seed"] == 0 and "colocated" in details["headline"]
    assert details["headline"]["criterion"] == "goodput_rps_tail_bounded"


@pytest.mark.parametrize(("policies", "mode"), [
    ("polyserve-no-wait,polyserve-static-chunk", "disaggregated"),
    ("polyserve-edf-prefill", "colocated"),
])
def test_an_ablation_of_a_mechanism_the_mode_does_not_use_is_na_with_the_reason(tmp_path, policies, mode):
    out = _compare(tmp_path, "--policies", policies, "--modes", mode, "--sensitivity-model", "none",
                   "--rate-sweep", "", "--fleet-sizes", "")
    rows = json.loads((out / "compare.json").read_text())
    assert [r["na"] for r in rows] == [True] * len(policies.split(","))
    assert all("no-op" in r["note"] and r["goodput_rps"] is None for r in rows)


def test_compare_sweeps_and_sensitivity_model_write_their_files(tmp_path):
    """The rate sweep, the fleet-size sweep and the roofline sensitivity table each leave their output."""
    out = _compare(tmp_path, "--policies", "polyserve,minimal", "--modes", "colocated", "--rate-sweep", "0.5,1.0",
                   "--fleet-sizes", "2,4")
    sens = json.loads((out / "compare_roofline.json").read_text())
    assert {r["policy"] for r in sens} == {"polyserve", "minimal"}
    assert {r["latency_model"] for r in sens} == {"roofline"}
    details = json.loads((out / "compare_details.json").read_text())
    assert sorted(details["rate_sweep"]) == ["minimal", "polyserve"]
    assert [p["instances"] for p in details["fleet_scaling"] if p["policy"] == "polyserve"] == [2, 4]
    for name in ("attainment_vs_rate.png", "fleet_scaling.png"):
        assert (out / name).stat().st_size > 1000


def test_compare_rejects_an_unknown_policy_with_the_registry_names(tmp_path):
    """A typo in --policies fails before any run, naming what is allowed."""
    r = CliRunner().invoke(app, ["compare", *TINY, "--out", str(tmp_path), "--policies", "polyserv"])
    assert r.exit_code != 0
    assert "polyserv" in r.output and "polyserve" in r.output


def test_compare_on_a_lengths_only_trace_uses_poisson_arrivals_for_the_autoscaled_run(tmp_path):
    """A trace without timestamps (lengths only) cannot be replayed: its autoscaled run draws Poisson arrivals."""
    trace = tmp_path / "lengths.csv"
    rows = "".join(f"{200 + 37 * i},{20 + i}\n" for i in range(40))
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + rows)
    out = _compare(tmp_path, "--trace", str(trace), "--policies", "polyserve,minimal", "--modes", "colocated",
                   "--sensitivity-model", "none", "--rate-sweep", "", "--fleet-sizes", "")
    rows = json.loads((out / "compare.json").read_text())
    assert all(r["goodput_rps"] > 0 and r["autoscaled_goodput_per_instance_s"] > 0 for r in rows)


def test_every_policy_is_swept_over_the_same_prefill_splits_and_reported_at_its_best(tmp_path):
    """Disaggregated fairness: each policy runs at every --prefill-fractions share and its row is the best one,
    with the whole sweep beside it; co-located rows carry no split."""
    out = _compare(tmp_path, "--policies", "polyserve,minimal", "--modes", "colocated,disaggregated",
                   "--prefill-fractions", "0.25,0.5", "--seeds", "0", "--sensitivity-model", "none",
                   "--rate-sweep", "", "--fleet-sizes", "")
    rows = {(r["policy"], r["mode"]): r for r in json.loads((out / "compare.json").read_text())}
    for p in ("polyserve", "minimal"):
        dis = rows[(p, "disaggregated")]
        assert [s["prefill_fraction"] for s in dis["sweep"]] == [0.25, 0.5]
        best = max(s["goodput_rps_tail_bounded"] for s in dis["sweep"])
        assert dis["goodput_rps_tail_bounded"] == best
        assert dis["prefill_fraction"] in (0.25, 0.5)
        assert rows[(p, "colocated")]["prefill_fraction"] is None


def test_a_prefill_share_outside_zero_one_is_refused_naming_the_flag(tmp_path):
    r = CliRunner().invoke(app, ["compare", *TINY, "--out", str(tmp_path / "o"), "--prefill-fractions", "0.5,1.2"])
    assert r.exit_code != 0 and "--prefill-fractions" in r.output
