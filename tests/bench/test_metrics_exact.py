"""The bench computes TTFT, ITL, TPOT, E2E, DSLO attainment and goodput exactly, for a known schedule.

A scripted server answers each tier with fixed chunk times on a hand-advanced clock; requests go one at a
time (rate inf, max concurrency 1), so every figure is known in closed form.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from polyserve.bench.api import benchmark
from polyserve.bench.client import Outcome
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import BenchRequest
from polyserve.bench.metrics import dslo_check, request_record

from .fakes import ManualClock, Script, ScriptedTransport
from .helpers import run, two_tiers

FAST = Script(token_times=[0.08, 0.09, 0.10, 0.11], done_at=0.115)  # on time: 20 ms slack on every token
SLOW = Script(token_times=[0.30, 0.35, 0.40, 0.60], done_at=0.60)  # 4th token 50 ms late
N = 10


def scripted_run(tmp_path, scripts=None, **cfg):
    clock = ManualClock()
    transport = ScriptedTransport(clock, scripts or {"fast": FAST, "slow": SLOW})
    config = BenchConfig(
        base_url="http://fake",
        num_prompts=N,
        random_input_len=5,
        random_output_len=4,
        max_concurrency=1,
        tiers_path=two_tiers(tmp_path),
        **cfg,
    )

    async def main():
        async with httpx.AsyncClient(transport=transport) as c:
            return await benchmark(config, client=c, clock=clock)

    return run(main()), transport


def test_per_request_figures_follow_the_schedule(tmp_path) -> None:
    doc, _ = scripted_run(tmp_path)
    reqs = doc["requests"]
    assert len(reqs) == N and all(r["ok"] for r in reqs)
    for r in reqs:
        if r["tier"] == "fast":
            assert r["ttft_ms"] == pytest.approx(80) and r["e2el_ms"] == pytest.approx(115)
            assert r["itl_ms"] == pytest.approx([10, 10, 10])
            assert r["tpot_ms"] == pytest.approx(35 / 3, abs=1e-3)
            assert r["attained"] and r["worst_slack_ms"] == pytest.approx(20)
        else:
            assert r["ttft_ms"] == pytest.approx(300) and r["e2el_ms"] == pytest.approx(600)
            assert r["itl_ms"] == pytest.approx([50, 50, 200])
            assert r["tpot_ms"] == pytest.approx(100)
            assert not r["attained"] and r["worst_slack_ms"] == pytest.approx(-50)
        assert r["output_tokens"] == 4 and r["input_tokens"] == 5


def test_sequential_send_times_and_duration_add_up(tmp_path) -> None:
    doc, _ = scripted_run(tmp_path)
    spans = [0.115 if r["tier"] == "fast" else 0.6 for r in doc["requests"]]
    assert [r["send_s"] for r in doc["requests"]] == pytest.approx(
        np.concatenate([[0], np.cumsum(spans)[:-1]])
    )
    assert doc["duration"] == pytest.approx(sum(spans))
    assert all(r["scheduled_s"] == 0 for r in doc["requests"])  # rate inf: all due at once


def test_attainment_goodput_and_percentiles_per_tier_and_overall(tmp_path) -> None:
    doc, _ = scripted_run(tmp_path, goodput_slo_ms={"ttft": 100, "tpot": 20})
    n_fast = sum(r["tier"] == "fast" for r in doc["requests"])
    n_slow = N - n_fast
    assert 0 < n_fast < N  # the seeded mix draws both tiers
    duration = n_fast * 0.115 + n_slow * 0.6
    assert doc["completed"] == N and doc["failed"] == 0 and doc["error_kinds"] == {}
    assert doc["attained"] == n_fast
    assert doc["attainment"] == pytest.approx(n_fast / N)
    assert doc["dslo_request_goodput"] == pytest.approx(n_fast / duration)
    assert doc["request_goodput"] == pytest.approx(n_fast / duration)  # same requests pass vLLM's check
    assert doc["request_throughput"] == pytest.approx(N / duration)
    assert doc["total_output_tokens"] == 4 * N and doc["total_input_tokens"] == 5 * N
    assert doc["output_throughput"] == pytest.approx(4 * N / duration)
    ttfts = [80.0] * n_fast + [300.0] * n_slow
    assert doc["p50_ttft_ms"] == pytest.approx(np.percentile(ttfts, 50))
    assert doc["median_ttft_ms"] == doc["p50_ttft_ms"]
    assert doc["p99_ttft_ms"] == pytest.approx(np.percentile(ttfts, 99))
    assert doc["mean_ttft_ms"] == pytest.approx(np.mean(ttfts))
    itls = [10.0] * 3 * n_fast + [50.0, 50.0, 200.0] * n_slow
    assert doc["p99_itl_ms"] == pytest.approx(np.percentile(itls, 99))
    fast, slow = doc["tiers"]["fast"], doc["tiers"]["slow"]
    assert (fast["completed"], fast["attained"], fast["attainment"]) == (n_fast, n_fast, 1.0)
    assert (slow["completed"], slow["attained"], slow["attainment"]) == (n_slow, 0, 0.0)
    assert fast["p99_ttft_ms"] == pytest.approx(80) and fast["p99_tpot_ms"] == pytest.approx(35 / 3, abs=1e-3)
    assert slow["p99_ttft_ms"] == pytest.approx(300) and slow["p99_tpot_ms"] == pytest.approx(100)
    assert fast["dslo_request_goodput"] == pytest.approx(n_fast / duration) and slow["dslo_request_goodput"] == 0
    assert (fast["tpot_slo_ms"], slow["tpot_slo_ms"]) == (10, 50)


def test_usage_overrides_the_chunk_count_for_tokens_and_tpot(tmp_path) -> None:
    usage = Script(token_times=[0.08, 0.09, 0.10, 0.11], done_at=0.13, usage_tokens=6)
    doc, _ = scripted_run(tmp_path, {"fast": usage, "slow": usage})
    r = doc["requests"][0]
    assert r["output_tokens"] == 6
    assert r["tpot_ms"] == pytest.approx((130 - 80) / 5)
    assert r["input_tokens"] == 7  # the server's prompt_tokens


def test_requested_percentiles_are_added_to_50_and_99(tmp_path) -> None:
    doc, _ = scripted_run(tmp_path, metric_percentiles=(90.0, 99.9))
    for key in ("p50_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "p99.9_ttft_ms", "p90_e2el_ms", "p99.9_itl_ms"):
        assert key in doc and doc[key] is not None
    assert doc["metric_percentiles"] == "50,90,99,99.9"


def test_every_request_carries_its_tier_slo_headers_and_exact_max_tokens(tmp_path) -> None:
    _, transport = scripted_run(tmp_path)
    assert len(transport.requests) == N
    for headers, body in transport.requests:
        tier = headers["x-polyserve-tier"]
        want = {"fast": ("100", "10"), "slow": ("400", "50")}[tier]
        assert (headers["x-slo-ttft-ms"], headers["x-slo-tpot-ms"]) == want
        assert body["max_tokens"] == 4 and body["ignore_eos"] is True and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert len(body["prompt"].split()) == 5 and body["model"] == "scripted"


def test_chat_endpoint_reads_delta_content_and_sends_messages(tmp_path) -> None:
    chat = Script(token_times=[0.08, 0.09], done_at=0.1, chat=True)
    doc, transport = scripted_run(tmp_path, {"fast": chat, "slow": chat}, endpoint="/v1/chat/completions")
    assert doc["backend"] == "openai-chat" and doc["completed"] == N
    assert all(r["output_tokens"] == 2 for r in doc["requests"])
    body = transport.requests[0][1]
    assert body["messages"][0]["role"] == "user" and body["max_completion_tokens"] == 4


# ---- the DSLO check itself ------------------------------------------------------------------------------
def test_dslo_slack_is_cumulative_early_tokens_bank_time() -> None:
    # TTFT 20 ms against 100 ms banks 80 ms: a 50 ms gap against a 10 ms TPOT is still on time
    assert dslo_check([0.02, 0.07], 0.1, 0.01) == (True, pytest.approx(0.04))
    assert dslo_check([0.02, 0.13], 0.1, 0.01)[0] is False
    assert dslo_check([0.1, 0.11, 0.12], 0.1, 0.01)[0] is True  # exactly on the deadline counts as met
    assert dslo_check([], 0.1, 0.01) == (False, None)


def test_a_failed_request_is_never_attained_even_if_on_time() -> None:
    req = BenchRequest(0, 0.0, "a b", 2, 4, "t", 1000.0, 100.0)
    o = Outcome(send=1.0, chunk_times=[1.01, 1.02]).fail("stream_broken", "cut")
    rec = request_record(req, o, start=1.0)
    assert not rec.ok and not rec.attained and rec.error == "stream_broken"
    assert rec.ttft_ms == pytest.approx(10) and rec.tpot_ms is None and rec.e2el_ms is None
    assert rec.output_tokens == 2
