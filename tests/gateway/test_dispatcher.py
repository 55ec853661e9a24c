"""The dispatcher drives the simulator's router objects on a clock it is given, and keeps the ledger right."""

from __future__ import annotations

import asyncio
import random

import pytest

from polyserve.core.fleet import FleetConfig, RequestInfo
from polyserve.core.tiers import TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.gateway.dispatcher import Dispatcher, Shed
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel
from polyserve.policy import make_router

from .helpers import run

TIERS = TierSet.from_toml(DEFAULT_TIERS)
MODEL = LinearLatencyModel(get_deployment("llama-3.1-8b", "h100"), 0.006, 2e-5, 3e-4)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def activate(self, sid: int) -> None:
        self.calls.append(("activate", sid))

    def deactivate(self, sid: int) -> None:
        self.calls.append(("deactivate", sid))

    def is_ready(self, sid: int) -> bool:
        return True

    async def wait_ready(self, sid: int) -> None:
        return None

    def expects_up(self, sid: int) -> bool:
        return True

    def supervise(self) -> list[int]:
        return []

    async def aclose(self) -> None:
        return None


def make(
    n: int = 2, policy: str = "polyserve", max_seqs: int = 256, shed: bool = False, **opts: object
) -> tuple[Dispatcher, Clock, Recorder]:
    clock, act = Clock(), Recorder()
    router = make_router(policy, random.Random(0), **opts)
    d = Dispatcher(TIERS, FleetConfig(400_000, max_seqs), MODEL, router, act, n, clock=clock, shed=shed)
    return d, clock, act


def info(rid: int, d: Dispatcher, tier: int = 3, ttft: float = 4.0) -> RequestInfo:
    return RequestInfo(rid, d.now(), 16, tier, ttft, TIERS[tier].tpot_ms / 1e3, 32)


def assert_ledger_consistent(d: Dispatcher) -> None:
    for s in d.fleet.servers:
        mine = [e for e in d.fleet.entries.values() if e.server == s.sid]
        assert s.num_requests == len(mine)
        assert s.input_tokens == sum(e.info.input_tokens for e in mine)
        assert s.num_prefill == sum(1 for e in mine if e.first_token_at is None)
        if not s.active:
            assert not mine


def test_time_reaches_the_policy_as_the_clock_minus_start() -> None:
    async def main():
        d, clock, act = make()
        clock.t += 2.5
        assert d.now() == pytest.approx(2.5)
        fut = d.acquire(info(0, d))
        assert fut.done()  # dispatched at once: scale-up out of the idle pool
        sid = fut.result()
        assert ("activate", sid) in act.calls
        assert d.fleet.entries[0].dispatched_at == pytest.approx(2.5)
        d.first_token(0, 1)
        assert d.fleet.servers[sid].num_decode == 1
        d.finish(0, 32)
        assert d.fleet.expected_output(3) == 32  # the ledger learned the tier's output length
        assert_ledger_consistent(d)

    run(main())


def test_pending_requests_are_placed_when_a_request_finishes() -> None:
    async def main():
        d, _clock, _act = make(1, max_seqs=1)
        a = d.acquire(info(0, d))
        b = d.acquire(info(1, d))
        assert a.done() and not b.done()
        assert d.pending_by_tier() == [0, 0, 0, 1]
        d.finish(0, 8)
        assert b.done() and b.result() == 0
        assert d.num_pending() == 0
        assert_ledger_consistent(d)

    run(main())


def test_a_client_leaving_while_pending_frees_its_place() -> None:
    async def main():
        d, _clock, _act = make(1, max_seqs=1)
        d.acquire(info(0, d))
        b = d.acquire(info(1, d))
        c = d.acquire(info(2, d))
        d.finish(1, None)  # b's client went away
        assert b.cancelled()
        d.finish(0, 8)
        assert c.done() and c.result() == 0  # c got the seat, not the departed b
        assert set(d.fleet.entries) == {2}

    run(main())


def test_scale_down_drains_before_release() -> None:
    async def main():
        d, clock, act = make(2, scale_down_period_s=0.1, scale_down_hysteresis_s=0.5)
        sid = d.acquire(info(0, d)).result()
        clock.t += 1.0
        d.tick()
        assert d.fleet.servers[sid].active  # busy: never released
        assert ("deactivate", sid) not in act.calls
        d.finish(0, 8)
        clock.t += 1.0
        d.tick()
        assert not d.fleet.servers[sid].active
        assert act.calls[-1] == ("deactivate", sid)
        assert_ledger_consistent(d)

    run(main())


