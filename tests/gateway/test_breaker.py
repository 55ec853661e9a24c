"""The circuit breaker: a refused connection kills a backend at once; other failures only across requests."""

from __future__ import annotations

import pytest

from polyserve.engine import EngineConfig
from polyserve.gateway.breaker import Breaker

from .helpers import completion, harness, run


def test_a_refused_connection_is_dead_at_once():
    assert Breaker(3).failure(0, rid=1, kind="connect")


def test_failures_of_different_requests_add_up_and_the_same_request_counts_once():
    b = Breaker(3)
    assert not b.failure(0, 1, "status") and not b.failure(0, 1, "status") and b.strikes(0) == 1
    assert not b.failure(0, 2, "broken")
    assert b.failure(0, 3, "timeout") and b.strikes(0) == 0


def test_a_first_token_clears_the_strikes():
    b = Breaker(2)
    b.failure(0, 1, "status")
    b.success(0)
    assert not b.failure(0, 2, "status") and b.strikes(0) == 1


def test_a_threshold_below_one_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        Breaker(0)


def test_one_poison_request_does_not_take_backends_out_of_rotation() -> None:
    """Both engines answer 500 to everything. One request fails on both (502 to its client) and neither is
    marked dead; only the third different request that fails on a backend takes it out."""
    async def main():
        engines = [EngineConfig(time_scale=20, fail_after=0), EngineConfig(time_scale=20, fail_after=0)]
        async with harness(engines, {"policy": "round-robin", "retries": 1, "scrape_interval_s": 30}) as h:
            d = h.gateway.dispatcher
            first = await h.client.post("/v1/completions", json=completion(2, 3))
            after_one = [d.is_healthy(0), d.is_healthy(1)]
            for _ in range(3):
                await h.client.post("/v1/completions", json=completion(2, 3))
            return first.status_code, after_one, [d.is_healthy(0), d.is_healthy(1)]

    status, after_one, after_four = run(main())
    assert status == 502 and after_one == [True, True]
    assert after_four == [False, False]
