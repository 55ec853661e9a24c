"""Injected faults behave as documented: 500 after N requests, streams dropped after K tokens, added delay."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .helpers import client_for, completion, linear, make_app, run


def test_fail_after_n_requests_answers_500_with_an_openai_body() -> None:
    async def main():
        async with client_for(make_app(linear(1.0, 0, 0.1), time_scale=10, fail_after=2)) as c:
            codes = [
                (await c.post("/v1/completions", json=completion(2, 2, stream=False))).status_code
                for _ in range(4)
            ]
            r = await c.post("/v1/completions", json=completion(2, 2, stream=True))
            return codes, r.status_code, r.json(), (await c.get("/health")).status_code

    codes, stream_code, body, health = run(main())
    assert codes == [200, 200, 500, 500]
    assert stream_code == 500 and body["error"]["code"] == 500 and "fail-after" in body["error"]["message"]
    assert health == 200  # the engine is up; it just fails requests


@pytest.mark.parametrize("k", [0, 3])
def test_crash_mid_stream_drops_the_connection_after_k_tokens_and_frees_the_request(k: int) -> None:
    async def main():
        app = make_app(linear(1.0, 0, 0.1), time_scale=10, crash_mid_stream=k)
        tokens = 0
        async with client_for(app) as c:
            with pytest.raises(httpx.RemoteProtocolError):
                async with c.stream("POST", "/v1/completions", json=completion(2, 10)) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            tokens += 1
            await asyncio.sleep(0.005)
            core = app.state.engine.core
            return tokens, core.num_live, core.num_running, core.instance.kv_used

    assert run(main()) == (k, 0, 0, 0)


def test_crash_mid_stream_spares_requests_shorter_than_k() -> None:
    async def main():
        app = make_app(linear(1.0, 0, 0.1), time_scale=10, crash_mid_stream=5)
        async with client_for(app) as c, c.stream("POST", "/v1/completions", json=completion(2, 4)) as r:
            return [line async for line in r.aiter_lines() if line]

    lines = run(main())
    assert lines[-1] == "data: [DONE]" and len(lines) == 5


def test_add_latency_delays_the_first_byte() -> None:
    async def main():
        async with client_for(make_app(linear(0.01, 0, 0), time_scale=100, add_latency_ms=60)) as c:
            t0 = time.perf_counter()
            async with c.stream("POST", "/v1/completions", json=completion(2, 1)) as r:
                headers_at = time.perf_counter() - t0
                await r.aread()
            t1 = time.perf_counter()
            await c.get("/health")
            return headers_at, time.perf_counter() - t1

    first_byte, health = run(main())
    assert 0.06 <= first_byte < 0.5
    assert health < 0.05  # only generation requests are delayed
