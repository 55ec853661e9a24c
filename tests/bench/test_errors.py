"""Errors are counted by kind, never dropped: every prompt sent ends as completed or failed."""

from __future__ import annotations

import httpx
import pytest

from polyserve.bench.api import benchmark
from polyserve.bench.config import BenchConfig
from polyserve.bench.runner import BenchError
from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel

from .fakes import ManualClock, Script, ScriptedTransport
from .helpers import run, two_tiers

FAST_MODEL = LinearLatencyModel(get_deployment("llama-3.1-8b", "h100"), 1e-3, 0.0, 1e-4)


def against_engine(engine: EngineConfig, **cfg) -> dict:
    app = create_engine_app(engine, latency_model=FAST_MODEL)
    config = BenchConfig(base_url="http://engine", random_input_len=8, random_output_len=6, **cfg)

    async def main():
        async with httpx.AsyncClient(transport=StreamingASGITransport(app)) as c:
            return await benchmark(config, client=c)

    return run(main())


def conserved(doc: dict) -> None:
    assert doc["completed"] + doc["failed"] == len(doc["requests"]) == doc["num_prompts"] - doc["not_sent"]
    assert sum(doc["error_kinds"].values()) == doc["failed"]
    for t in doc["tiers"].values():
        assert sum(t["error_kinds"].values()) == t["failed"]


def test_http_errors_from_a_failing_engine_are_counted_by_status() -> None:
    doc = against_engine(EngineConfig(time_scale=10, fail_after=3), num_prompts=8, max_concurrency=1)
    conserved(doc)
    assert doc["completed"] == 3 and doc["failed"] == 5
    assert doc["error_kinds"] == {"http_500": 5}
    failed = [r for r in doc["requests"] if not r["ok"]]
    assert all("fail-after" in r["error_detail"] and not r["attained"] for r in failed)
    assert doc["attained"] <= 3


def test_streams_dropped_mid_way_count_as_stream_broken() -> None:
    doc = against_engine(EngineConfig(time_scale=10, crash_mid_stream=2), num_prompts=6)
    conserved(doc)
    assert doc["error_kinds"] == {"stream_broken": 6} and doc["completed"] == 0
    assert all(len(r["itl_ms"]) == 1 for r in doc["requests"])  # two chunks arrived before the drop


def test_a_request_slower_than_the_timeout_counts_as_timeout() -> None:
    doc = against_engine(EngineConfig(time_scale=10, add_latency_ms=400), num_prompts=3, timeout_s=0.1)
    conserved(doc)
    assert doc["error_kinds"] == {"timeout": 3}


def test_an_unreachable_server_counts_as_connection_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = BenchConfig(
        base_url="http://nowhere", model="m", num_prompts=4, random_input_len=2, random_output_len=2
    )

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as c:
            return await benchmark(config, client=c)

    doc = run(main())
    conserved(doc)
    assert doc["error_kinds"] == {"connection": 4} and doc["attainment"] == 0


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        (Script(token_times=[0.1, 0.2], done_at=None), "stream_broken"),
        (Script(token_times=[0.1, 0.2, 0.3], done_at=0.4, error_event_after=1), "stream_error"),
        (Script(token_times=[0.1, 0.2], done_at=0.3, garbage_after=1), "invalid_response"),
        (Script(token_times=[], done_at=0.3), "empty_response"),
        (Script(status=429), "http_429"),
    ],
)
def test_each_failure_kind_is_named(tmp_path, script: Script, kind: str) -> None:
    clock = ManualClock()
    config = BenchConfig(
        base_url="http://fake",
        num_prompts=4,
        random_input_len=2,
        random_output_len=3,
        max_concurrency=1,
        tiers_path=two_tiers(tmp_path),
    )

    async def main():
        async with httpx.AsyncClient(
            transport=ScriptedTransport(clock, {"fast": script, "slow": script})
        ) as c:
            return await benchmark(config, client=c, clock=clock)

    doc = run(main())
    conserved(doc)
    assert doc["error_kinds"] == {kind: 4} and doc["completed"] == 0
    assert doc["p99_ttft_ms"] is None  # failed requests stay out of the latency statistics


def test_no_model_and_no_model_list_is_a_clear_error() -> None:
    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404))) as c:
            await benchmark(BenchConfig(base_url="http://x", num_prompts=1), client=c)

    with pytest.raises(BenchError, match="pass --model"):
        run(main())
