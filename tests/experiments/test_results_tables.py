"""``benchmarks/results_tables.py``: issue 9's targets set against the capacity every policy reached."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "results_tables.py"
spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)  # type: ignore[union-attr]


def _head(ps: float, ps_overall: float, paper: float, other: float) -> dict:
    return {"polyserve_goodput_rps_tail_bounded": ps, "polyserve_goodput_rps": ps_overall,
            "best_paper": "minimal", "best_paper_goodput_rps_tail_bounded": paper,
            "best_other": "static-partition", "best_other_goodput_rps_tail_bounded": other}


def test_a_missed_target_says_whether_any_policy_reached_that_rate_at_all():
    rows = [
        {"policy": "polyserve", "mode": "colocated", "goodput_rps": 130.0},
        {"policy": "minimal", "mode": "colocated", "goodput_rps": 125.0},
        {"policy": "polyserve", "mode": "disaggregated", "goodput_rps": 105.0},
        {"policy": "minimal", "mode": "disaggregated", "goodput_rps": 140.0},
        {"policy": "co-chunk", "mode": "disaggregated", "na": True, "goodput_rps": None},
    ]
    head = {"colocated": _head(120.0, 130.0, 100.0, 100.0), "disaggregated": _head(100.0, 105.0, 100.0, 100.0)}
    lines = rt.target_lines(head, rows)
    body = lines[2:]
    assert len(body) == 4
    co_paper, co_other, dis_paper, dis_other = body
    assert "| 118.0 |" in co_paper and co_paper.endswith("| met |"), "1.18 x 100 needed, 120 measured"
    assert "| 110.0 |" in co_other and co_other.endswith("| met |")
    # 1.23 x 100 = 123 needed, 100 measured, and minimal's overall goodput (140) is above the target rate
    assert "| 123.0 |" in dis_paper and "missed by 0.230x" in dis_paper and "within the overall goodput" in dis_paper
    assert "140.0 (minimal)" in dis_paper, "the largest overall goodput in the mode, whichever policy"
    rows[3]["goodput_rps"] = 108.0  # now no policy's overall goodput reaches 110 or 123 req/s
    dis_other = rt.target_lines(head, rows)[-1]
    assert "missed by 0.100x" in dis_other and "above every policy's overall goodput" in dis_other


def test_no_headline_gives_no_targets_table():
    assert rt.target_lines({}, [{"policy": "minimal", "mode": "colocated", "goodput_rps": 1.0}]) == []
