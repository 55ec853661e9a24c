"""Tokens come at the pace the latency model sets: batches slow each other down, queues and KV limits apply.

Wall-clock tests: they measure on the client side and convert back to model time (x time_scale). The scale
is kept low enough (3) that one Python process can produce and consume 32 streams without falling behind;
the statistic is the median of 8-token window rates over each stream's middle half, which ignores the
arrival spread at the start, the finishing spread at the end and a scheduling hiccup of the test machine.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from polyserve.runner import FleetSpec, build_model

from .helpers import client_for, completion, linear, make_app, metric_value, run, stream_events, token_texts


def token_times(events) -> np.ndarray:
    return np.array([t for t, e in events if e != "[DONE]" and e["choices"]])


def test_tpot_grows_with_concurrency_as_the_latency_model_predicts() -> None:
    model = build_model(FleetSpec())  # BLIS-fitted Llama-3.1-8B on H100
    scale, out, window = 3.0, 64, 8

    async def main():
        app = make_app(model, time_scale=scale)
        measured = {}
        async with client_for(app) as c:
            await stream_events(c, "/v1/completions", completion(8, 4))  # warm up
            for n in (1, 8, 32):
                res = await asyncio.gather(
                    *(stream_events(c, "/v1/completions", completion(8, out)) for _ in range(n))
                )
                rates = []
                for events, done in res:
                    assert done
                    ts = token_times(events)
                    assert len(ts) == out
                    mid = ts[out // 4 : 3 * out // 4]
                    rates.extend((mid[window:] - mid[:-window]) / window * scale)
                measured[n] = float(np.median(rates))
        return measured

    measured = run(main())
    for n, got in measured.items():
        want = model.iteration_time(n, 0, 0)
        assert abs(got / want - 1) < 0.08, (
            f"batch of {n}: measured {got * 1e3:.2f} ms, model {want * 1e3:.2f} ms"
        )
    assert measured[1] < measured[8] < measured[32]


def test_ttft_counts_the_wait_for_a_seat() -> None:
    """max_num_seqs=1: the second request waits for the whole first one; its TTFT (client side and in the
    engine's histogram) includes that wait."""
    model = linear(10.0, 0.0, 1.0)  # prefill iteration 10 ms, decode iteration 11 ms (model time)
    scale = 10.0

    async def main():
        app = make_app(model, time_scale=scale, max_num_seqs=1)
        async with client_for(app) as c:
            t0 = time.perf_counter()
            a, b = await asyncio.gather(
                stream_events(c, "/v1/completions", completion(4, 20)),
                stream_events(c, "/v1/completions", completion(4, 5)),
            )
            ttft_sum = await metric_value(c, "vllm:time_to_first_token_seconds_sum")
        return token_times(a[0])[0] - t0, token_times(b[0])[0] - t0, ttft_sum

    ttft_a, ttft_b, ttft_sum = run(main())
    want_a = 0.010 / scale
    want_b = (0.010 + 19 * 0.011 + 0.010) / scale  # all of A, then B's prefill
    assert abs(ttft_b - want_b) < 0.25 * want_b
    assert ttft_a < ttft_b
    assert abs(ttft_sum - (want_a + want_b)) < 0.25 * (want_a + want_b)


def test_preempted_streams_stall_then_deliver_every_token() -> None:
    async def main():
        app = make_app(linear(2.0, 0.0, 0.1), time_scale=10, kv_capacity_tokens=200)
        async with client_for(app) as c:
            res = await asyncio.gather(
                *(stream_events(c, "/v1/completions", completion(10, 30)) for _ in range(8))
            )
            return res, await metric_value(c, "vllm:num_preemptions_total"), app.state.engine.core

    res, preemptions, core = run(main())
    assert preemptions > 0
    for events, done in res:
        assert done and len(token_texts(events, chat=False)) == 30
    assert core.instance.kv_used == 0 and core.num_live == 0


def _finish_order(policy: str) -> list[str]:
    async def main():
        app = make_app(linear(2.0, 0.0, 0.1), time_scale=10, max_num_seqs=1, scheduling_policy=policy)
        order: list[str] = []
        async with client_for(app) as c:

            async def one(name: str, priority: int, delay: float) -> None:
                await asyncio.sleep(delay)
                n = 200 if name == "first" else 10  # first holds the only seat for ~42 ms (wall)
                r = await c.post("/v1/completions", json=completion(2, n, stream=False, priority=priority))
                assert r.status_code == 200
                order.append(name)

            await asyncio.gather(one("first", 0, 0), one("low", 5, 0.003), one("high", 1, 0.006))
        return order

    return run(main())


def test_priority_policy_serves_the_lower_priority_value_first() -> None:
    assert _finish_order("priority") == ["first", "high", "low"]


def test_fcfs_policy_ignores_priority() -> None:
    assert _finish_order("fcfs") == ["first", "low", "high"]
