"""``polyserve bench`` takes ``vllm bench serve``'s flags with vLLM's meanings and writes vLLM's result keys:
host/port, backend, served model name, tokenizer (recorded, never loaded), ignore_eos, the random prefix,
sharegpt from a local file, ramp-ups, warm-ups, metadata, --save-detailed's per-request lists, vLLM's
``errors`` list, ``request_goodput`` only with ``--goodput``, and the peaks (tokens per second, concurrency)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from polyserve.bench.api import benchmark
from polyserve.bench.client import payload
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import build_requests, ramp_up_times, random_bounds, sharegpt_samples
from polyserve.bench.metrics import RequestRecord
from polyserve.bench.report import peaks
from polyserve.bench.result import default_filename
from polyserve.cli import app as cli_app
from polyserve.core.errors import InputError
from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app
from polyserve.serving.upstream import HttpxUpstream

from .helpers import run

VLLM_LISTS = ("input_lens", "output_lens", "ttfts", "itls", "start_times", "generated_texts", "errors")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch):
    """The CLI's HTTP client goes to an emulated engine (served as ``m``) in this process."""
    app = create_engine_app(EngineConfig(time_scale=50, served_model_name="m"))
    monkeypatch.setattr("polyserve.bench.runner.default_client",
                        lambda cfg: httpx.AsyncClient(transport=StreamingASGITransport(app)))
    monkeypatch.setattr("polyserve.bench.runner.default_upstream", lambda cfg, http: HttpxUpstream(http))
    return app


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    r = CliRunner().invoke(cli_app, ["bench", "--num-prompts", "6", "--random-input-len", "5",
                                     "--random-output-len", "4", "--save-result", "--result-dir", str(tmp_path),
                                     "--result-filename", "r.json", "--disable-tqdm", *args])
    assert r.exit_code == 0, r.output
    return json.loads((tmp_path / "r.json").read_text()), r.output


def test_vllm_flags_are_accepted_and_mean_what_they_mean_in_vllm(tmp_path, engine) -> None:
    doc, out = _bench(tmp_path, "--host", "10.1.2.3", "--port", "9001", "--backend", "vllm", "--model",
                      "meta-llama/Llama-3.1-8B", "--served-model-name", "m", "--tokenizer", "meta-llama/tok",
                      "--ignore-eos", "--num-warmups", "3", "--metadata", "version=0.3.3", "tp=1",
                      "--request-rate", "200")
    assert doc["base_url"] == "http://10.1.2.3:9001"  # --host/--port without --base-url
    assert doc["backend"] == doc["endpoint_type"] == "vllm"
    assert doc["model_id"] == "meta-llama/Llama-3.1-8B" and doc["model_name"] == "m"  # "m" was sent: it served
    assert doc["completed"] == 6 and doc["tokenizer_id"] == "meta-llama/tok" and "not loaded" in out
    assert doc["version"] == "0.3.3" and doc["tp"] == "1"  # --metadata: top-level keys
    assert engine.state.engine.requests_received == 6 + 3  # the warm-ups went out, and are not in the result
    assert len(doc["requests"]) == 6 and doc["num_warmups"] == 3
    assert doc["request_goodput"] is None and "goodput_slo_ms" not in doc  # only with --goodput
    assert not any(k in doc for k in VLLM_LISTS)  # only with --save-detailed, as vLLM
    assert len(doc["latencies"]) == 6 and all(x > 0 for x in doc["latencies"])
    assert doc["max_output_tokens_per_s"] >= 1 and 1 <= doc["max_concurrent_requests"] <= 6
    for t in doc["tiers"].values():
        assert {"max_output_tokens_per_s", "max_concurrent_requests", "dslo_request_goodput"} <= set(t)


def test_save_detailed_writes_vllms_per_request_lists(tmp_path, engine) -> None:
    doc, _ = _bench(tmp_path, "--model", "m", "--save-detailed", "--goodput", "ttft:5000", "--request-rate", "100")
    assert all(len(doc[k]) == 6 for k in VLLM_LISTS)
    recs = doc["requests"]
    assert doc["input_lens"] == [r["input_tokens"] for r in recs] == [5] * 6
    assert doc["output_lens"] == [4] * 6 and doc["errors"] == [""] * 6
    assert doc["generated_texts"] == ["the quick brown fox"] * 6
    for r, ttft, itl in zip(recs, doc["ttfts"], doc["itls"], strict=True):
        assert ttft == pytest.approx(r["ttft_ms"] / 1e3) and len(itl) == 3
        assert itl == pytest.approx([g / 1e3 for g in r["itl_ms"]])
    assert doc["start_times"] == sorted(doc["start_times"])  # the client's clock at each send
    assert doc["request_goodput"] == pytest.approx(6 / doc["duration"])  # --goodput given: vLLM's figure


