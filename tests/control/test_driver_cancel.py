"""A request whose client went away leaves the router's queues at once.

Routers and autoscalers read the pending queues (``fleet.pending``: the fair_prefill wait rule,
``protect_host_tier``, ``rebalance_backlog``, the target-concurrency backlog). A cancelled entry left there for a
lazy skip counted as demand until it reached its queue's head.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from control.helpers import driver_ops, queued
from policy.helpers import fleet, model, req
from polyserve.control import FleetDriver
from polyserve.control.driver import DriverOptions, HostBase
from polyserve.core.fleet import RoutingDecision
from polyserve.policy.base import RouterBase
from polyserve.policy.overload import LostCauseTest


class Host(HostBase):
    """Takes every dispatch and end silently: these tests read the driver's queues, not the host."""

    def dispatch(self, info, sid, phase, promoted, now) -> None:
        return None

    def end(self, info, outcome, reason, now) -> None:
        return None


class Gate(RouterBase):
    """Everything waits until ``open``; then prefills go to server 0 and decodes (or mixed) to server 1."""

    name = "gate"

    def __init__(self) -> None:
        self.open = False

    def route(self, req, fleet, now, phase) -> RoutingDecision:
        if not self.open:
            return RoutingDecision.wait("closed")
        return RoutingDecision.to(0 if phase == "prefill" else 1, "open")


def driver(shed: bool, colocated: bool) -> tuple[FleetDriver, Gate]:
    f = fleet(2, roles=["mixed", "mixed"] if colocated else ["prefill", "decode"])
    router = Gate()
    d = FleetDriver(f, router, Host(), LostCauseTest(model()), DriverOptions(shed=shed, colocated=colocated))
    d.start(0.0)
    return d, router


def test_a_cancelled_request_leaves_its_tier_queue_at_once():
    d, _ = driver(shed=True, colocated=True)
    for rid, tier in ((1, 0), (2, 0), (3, 1)):
        d.arrive(req(rid, tier=tier), 0.0)
    assert [len(q) for q in d.fleet.pending][:2] == [2, 1]
    assert d.cancel(1) and not d.cancel(1), "True only while it was pending"
    assert [i.rid for i in d.fleet.pending[0]] == [2], "the cancelled head is gone, not skipped later"
    assert d.cancel(3)
    assert not d.fleet.pending[1], "a tier whose only waiting request went away shows no demand"
    assert sorted(d.waiting) == [2]


def test_a_cancelled_decode_leaves_the_decode_queue_at_once():
    d, router = driver(shed=False, colocated=False)
    router.open = True
    r = req(1, tier=0)
    d.arrive(r, 0.0)
    d.first_token(1, 0.05, 1)
    router.open = False
    d.handoff(r, 0.05)  # no decode seat: waits in the router's decode queue
    assert [i.rid for i in d.fleet.pending_decode[0]] == [1]
    assert d.cancel(1)
    assert not d.fleet.pending_decode[0] and not d.waiting


def test_cancel_all_empties_every_queue_and_names_every_request():
    d, _ = driver(shed=False, colocated=True)
    for rid in range(1, 6):
        d.arrive(req(rid, tier=rid % 4), 0.0)
    d.retry_pending(60.0)  # all lost causes now: served last, so they sit in the lost queue
    assert sorted(queued(d)) == [1, 2, 3, 4, 5] and d.lost_queues["mixed"]
    assert sorted(d.cancel_all()) == [1, 2, 3, 4, 5]
    assert queued(d) == [] and not d.waiting


@settings(max_examples=60, deadline=None)
@given(
    shed=st.booleans(),
    colocated=st.booleans(),
    ops=driver_ops(3000),
)
def test_the_queues_hold_exactly_the_waiting_requests(shed, colocated, ops):
    """Whatever arrives, waits, becomes a lost cause, is dispatched or is cancelled: every request the driver
    counts as waiting sits in exactly one queue, and no queue holds any other."""
    d, router = driver(shed, colocated)
    now, rid = 0.0, 0
    for op, arg in ops:
        if op == "arrive":
            rid += 1
            d.arrive(req(rid, tier=arg, arrival=now), now)
        elif op == "cancel":
            d.cancel(arg)
        elif op == "toggle":
            router.open = not router.open
            d.retry_pending(now)
        else:
            now += arg / 1e3
            d.retry_pending(now)
        q = queued(d)
        assert len(q) == len(set(q)), "a request sits in two queues"
        assert set(q) == set(d.waiting), "a queue holds a request that is not waiting, or misses one that is"