def test_dead_backend_is_parked_and_never_chosen_until_alive() -> None:
    async def main():
        d, clock, _act = make(2)
        d.mark_dead(0)
        for rid in range(5):
            assert d.acquire(info(rid, d)).result() == 1
        assert d.servers_by_state()["dead"] == 1
        clock.t += 5
        d.tick()  # scale-down must not un-park it
        assert 0 in d.parked
        d.mark_alive(0)
        assert 0 not in d.parked and not d.fleet.servers[0].active  # back in the idle pool
        assert_ledger_consistent(d)

    run(main())


def test_a_busy_server_marked_dead_is_parked_when_its_last_request_ends() -> None:
    async def main():
        d, _clock, _act = make(2)
        sid = d.acquire(info(0, d)).result()
        d.mark_dead(sid)
        assert sid not in d.parked and not d.fleet.servers[sid].routable(d.now())
        d.finish(0, None)
        assert sid in d.parked

    run(main())


def test_shedding_fails_the_future_and_max_pending_raises() -> None:
    async def main():
        d, _clock, _act = make(1, shed=True)
        late = RequestInfo(0, d.now() - 10, 16, 3, 1.0, 0.1, 32)  # its TTFT deadline passed already
        fut = d.acquire(late)
        with pytest.raises(Shed):
            fut.result()
        d2, _, _ = make(1, max_seqs=1)
        d2.max_pending = 1
        d2.acquire(info(0, d2))
        d2.acquire(info(1, d2))
        with pytest.raises(Shed) as e:
            d2.acquire(info(2, d2)).result()
        assert e.value.status == 503

    run(main())
    asyncio.set_event_loop(None)


@pytest.mark.parametrize("policy", ["polyserve", "minimal", "round-robin"])
def test_shedding_is_the_same_contract_for_every_router(policy: str) -> None:
    """The overload contract is the dispatcher's, not PolyServe's: a late request is shed whatever the router."""

    async def main():
        d, _clock, _act = make(1, policy=policy, shed=True)
        with pytest.raises(Shed, match="TTFT deadline can no longer be met"):
            d.acquire(RequestInfo(0, d.now() - 10, 16, 3, 1.0, 0.1, 32)).result()
        ok = d.acquire(info(1, d))
        assert ok.result() == 0
        d2, _, _ = make(1, policy=policy, shed=False)
        assert d2.acquire(RequestInfo(0, d2.now() - 10, 16, 3, 1.0, 0.1, 32)).result() == 0

    run(main())
    asyncio.set_event_loop(None)


def test_a_server_whose_engine_is_being_replaced_is_not_routable_until_its_replacement_answers() -> None:
    """A killed engine restarts in the background (a Ray actor can take tens of seconds on a busy node); a
    request placed on it meanwhile would wait for the launch and miss its TTFT. The scrape round that starts
    the replacement makes the server unroutable; the first good scrape of the replacement brings it back."""
    import httpx

    from polyserve.gateway.backend import Backend
    from polyserve.gateway.scrape import Scraper

    class Replacing(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.dead: list[int] = [0]
            self.ready = False

        def supervise(self) -> list[int]:
            dead, self.dead = self.dead, []
            return dead

        def is_ready(self, sid: int) -> bool:
            return sid != 0 or self.ready

        def expects_up(self, sid: int) -> bool:
            return self.is_ready(sid)

    metrics = b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
    transport = httpx.MockTransport(lambda req: httpx.Response(200, content=metrics))

    async def main():
        clock, act = Clock(), Replacing()
        d = Dispatcher(TIERS, FleetConfig(400_000, 256), MODEL, make_router("polyserve", random.Random(0)), act,
                       2, clock=clock)
        backends = [Backend(0, "http://e0"), Backend(1, "http://e1")]
        async with httpx.AsyncClient(transport=transport) as client:
            scraper = Scraper(client, backends, d, act, timeout_s=1.0, dead_after=3)
            await scraper.scrape_all()  # supervise() starts the replacement of server 0
            assert d.routable_count() == 1
            assert {d.acquire(info(rid, d)).result() for rid in range(6)} == {1}
            act.ready = True
            await scraper.scrape_all()  # the replacement answers
            assert d.routable_count() == 2 and d.is_healthy(0)

    run(main())