def test_vllm_errors_list_names_each_failed_request() -> None:
    app = create_engine_app(EngineConfig(time_scale=50, fail_after=2))
    cfg = BenchConfig(base_url="http://e", random_input_len=4, random_output_len=3, num_prompts=5,
                      max_concurrency=1, save_detailed=True)

    async def main():
        async with httpx.AsyncClient(transport=StreamingASGITransport(app)) as c:
            return await benchmark(cfg, client=c)

    doc = run(main())
    assert doc["errors"][:2] == ["", ""] and all(e.startswith("http_500: ") for e in doc["errors"][2:])
    assert doc["output_lens"] == [3, 3, 0, 0, 0] and doc["ttfts"][2:] == [0.0] * 3 and doc["itls"][2:] == [[]] * 3
    assert doc["generated_texts"][2:] == [""] * 3 and doc["error_kinds"] == {"http_500": 3}


def test_backend_openai_chat_goes_to_the_chat_endpoint(tmp_path, engine) -> None:
    doc, _ = _bench(tmp_path, "--model", "m", "--backend", "openai-chat", "--endpoint", "/v1/chat/completions")
    assert doc["completed"] == 6 and doc["backend"] == "openai-chat"


def test_ignore_eos_is_sent_for_random_and_trace_always_and_for_sharegpt_when_asked(tmp_path) -> None:
    share = _sharegpt_file(tmp_path)
    req = build_requests(BenchConfig(num_prompts=1, random_input_len=3, random_output_len=2))[0][0]
    assert payload(BenchConfig(), "m", req)["ignore_eos"] is True
    plain = BenchConfig(dataset_name="sharegpt", dataset_path=share)
    assert "ignore_eos" not in payload(plain, "m", req)
    asked = BenchConfig(dataset_name="sharegpt", dataset_path=share, ignore_eos=True)
    assert payload(asked, "m", req)["ignore_eos"] is True


def test_random_lengths_follow_vllms_bounds_after_a_shared_prefix() -> None:
    assert random_bounds(100, 0.25) == (75, 125) and random_bounds(10, 0.33) == (6, 14)
    assert random_bounds(3, 0.9) == (1, 6)
    cfg = BenchConfig(num_prompts=200, random_input_len=10, random_output_len=8, random_range_ratio=0.33,
                      random_prefix_len=7, seed=3)
    reqs, wl = build_requests(cfg)
    prefix = reqs[0].prompt.split()[:7]
    assert all(r.prompt.split()[:7] == prefix for r in reqs)  # the same prefix before every prompt
    assert all(len(r.prompt.split()) == r.input_tokens for r in reqs)
    body = [r.input_tokens - 7 for r in reqs]
    assert min(body) == 6 and max(body) == 14  # [floor(10*0.67), ceil(10*1.33)], both ends drawn
    assert {r.output_tokens for r in reqs} <= set(range(5, 12))
    # the TTFT SLO counts the prefix: it grows with the whole prompt
    tiers = wl.tiers
    assert all(r.ttft_slo_ms == pytest.approx(tiers[tiers.names.index(r.tier)].ttft_slo_ms(r.input_tokens))
               for r in reqs)


