"""``polyserve bench ...flags`` and ``polyserve bench plot FILE`` both work; the result file has the keys
others rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from polyserve.bench.cli import spread_goodput
from polyserve.bench.config import parse_goodput
from polyserve.cli import app as cli_app
from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app, launch_engine
from polyserve.serving.upstream import HttpxUpstream

from .helpers import two_tiers

REQUIRED = (
    "completed",
    "failed",
    "request_goodput",
    "p50_ttft_ms",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "tiers",
    "error_kinds",
    "duration",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "mean_tpot_ms",
    "mean_itl_ms",
    "p99_itl_ms",
    "p99_e2el_ms",
    "total_input_tokens",
    "total_output_tokens",
    "requests",
)


@pytest.fixture
def in_process_engine(monkeypatch: pytest.MonkeyPatch):
    """Route the CLI's HTTP client to an emulated engine in this process."""
    app = create_engine_app(EngineConfig(time_scale=20, served_model_name="m"))
    monkeypatch.setattr(
        "polyserve.bench.runner.default_client",
        lambda cfg: httpx.AsyncClient(transport=StreamingASGITransport(app)),
    )
    monkeypatch.setattr("polyserve.bench.runner.default_upstream", lambda cfg, http: HttpxUpstream(http))
    return app


def test_the_interface_others_rely_on_writes_one_json_with_the_required_keys(
    tmp_path, in_process_engine
) -> None:
    out = tmp_path / "results"
    args = [
        "bench",
        "--base-url",
        "http://engine",
        "--model",
        "m",
        "--dataset-name",
        "random",
        "--num-prompts",
        "12",
        "--request-rate",
        "100",
        "--tiers",
        two_tiers(tmp_path),
        "--save-result",
        "--result-dir",
        str(out),
        "--random-input-len",
        "8",
        "--random-output-len",
        "4",
        "--goodput",
        "ttft:500",
        "tpot:50",
    ]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    files = list(out.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("polyserve-bench-100qps-m-")
    doc = json.loads(files[0].read_text())
    for key in REQUIRED:
        assert key in doc, key
    assert doc["completed"] == 12 and doc["failed"] == 0
    assert set(doc["tiers"]) == {"fast", "slow"}
    for t in doc["tiers"].values():
        assert {"completed", "attainment", "p99_ttft_ms", "p99_tpot_ms"} <= set(t)
    assert doc["goodput_slo_ms"] == {"ttft": 500, "tpot": 50} and doc["request_goodput"] is not None
    assert "fast" in result.output and "request_goodput" in result.output  # the table and summary line


def test_plot_writes_three_pngs(tmp_path, in_process_engine) -> None:
    runner = CliRunner()
    r = runner.invoke(
        cli_app,
        [
            "bench",
            "--base-url",
            "http://engine",
            "--num-prompts",
            "30",
            "--request-rate",
            "300",
            "--random-input-len",
            "4",
            "--random-output-len",
            "3",
            "--save-result",
            "--result-dir",
            str(tmp_path),
            "--result-filename",
            "run.json",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["bench", "plot", str(tmp_path / "run.json"), "--out", str(tmp_path / "fig")])
    assert r.exit_code == 0, r.output
    pngs = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert pngs == ["run-attainment.png", "run-tpot-cdf.png", "run-ttft-cdf.png"]
    for p in (tmp_path / "fig").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_plot_of_a_file_that_is_not_a_result_exits_2(tmp_path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    r = CliRunner().invoke(cli_app, ["bench", "plot", str(bad)])
    assert r.exit_code == 2 and "requests" in r.output


def test_bench_without_flags_prints_help_listing_plot() -> None:
    r = CliRunner().invoke(cli_app, ["bench"])
    assert "--request-rate" in r.output and "plot" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset-name", "sonnet"], "--dataset-name must be one of"),
        (["--dataset-name", "sharegpt"], "needs --dataset-path"),
        (["--dataset-name", "trace"], "needs --dataset-path"),
        (["--backend", "tgi"], "--backend must be one of"),
        (["--backend", "openai-chat"], "--backend openai-chat sends to /v1/chat/completions"),
        (["--ramp-up-strategy", "linear", "--ramp-up-start-rps", "1"], "both --ramp-up-start-rps"),
        (["--ramp-up-strategy", "linear", "--ramp-up-start-rps", "1", "--ramp-up-end-rps", "5",
          "--request-rate", "3"], "do not give --request-rate"),
        (["--ramp-up-strategy", "linear", "--ramp-up-start-rps", "5", "--ramp-up-end-rps", "2"], "must be <="),
        (["--ramp-up-strategy", "cubic", "--ramp-up-start-rps", "1", "--ramp-up-end-rps", "2"], "linear, exp"),
        (["--ramp-up-end-rps", "2"], "need --ramp-up-strategy"),
        (["--metadata", "novalue"], "--metadata: expected KEY=VALUE"),
        (["--random-prefix-len", "-1"], "--random-prefix-len must be >= 0"),
        (["--num-warmups", "-1"], "--num-warmups must be >= 0"),
        (["--sharegpt-output-len", "5"], "applies to --dataset-name sharegpt"),
        (["--percentile-metrics", "ttft,foo"], "--percentile-metrics"),
        (["--goodput", "latency:5"], "unknown metric"),
        (["--tier-weights", "t20"], "--tier-weights"),
        (["--request-rate", "0"], "--request-rate must be > 0"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], message: str) -> None:
    r = CliRunner().invoke(cli_app, ["bench", "--model", "m", *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_goodput_accepts_vllm_spelling_and_repeated_flags() -> None:
    assert spread_goodput(["--goodput", "ttft:500", "tpot:50", "--seed", "1"]) == [
        "--goodput",
        "ttft:500",
        "--goodput",
        "tpot:50",
        "--seed",
        "1",
    ]
    assert spread_goodput(["--goodput", "ttft:1", "plot"]) == ["--goodput", "ttft:1", "plot"]
    assert parse_goodput(["ttft:500", "tpot:50,e2el:900"]) == {"ttft": 500, "tpot": 50, "e2el": 900}


def test_bench_over_real_sockets_against_an_engine_process(tmp_path: Path) -> None:
    with launch_engine(EngineConfig(time_scale=20)) as engine:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "polyserve",
                "bench",
                "--base-url",
                engine.url,
                "--num-prompts",
                "8",
                "--request-rate",
                "50",
                "--random-input-len",
                "6",
                "--random-output-len",
                "4",
                "--save-result",
                "--result-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["completed"] == 8 and doc["model_id"] == "llama-3.1-8b"
