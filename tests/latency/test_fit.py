"""The fitter: recovers known coefficients from noisy data, never goes negative, names bad input exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from polyserve.core.errors import ConfigError, InputError
from polyserve.latency import (
    LinearLatencyModel,
    RooflineLatencyModel,
    blis_linear_model,
    build_latency_model,
    fit_linear,
    fit_report,
    get_deployment,
    load_linear_coefficients,
    save_linear_coefficients,
)
from polyserve.latency.fit import nnls

HEADER = "num_prefill_tokens,num_decode_tokens,kv_tokens,iteration_time_ms"
TRUE_MS = (6.5, 0.020, 0.300, 0.0005)  # b0 ms, b1 ms/prefill token, b2 ms/decode seq, b3 ms/kv token


def _synthetic(path: Path, *, n: int = 600, noise_ms: float = 0.3, kv: bool = True, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    prefill = rng.integers(0, 4096, n) * (rng.random(n) < 0.4)
    decode = rng.integers(1, 257, n)
    kv_tokens = decode * rng.integers(50, 4000, n)
    b0, b1, b2, b3 = TRUE_MS
    t = b0 + b1 * prefill + b2 * decode + (b3 * kv_tokens if kv else 0) + rng.normal(0, noise_ms, n)
    cols = HEADER if kv else "num_prefill_tokens,num_decode_tokens,iteration_time_ms"
    rows = [
        f"{p},{d},{k},{x:.5f}" if kv else f"{p},{d},{x:.5f}"
        for p, d, k, x in zip(prefill, decode, kv_tokens, t, strict=True)
    ]
    path.write_text(cols + "\n" + "\n".join(rows) + "\n")
    return path


def test_recovers_known_coefficients_from_noisy_data(tmp_path: Path, h100_8b) -> None:
    m = fit_linear(_synthetic(tmp_path / "it.csv"), h100_8b)
    assert m.b0 * 1e3 == pytest.approx(TRUE_MS[0], abs=0.1)
    assert m.b1 * 1e3 == pytest.approx(TRUE_MS[1], rel=0.01)
    assert m.b2 * 1e3 == pytest.approx(TRUE_MS[2], rel=0.02)
    assert m.b3 * 1e3 == pytest.approx(TRUE_MS[3], rel=0.02)
    rep = fit_report(m, tmp_path / "it.csv")
    assert rep.n_rows == 600
    assert rep.r2 > 0.999
    assert rep.rmse_ms == pytest.approx(0.3, rel=0.15)
    assert 0.3 < rep.max_abs_error_ms < 2.0


def test_without_kv_column_b3_is_zero(tmp_path: Path, h100_8b) -> None:
    m = fit_linear(_synthetic(tmp_path / "it.csv", kv=False), h100_8b)
    assert m.b3 == 0.0 and m.kv_independent
    assert m.b2 * 1e3 == pytest.approx(TRUE_MS[2], rel=0.02)
    assert "no kv_tokens" in m.source


def test_coefficients_never_negative(tmp_path: Path, h100_8b) -> None:
    # True decode cost 0; noise and a negative true slope would push an unconstrained fit below zero.
    rng = np.random.default_rng(3)
    p, d = rng.integers(0, 2000, 200), rng.integers(1, 64, 200)
    t = np.round(5.0 + 0.02 * p - 0.01 * d + rng.normal(0, 0.05, 200), 4)
    path = tmp_path / "neg.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens,iteration_time_ms\n")
    with path.open("a") as f:
        f.writelines(f"{a},{b},{c:.4f}\n" for a, b, c in zip(p, d, t, strict=True))
    m = fit_linear(path, h100_8b)
    assert m.b2 == 0.0
    assert m.b1 * 1e3 == pytest.approx(0.02, rel=0.02)
    a = np.column_stack([np.ones(200), p, d]).astype(float)
    free = np.linalg.lstsq(a, t, rcond=None)[0]
    assert free[2] < 0  # the constraint was active
    refit = np.linalg.lstsq(a[:, :2], t, rcond=None)[0]  # NNLS optimum = refit without the clipped column
    assert (m.b0 * 1e3, m.b1 * 1e3) == pytest.approx(tuple(refit), rel=1e-9)


def test_nnls_matches_brute_force_over_active_sets() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        a = rng.normal(size=(30, 4))
        b = rng.normal(size=30)
        x = nnls(a, b)
        assert (x >= 0).all()
        best = math.inf
        for mask in range(16):
            cols = [j for j in range(4) if mask >> j & 1]
            if not cols:
                best = min(best, float(b @ b))
                continue
            z = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            if (z >= 0).all():
                best = min(best, float(np.sum((a[:, cols] @ z - b) ** 2)))
        assert float(np.sum((a @ x - b) ** 2)) == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "num_decode_tokens,iteration_time_ms\n1,5\n",
            ":1: num_prefill_tokens: missing column; the header needs "
            "num_prefill_tokens,num_decode_tokens,iteration_time_ms (optionally kv_tokens)",
        ),
        (HEADER + "\n0,4,400,7.5\n0,x,400,7.5\n", ":3: num_decode_tokens: must be an integer >= 0, got 'x'"),
        (HEADER + "\n-1,4,400,7.5\n", ":2: num_prefill_tokens: must be an integer >= 0, got '-1'"),
        (HEADER + "\n0,4,1.5,7.5\n", ":2: kv_tokens: must be an integer >= 0, got '1.5'"),
        (HEADER + "\n0,4,400,0\n", ":2: iteration_time_ms: must be a number > 0, got '0'"),
        (HEADER + "\n0,4,400,inf\n", ":2: iteration_time_ms: must be a number > 0, got 'inf'"),
        (HEADER + "\n0,4,400,\n", ":2: iteration_time_ms: must be a number > 0, got ''"),
        (
            HEADER + "\n0,0,0,7.5\n",
            ":2: num_decode_tokens: an iteration without prefill or decode tokens is idle; drop the row",
        ),
        (HEADER + "\n0,4,400\n", ":2: row: has 3 fields, the header has 4"),
        (HEADER + "\n", ": rows: no measured iterations; the file has only a header"),
        (
            "",
            ":1: header: empty file; expected a header with num_prefill_tokens,num_decode_tokens,"
            "iteration_time_ms",
        ),
        (
            HEADER + "\n0,1,10,7\n0,2,30,8\n0,3,10,9\n",
            ": num_prefill_tokens: is 0 on every row, so its cost cannot "
            "be told apart from the fixed cost; measure iterations that vary it",
        ),
        (
            HEADER + "\n0,1,100,7\n10,2,200,8\n20,3,300,9\n5,4,400,9\n",
            ": kv_tokens: is a linear combination of the other columns (num_prefill_tokens, "
            "num_decode_tokens), so the coefficients cannot be identified; vary it independently or drop the "
            "column",
        ),
    ],
)
def test_bad_csv_exact_messages(tmp_path: Path, h100_8b, text: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        fit_linear(path, h100_8b)
    assert str(e.value) == f"{path}{expected}"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path: Path, h100_8b, suffix: str) -> None:
    m = fit_linear(_synthetic(tmp_path / "it.csv"), h100_8b)
    out = tmp_path / f"coeffs{suffix}"
    save_linear_coefficients(m, out, report=fit_report(m, tmp_path / "it.csv"))
    if suffix == ".json":
        assert json.loads(out.read_text())["b0_us"] == pytest.approx(m.b0 * 1e6)
    back = load_linear_coefficients(out, h100_8b)
    for k in ("b0", "b1", "b2", "b3"):
        assert getattr(back, k) == pytest.approx(getattr(m, k), rel=1e-12)
    via_registry = build_latency_model("linear", h100_8b, coefficients_path=str(out))
    assert isinstance(via_registry, LinearLatencyModel)
    assert via_registry.iteration_time(10, 5000, 100) == pytest.approx(m.iteration_time(10, 5000, 100))


def test_blis_coefficients_survive_a_round_trip(tmp_path: Path, h100_8b) -> None:
    save_linear_coefficients(blis_linear_model(h100_8b), tmp_path / "blis.yaml")
    back = load_linear_coefficients(tmp_path / "blis.yaml", h100_8b)
    assert back.b0 == pytest.approx(6.472008e-3)


def test_load_refuses_another_deployment(tmp_path: Path, h100_8b) -> None:
    save_linear_coefficients(blis_linear_model(h100_8b), tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="fitted for gpu=h100, but the deployment has gpu=a100"):
        load_linear_coefficients(tmp_path / "c.yaml", get_deployment("llama-3.1-8b", "a100", 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "b0_us: 6000\nb1_us_per_prefill_token: 20\n",
            ": b2_us_per_decode_token: missing; a coefficients file "
            "needs b0_us, b1_us_per_prefill_token and b2_us_per_decode_token",
        ),
        (
            "b0_us: 6000\nb1_us_per_prefill_token: -2\nb2_us_per_decode_token: 3\n",
            ":2: b1_us_per_prefill_token: must be a number >= 0 (microseconds), got -2",
        ),
        (
            "b0_us: fast\nb1_us_per_prefill_token: 2\nb2_us_per_decode_token: 3\n",
            ":1: b0_us: must be a number >= 0 (microseconds), got 'fast'",
        ),
        ("- 1\n- 2\n", ": document: expected a mapping of coefficient names to values"),
        ("b0_us: [1,\n", ":2: yaml: not valid YAML or JSON"),
        ("format: other/2\nb0_us: 1\n", ":1: format: expected 'polyserve-linear-latency/1', got 'other/2'"),
    ],
)
def test_load_errors(tmp_path: Path, h100_8b, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_linear_coefficients(path, h100_8b)
    assert str(e.value) == f"{path}{expected}"


def test_fit_report_scores_any_model(tmp_path: Path, h100_8b) -> None:
    path = _synthetic(tmp_path / "it.csv")
    rep = fit_report(RooflineLatencyModel(h100_8b), path)
    assert rep.model == "roofline" and rep.n_rows == 600
    assert math.isfinite(rep.rmse_ms) and rep.max_abs_error_ms >= rep.rmse_ms


def test_profile_fit_cli_writes_a_file_that_simulate_loads(tmp_path: Path, h100_8b) -> None:
    """`polyserve profile fit CSV --out F` writes coefficients that --latency-coefficients reads back."""
    from typer.testing import CliRunner

    from polyserve.cli import app

    out = tmp_path / "coef.yaml"
    r = CliRunner().invoke(app, ["profile", "fit", str(_synthetic(tmp_path / "it.csv")), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = load_linear_coefficients(out, h100_8b)
    assert m.b2 * 1e3 == pytest.approx(TRUE_MS[2], rel=0.02)
    sim = CliRunner().invoke(app, ["simulate", "--num-requests", "20", "--rate", "5", "--instances", "1", "--quiet",
                                   "--latency-model", "linear", "--latency-coefficients", str(out),
                                   "--out", str(tmp_path / "run")])
    assert sim.exit_code == 0, sim.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["latency_model"]["b2_us_per_decode_token"] == pytest.approx(m.b2 * 1e6)
