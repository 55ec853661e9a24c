"""``benchmarks/sim_vs_gateway.py --sim-only --policy-option``: the simulator's face alone, options reaching it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from polyserve.core.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_vs_gateway.py"
spec = importlib.util.spec_from_file_location("sim_vs_gateway", SCRIPT)
svg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(svg)  # type: ignore[union-attr]

SMALL = ["--engines", "2", "--rate", "6", "--duration", "8", "--warmup", "2", "--policies", "polyserve"]


def run(monkeypatch, capsys, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["sim_vs_gateway.py", *argv])
    svg.main()
    return capsys.readouterr().out


def test_sim_only_prints_the_simulator_row_and_starts_no_gateway(monkeypatch, capsys, tmp_path):
    def no_gateway(*a, **k):
        raise AssertionError("--sim-only must not start a gateway")

    monkeypatch.setattr(svg, "through_gateway", no_gateway)
    out = run(monkeypatch, capsys, *SMALL, "--sim-only", "--out", str(tmp_path / "o.json"))
    assert "polyserve   simulator" in out and "gateway" not in out.split("\n", 2)[2]
    doc = json.loads((tmp_path / "o.json").read_text())
    row = doc["rows"][0]
    assert row["gateway"] is None and row["diff_points"] is None and 0.0 <= row["simulator"]["overall"] <= 1.0


def test_a_policy_option_reaches_the_simulated_router(monkeypatch, capsys):
    """An option the router does not have is refused by name: the option got to it."""
    monkeypatch.setattr(svg, "through_gateway", lambda *a, **k: pytest.fail("no gateway with --sim-only"))
    with pytest.raises(ConfigError, match="no_such_option"):
        run(monkeypatch, capsys, *SMALL, "--sim-only", "--policy-option", "no_such_option=1")
    with pytest.raises(ConfigError, match="mixed_slack_share"):
        run(monkeypatch, capsys, *SMALL, "--sim-only", "--policy-option", "mixed_slack_share=0")
    assert "simulator" in run(monkeypatch, capsys, *SMALL, "--sim-only", "--policy-option", "mixed_slack_share=1.0")