def _sharegpt_file(tmp_path: Path) -> str:
    def conv(p: int, o: int) -> dict:
        return {"id": f"{p}-{o}", "conversations": [{"from": "human", "value": " ".join(["q"] * p)},
                                                    {"from": "gpt", "value": " ".join(["a"] * o)}]}

    entries = [conv(10, 20), conv(30, 5), conv(3, 50), conv(50, 3), conv(1100, 10), conv(1000, 1100),
               {"conversations": [{"from": "human", "value": "only one turn here"}]}, {"no": "conversations"}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_sharegpt_samples_as_vllm_filters_them_counted_in_words(tmp_path) -> None:
    path = _sharegpt_file(tmp_path)
    got = sharegpt_samples(path, 10, seed=0, oversample=False)
    # kept: prompt 4..1024 words, answer >= 4, together <= 2048; one-turn and turn-less entries skipped
    assert sorted((s.input_tokens, s.output_tokens) for s in got) == [(10, 20), (30, 5)]
    over = sharegpt_samples(path, 7, seed=0)
    assert len(over) == 7 and {(s.input_tokens, s.output_tokens) for s in over} == {(10, 20), (30, 5)}
    fixed = sharegpt_samples(path, 10, seed=0, output_len=2, oversample=False)
    assert sorted((s.input_tokens, s.output_tokens) for s in fixed) == [(10, 2), (30, 2), (50, 2), (1000, 2)]
    assert [s.prompt for s in sharegpt_samples(path, 5, seed=4)] == [s.prompt for s in
                                                                     sharegpt_samples(path, 5, seed=4)]


def test_sharegpt_through_the_cli_sends_the_conversations_prompts(tmp_path, engine) -> None:
    doc, _ = _bench(tmp_path, "--model", "m", "--dataset-name", "sharegpt", "--dataset-path",
                    _sharegpt_file(tmp_path), "--sharegpt-output-len", "3", "--save-detailed")
    assert doc["completed"] == 6 and doc["dataset_name"] == "sharegpt"
    assert set(doc["input_lens"]) <= {10, 30, 50, 1000} and doc["output_lens"] == [3] * 6
    assert doc["workload"]["lengths"]["source"] == "sharegpt"


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not a JSON file"), ('{"a": 1}', "JSON list"),
    ('[{"conversations": [{"value": 5}, {"value": "x"}]}]', "entry 0"),
    ('[{"conversations": [{"value": "a"}, {"value": "b"}]}]', "no usable conversation"),
])
def test_a_bad_sharegpt_file_is_an_input_error_naming_the_file(tmp_path, content: str, message: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as e:
        sharegpt_samples(str(p), 3, seed=0)
    assert str(p) in str(e.value)
    r = CliRunner().invoke(cli_app, ["bench", "--model", "m", "--dataset-name", "sharegpt", "--dataset-path", str(p)])
    assert r.exit_code == 2 and str(p) in r.output.replace("\n", "")


def test_a_ramp_up_schedules_each_request_at_its_rate() -> None:
    cfg = BenchConfig(num_prompts=2000, ramp_up_strategy="linear", ramp_up_start_rps=2, ramp_up_end_rps=20)
    at, rates = ramp_up_times(cfg, 2000, seed=0)
    assert rates[0] == 2 and rates[-1] == 20 and np.allclose(np.diff(rates), 18 / 1999)
    gaps = np.diff(at)
    assert at[0] == 0 and np.all(gaps >= 0)
    # each gap is drawn at its own request's rate: mean gap ~ mean of 1/rate
    assert np.mean(gaps) == pytest.approx(np.mean(1 / rates[1:]), rel=0.08)
    assert np.mean(gaps[:200]) > 4 * np.mean(gaps[-200:])
    exp = BenchConfig(num_prompts=5, ramp_up_strategy="exponential", ramp_up_start_rps=1, ramp_up_end_rps=16)
    assert ramp_up_times(exp, 5, 0)[1] == pytest.approx([1, 2, 4, 8, 16])
    reqs, _ = build_requests(BenchConfig(num_prompts=50, random_input_len=3, random_output_len=2, **{
        "ramp_up_strategy": "linear", "ramp_up_start_rps": 1, "ramp_up_end_rps": 4}))
    assert reqs[0].rate == 1 and reqs[-1].rate == 4 and reqs[0].at_s == 0


def test_a_ramp_up_run_records_vllms_keys_and_file_name(tmp_path, engine) -> None:
    r = CliRunner().invoke(cli_app, ["bench", "--model", "m", "--num-prompts", "12", "--random-input-len", "3",
                                     "--random-output-len", "2", "--ramp-up-strategy", "linear",
                                     "--ramp-up-start-rps", "100", "--ramp-up-end-rps", "400", "--save-result",
                                     "--result-dir", str(tmp_path), "--disable-tqdm"])
    assert r.exit_code == 0, r.output
    (path,) = tmp_path.glob("*.json")
    doc = json.loads(path.read_text())
    assert path.name.startswith("polyserve-bench-ramp-up-linear-100qps-400qps-m-")
    assert (doc["ramp_up_strategy"], doc["ramp_up_start_rps"], doc["ramp_up_end_rps"]) == ("linear", 100, 400)
    assert [e["rps"] for e in doc["rps_change_events"]] == list(range(100, 401))
    assert doc["completed"] == 12 and doc["request_rate"] is None
    assert default_filename({**doc, "max_concurrency": 4}).startswith("polyserve-bench-ramp-up-linear-100qps-400qps"
                                                                      "-concurrency4-m-")


def _rec(send: float, ttft_ms: float, itl_ms: list[float], ok: bool = True) -> RequestRecord:
    e2el = ttft_ms + sum(itl_ms)
    return RequestRecord(0, "t", 0.0, send, 1, len(itl_ms) + 1, ok, None if ok else "timeout", "", ttft_ms,
                         None, e2el, itl_ms, 1.0, 1.0, ok, None)


def test_peak_tokens_per_second_and_peak_concurrency_are_vllms() -> None:
    recs = [
        _rec(0.0, 100, [100] * 8),  # tokens at 0.1..0.9 s (9, second 0); in flight [0, 0.9)
        _rec(0.5, 50, [100, 100, 100, 200]),  # tokens at 0.55..0.85 (4, second 0) and 1.05 (second 1); [0.5, 1.05)
        _rec(0.9, 20, [30]),  # tokens at 0.92, 0.95 (second 0); [0.9, 0.95): starts as the first ends
        _rec(0.2, 10, [], ok=False),  # failed: not counted
    ]
    tokens, concurrency = peaks(recs)
    assert tokens == 15 and concurrency == 2  # half-open intervals: at 0.9 an end comes before a start
    assert peaks([]) == (0.0, 0)
    assert math.isclose(peaks([_rec(5.0, 10, [])])[0], 1.0)


def test_host_is_bracketed_for_ipv6(tmp_path, engine) -> None:
    doc, _ = _bench(tmp_path, "--model", "m", "--host", "::1", "--port", "7")
    assert doc["base_url"] == "http://[::1]:7"
