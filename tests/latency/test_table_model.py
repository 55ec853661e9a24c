"""The table model: exact at profile points, linear between them, and loud about bad or foreign profiles."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from polyserve.core.errors import ConfigError, InputError
from polyserve.data import PROFILES
from polyserve.latency import RooflineLatencyModel, TableLatencyModel, get_deployment
from polyserve.latency.table import LAYER_OPS, default_profile, read_layer_profile

from .conftest import write_mlp_csv

A100_L3 = PROFILES / "a100" / "meta-llama-3-8b" / "mlp.csv"
H100_L2 = PROFILES / "h100" / "llama-2-7b" / "mlp.csv"
L3_SHAPE = (32, 8, 4096, 14336)
NOPS = len(LAYER_OPS)


@pytest.fixture
def a100_8b():
    return get_deployment("llama-3.1-8b", "a100", 1)


@pytest.fixture
def small_profile(tmp_path: Path) -> Path:
    # Per-op ms 0.01, 0.02, 0.05, 0.06 at 1, 10, 100, 200 tokens (tp 1), and a tp 2 row to ignore.
    rows = [(1, 1, 0.01), (1, 10, 0.02), (1, 100, 0.05), (1, 200, 0.06), (2, 1, 9.0)]
    return write_mlp_csv(tmp_path / "mlp.csv", rows, shape=L3_SHAPE)


def test_exact_at_points_linear_between_and_beyond(small_profile: Path, a100_8b) -> None:
    m = TableLatencyModel.from_csv(small_profile, a100_8b)
    per_model = {n: NOPS * ms * 1e-3 * 32 for n, ms in [(1, 0.01), (10, 0.02), (100, 0.05), (200, 0.06)]}
    for n, t in per_model.items():
        assert m.layers_time(n) == pytest.approx(t, rel=1e-12)
    assert m.layers_time(55) == pytest.approx((per_model[10] + per_model[100]) / 2, rel=1e-12)
    # beyond the last point: the last two points' slope
    slope = (per_model[200] - per_model[100]) / 100
    assert m.layers_time(500) == pytest.approx(per_model[200] + 300 * slope, rel=1e-12)
    assert m.layers_time(0) == 0.0


def test_iteration_adds_the_roofline_terms(small_profile: Path, a100_8b) -> None:
    m = TableLatencyModel.from_csv(small_profile, a100_8b)
    rf = RooflineLatencyModel(a100_8b, layer_overhead_s=0.0)
    for d, kv, p in [(1, 1200, 0), (30, 30 * 900, 70), (0, 0, 150)]:
        want = m.layers_time(d + p) + rf.time_except_layer_gemms(d, kv, p)
        assert m.iteration_time(d, kv, p) == pytest.approx(want, rel=1e-12)


def _raw_layer_ms(path: Path, tp: int) -> dict[int, float]:
    sums: dict[int, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["num_tensor_parallel_workers"]) == tp:
                s = sum(float(row[f"time_stats.{op}.median"]) for op in LAYER_OPS)
                sums.setdefault(int(row["num_tokens"]), []).append(s)
    return {n: sum(v) / len(v) for n, v in sorted(sums.items())}


@pytest.mark.parametrize("tp", [1, 4])
def test_shipped_profile_exact_and_interpolated(tp: int) -> None:
    dep = get_deployment("llama-3.1-8b", "a100", tp)
    raw = _raw_layer_ms(A100_L3, tp)
    xs = np.array(list(raw), dtype=float)
    ys = np.array(list(raw.values())) * 1e-3 * 32
    exact = TableLatencyModel.from_csv(A100_L3, dep, monotone=False)
    env = TableLatencyModel.from_csv(A100_L3, dep)
    upper = np.maximum.accumulate(ys)
    for i, n in enumerate(raw):
        assert exact.layers_time(n) == pytest.approx(ys[i], rel=1e-12)
        assert env.layers_time(n) == pytest.approx(upper[i], rel=1e-12)
    mids = (xs[:-1] + xs[1:]) / 2
    for n in mids[np.floor(mids) == mids][:50]:
        assert exact.layers_time(int(n)) == pytest.approx(float(np.interp(n, xs, ys)), rel=1e-12)


def test_profile_duplicates_are_averaged() -> None:
    prof = read_layer_profile(A100_L3, 1)
    raw = _raw_layer_ms(A100_L3, 1)
    assert prof.num_tokens == tuple(raw)
    assert prof.layer_ms[-1] == pytest.approx(raw[32768])
    assert len(prof.num_tokens) == 451


def test_foreign_profile_is_refused_unless_allowed(h100_8b) -> None:
    with pytest.raises(
        ConfigError, match=r"measured on another model: n_kv_head=32 \(profile\) vs 8 \(llama-3.1-8b\)"
    ):
        TableLatencyModel.from_csv(H100_L2, h100_8b)
    m = TableLatencyModel.from_csv(H100_L2, h100_8b, allow_mismatch=True)
    assert m.describe()["shape_mismatch"]
    assert m.iteration_time(8, 8000, 0) > 0


def test_tp_other_than_the_deployment_is_refused(a100_8b) -> None:
    with pytest.raises(ConfigError, match="profile rows for tp=2 cannot model a tp=1 deployment"):
        TableLatencyModel.from_csv(A100_L3, a100_8b, tp=2)


def test_default_profile_matches_gpu_and_shape(a100_8b, h100_8b) -> None:
    assert default_profile(a100_8b) == A100_L3
    with pytest.raises(ConfigError, match="shipped h100 profiles \\(llama-2-7b\\) were measured on models"):
        default_profile(h100_8b)
    assert default_profile(h100_8b, allow_mismatch=True) == H100_L2
    with pytest.raises(ConfigError, match="no shipped profile for h200"):
        default_profile(get_deployment("llama-3.1-8b", "h200", 1))


def _header_and_row(tmp_path: Path) -> tuple[list[str], list[str]]:
    path = write_mlp_csv(tmp_path / "ok.csv", [(1, 1, 0.01)], shape=L3_SHAPE)
    header, row = (line.split(",") for line in path.read_text().splitlines())
    return header, row


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("drop", "time_stats.mlp_act.median"),
            "1: time_stats.mlp_act.median: missing column; expected Vidur's",
        ),
        (("set", "time_stats.add.median", "abc"), "3: time_stats.add.median: not a number: 'abc'"),
        (
            ("set", "time_stats.add.median", "-0.5"),
            "3: time_stats.add.median: must be a time >= 0 ms, got '-0.5'",
        ),
        (("set", "time_stats.add.median", "nan"), "3: time_stats.add.median: must be finite, got 'nan'"),
        (("set", "num_tokens", "1.5"), "3: num_tokens: must be an integer >= 1, got '1.5'"),
        (("set", "num_tensor_parallel_workers", ""), "3: num_tensor_parallel_workers: not a number: ''"),
        (
            ("set", "n_embd", "4096", "5120"),
            "3: n_embd: 5120 differs from 4096 on line 2: one profile must describe",
        ),
        (("short",), "3: row: has 57 fields, the header has 58"),
    ],
)
def test_bad_csv_says_file_line_field(tmp_path: Path, a100_8b, edit: tuple[str, ...], expected: str) -> None:
    header, row = _header_and_row(tmp_path)
    rows = [list(row), list(row)]
    if edit[0] == "drop":
        i = header.index(edit[1])
        header = header[:i] + header[i + 1 :]
        rows = [r[:i] + r[i + 1 :] for r in rows]
    elif edit[0] == "set":
        i = header.index(edit[1])
        rows[1][i] = edit[-1]
        rows[0][i] = edit[2] if len(edit) == 4 else rows[0][i]
    else:
        rows[1] = rows[1][:-1]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    with pytest.raises(InputError) as e:
        TableLatencyModel.from_csv(path, a100_8b)
    assert str(e.value).startswith(f"{path}:{expected}")


def test_no_rows_for_tp(small_profile: Path) -> None:
    dep = get_deployment("llama-3.1-8b", "a100", 4)
    with pytest.raises(InputError) as e:
        TableLatencyModel.from_csv(small_profile, dep)
    assert (
        str(e.value)
        == f"{small_profile}: num_tensor_parallel_workers: no rows for tp=4; the profile has tp 1, 2"
    )


def test_missing_and_empty_files(tmp_path: Path, a100_8b) -> None:
    with pytest.raises(InputError, match="file: cannot read profile"):
        TableLatencyModel.from_csv(tmp_path / "nope.csv", a100_8b)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError) as e:
        TableLatencyModel.from_csv(tmp_path / "empty.csv", a100_8b)
    assert str(e.value) == f"{tmp_path / 'empty.csv'}:1: header: empty file; expected a Vidur mlp.csv header"
