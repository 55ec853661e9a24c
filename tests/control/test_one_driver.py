"""One driver, two hosts: the gateway's ``Dispatcher`` and the simulator make the same decisions.

The simulator runs a workload with every call it makes into its ``FleetDriver`` recorded (arrivals, first
tokens, finishes, ticks, retries when a server becomes ready), together with the driver's decision log.
The same calls are then replayed, at the same instants, into a gateway ``Dispatcher`` on a fake wall clock
(the gateway's public API: ``acquire``, ``first_token``, ``finish``, ``tick``), with a fresh router of
the same name and seed. Identical routing and scaling decisions, in the same order, and every future
resolving to the server the simulator used, mean the two faces share one control loop: the gateway
delivers what the simulator measures, up to what the engines do.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from polyserve.control import DecisionLog, FleetDriver
from polyserve.core.tiers import TierSet
from polyserve.data import AZURE_CONV, DEFAULT_TIERS
from polyserve.experiments.runner import PolicySpec, scheduler_choice
from polyserve.gateway.actuator import StaticActuator
from polyserve.gateway.dispatcher import Dispatcher, Refused, Shed
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import blis_linear_model
from polyserve.metrics.records import NOT_ARRIVED, REJECTED, SHED, VIOLATED
from polyserve.policy import AUTOSCALERS, SCHEDULERS, make_router
from polyserve.sim.cluster import Simulation, make_rng
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload

ENTRY = ("arrive", "first_token", "finish", "shed_in_engine", "handoff", "tick", "retry_pending")


def record_calls(driver: FleetDriver) -> list[tuple]:
    """Wrap the driver's entry points; keep only the host's calls (not the driver's calls into itself)."""
    calls: list[tuple] = []
    depth = [0]
    for name in ENTRY:
        orig = getattr(driver, name)

        def wrap(*args, _orig=orig, _name=name, **kw):
            if depth[0] == 0:
                calls.append((_name, args, kw))
            depth[0] += 1
            try:
                return _orig(*args, **kw)
            finally:
                depth[0] -= 1

        setattr(driver, name, wrap)
    return calls


def simulate(policy: str, rate: float, autoscaler: str | None, overload: str, seed: int = 0,
             mode: str = "colocated"):
    tiers = TierSet.from_toml(DEFAULT_TIERS)
    wl = build_workload(WorkloadSpec(trace=str(AZURE_CONV), rate=rate, duration_s=30.0), tiers, seed)
    model = blis_linear_model(get_deployment("llama-3.1-8b", "h100"))
    spec = PolicySpec(router=policy, autoscaler=autoscaler)
    router = make_router(policy, make_rng(seed))
    per_role = scheduler_choice(router, spec)
    scaler = AUTOSCALERS.create(autoscaler) if autoscaler else None
    log = DecisionLog()
    sim = Simulation(wl, model, router, lambda role: SCHEDULERS.create(per_role[role][0], **per_role[role][1]),
                     SimConfig(instances=6, overload=overload, mode=mode), autoscaler=scaler, log=log)
    calls = record_calls(sim.driver)
    sim.run()
    return sim, model, calls, log


def replay(sim: Simulation, model, calls: list[tuple], policy: str, autoscaler: str | None, overload: str,
           seed: int = 0):
    roles = list(sim.config.roles())
    """Feed the simulator's driver calls to a gateway Dispatcher on a fake clock; return its log and the
    server each request's future resolved to (or the error it failed with)."""
    clock = [0.0]
    log = DecisionLog()
    placed: dict[int, object] = {}

    async def main() -> None:
        d = Dispatcher(sim.fleet.tiers, sim.fleet.config, model, make_router(policy, make_rng(seed)),
                       StaticActuator(), len(sim.fleet.servers), clock=lambda: clock[0], shed=overload == "shed",
                       autoscaler=AUTOSCALERS.create(autoscaler) if autoscaler else None, log=log,
                       roles=roles)
        futs = {}
        for name, args, _kw in calls:
            if name == "arrive":
                info, now = args
                clock[0] = now
                futs[info.rid] = d.acquire(info)
            elif name == "first_token":
                rid, now = args
                clock[0] = now
                d.first_token(rid, 1)
            elif name == "finish":
                rid, now, out = args[:3]
                clock[0] = now
                d.finish(rid, out)
            elif name == "shed_in_engine":  # shed inside an engine's queue: a certain miss, no retry
                rid, now = args
                clock[0] = now
                d.driver.shed_in_engine(rid, now)
            elif name == "handoff":
                info, now = args
                clock[0] = now
                futs[info.rid] = d.handoff(info)
            elif name == "tick":
                clock[0] = args[0]
                d.tick()
            else:
                clock[0] = args[0]
                d.retry_pending(args[0])
        for rid, f in futs.items():
            if f.done():
                placed[rid] = f.exception() if f.exception() else f.result()

    asyncio.run(main())
    return log, placed


CASES = [
    ("polyserve", 60.0, None, "shed", "disaggregated"),  # prefill pool, hand-off, decode tiers, adaptive split
    ("polyserve", 75.0, None, "serve", "colocated"),  # tiered: scale-up from the idle pool, promotion, scale-down ticks
    ("polyserve", 95.0, None, "shed", "colocated"),  # overload: lost causes shed in the router
    ("minimal", 150.0, None, "shed", "colocated"),  # untiered; lost causes shed in the engines' queues
    ("minimal", 40.0, "target-concurrency", "serve", "colocated"),
    ("minimal", 60.0, None, "serve", "disaggregated"),  # the autoscaler's initial fleet and decisions
]


@pytest.mark.parametrize(("policy", "rate", "autoscaler", "overload", "mode"), CASES)
def test_the_gateway_host_makes_the_simulators_routing_and_scaling_decisions(policy, rate, autoscaler, overload,
                                                                             mode):
    sim, model, calls, sim_log = simulate(policy, rate, autoscaler, overload, mode=mode)
    assert sum(1 for c in calls if c[0] == "arrive") == len(sim.w), "every arrival reaches the driver"
    if policy == "polyserve":
        assert len(sim_log.routes) > len(sim.w), "the case exercises pending retries"
    gw_log, placed = replay(sim, model, calls, policy, autoscaler, overload)
    assert gw_log.routes == sim_log.routes
    assert gw_log.scales == sim_log.scales
    kinds = {k[-1] for k in sim_log.scales}
    assert kinds & {"activate", "move", "release"} or (autoscaler is None and policy == "minimal")
    served = np.flatnonzero(sim.records.instance >= 0)
    for i in served:
        assert placed[int(i)] == int(sim.records.instance[i]), f"request {i} placed on another server"


def test_a_request_ended_unserved_fails_the_gateway_future_with_the_drivers_reason():
    sim, model, calls, _ = simulate("polyserve", 95.0, None, "shed")
    _, placed = replay(sim, model, calls, "polyserve", None, "shed")
    errors = [e for e in placed.values() if isinstance(e, Exception)]
    assert errors and all(isinstance(e, Shed | Refused) for e in errors)
    assert any("TTFT deadline" in str(e) for e in errors)


@pytest.mark.parametrize(("policy", "rate", "overload", "mode"), [
    ("polyserve", 95.0, "shed", "colocated"),  # shed in the router
    ("minimal", 150.0, "shed", "colocated"),  # shed in the engines' queues
    ("polyserve", 95.0, "serve", "colocated"),  # lost causes served last
    ("polyserve", 95.0, "serve", "disaggregated"),  # lost in the prefill pool, and again as a decode
])
def test_every_request_ended_unserved_is_a_certain_miss_of_its_tier(policy, rate, overload, mode):
    """``fleet.outcomes`` (what ``fair_promotion`` reads) counts, per tier, every arrival once and every request
    the driver ended unserved (shed in the router or in an engine, rejected) as a certain miss; under
    ``serve`` a lost cause is a certain miss the moment it is found, so every one counted ends violated, and
    a disaggregated request lost in both phases is one miss of each phase, never two of one."""
    sim, _, _, _ = simulate(policy, rate, None, overload, mode=mode)
    o = sim.fleet.outcomes
    st, tier = sim.records.status, sim.w.tier
    ntiers = len(sim.fleet.tiers)
    assert o.total_arrivals == [int(((st != NOT_ARRIVED) & (tier == t)).sum()) for t in range(ntiers)]
    unserved = [int((((st == SHED) | (st == REJECTED)) & (tier == t)).sum()) for t in range(ntiers)]
    violated = [int(((st == VIOLATED) & (tier == t)).sum()) for t in range(ntiers)]
    if overload == "shed":
        assert o.total_misses == unserved and sum(unserved) > 0
    else:
        assert sum(unserved) == 0 and sum(o.total_misses) > 0
        for total in (o.total_misses, o.total_decode_misses):
            assert all(m <= v for m, v in zip(total, violated, strict=True))
    if mode == "disaggregated":
        assert sum(o.total_decode_misses) > 0  # the case this row is for: both phases lost
