"""A decode that waits longer than ``decode_seat_s`` for a seat ends (outcome ``timeout``), in both hosts alike.

Why in the driver: the request has streamed its first token, so the wait is a silence in its stream. The
gateway ends such a stream with an error after ``timeouts.idle_s``; the simulator must end the same request
at the same time, or it shows as a late completion what a user sees as an error (one driver, two hosts).
"""

from __future__ import annotations

from hypothesis import given, settings

from control.helpers import DecodeGate, driver_ops, queued
from policy.helpers import fleet, model, req
from polyserve.control import FleetDriver
from polyserve.control.driver import DriverOptions, HostBase
from polyserve.policy.overload import LostCauseTest


class Host(HostBase):
    def __init__(self) -> None:
        self.ended: list[tuple[int, str, float]] = []
        self.seated: list[int] = []

    def dispatch(self, info, sid, phase, promoted, now) -> None:
        if phase == "decode":
            self.seated.append(info.rid)

    def end(self, info, outcome, reason, now) -> None:
        self.ended.append((info.rid, outcome, now))


def driver(seat_s: float | None = 30.0) -> tuple[FleetDriver, DecodeGate, Host]:
    f = fleet(2, roles=["prefill", "decode"])
    router, host = DecodeGate(), Host()
    d = FleetDriver(f, router, host, LostCauseTest(model()),
                    DriverOptions(shed=True, colocated=False, decode_seat_s=seat_s))
    d.start(0.0)
    return d, router, host


def hand_off(d: FleetDriver, rid: int, tier: int, now: float) -> None:
    r = req(rid, tier=tier, arrival=now)
    d.arrive(r, now)
    d.first_token(rid, now + 0.05, 1)
    d.handoff(r, now + 0.05)


def test_a_decode_waiting_past_the_seat_timeout_ends_once_and_leaves_its_queue():
    d, _, host = driver(30.0)
    hand_off(d, 1, 3, 0.0)  # t100: TTFT 5 s + its bank, so it is still attainable a while
    hand_off(d, 2, 3, 10.0)
    d.tick(29.0)
    assert host.ended == [] and sorted(d.waiting) == [1, 2], "nobody ends before the limit"
    d.tick(30.06)
    assert host.ended == [(1, "timeout", 30.06)], "the first ends once 30 s have passed since its hand-off"
    assert sorted(queued(d)) == [2] and sorted(d.waiting) == [2]
    d.tick(45.0)
    d.tick(40.06)  # (a stale tick earlier than the last changes nothing)
    d.tick(60.0)
    assert [e[:2] for e in host.ended] == [(1, "timeout"), (2, "timeout")]
    assert queued(d) == [] and not d.waiting and not d._seat_order


def test_every_timed_out_decode_is_counted_a_miss_exactly_once():
    """A decode still attainable when it times out is a miss counted now; one already a lost cause (in the decode
    lost queue) was counted when it went there: the autoscaler's miss counts must not double it."""
    d, _, host = driver(30.0)
    hand_off(d, 1, 0, 0.0)  # t20: its second token is due within a second, a lost cause soon
    d.tick(2.0)
    assert d.lost_queues["decode"] and d.fleet.outcomes.total_decode_misses[0] == 1
    hand_off(d, 2, 3, 20.0)
    d.tick(25.0)
    d.tick(51.0)
    assert [e[:2] for e in host.ended] == [(1, "timeout"), (2, "timeout")]
    assert d.fleet.outcomes.total_decode_misses[0] == 1, "the lost t20 decode is not counted twice"
    assert d.fleet.outcomes.total_decode_misses[3] == 1, "the t100 decode is counted when it times out"


def test_a_decode_seated_in_time_never_times_out():
    d, router, host = driver(30.0)
    hand_off(d, 1, 3, 0.0)
    d.tick(20.0)
    router.open = True
    d.tick(21.0)
    assert host.seated == [1]
    d.tick(100.0)
    assert host.ended == [] and not d._seat_order


def test_a_rerouted_decode_waits_its_own_seat_timeout_again():
    """The gateway re-routes a decode whose server failed before its first decode token: a new wait, timed from
    its own start, while the stale record of the first wait is skipped."""
    d, router, host = driver(30.0)
    hand_off(d, 1, 3, 0.0)
    router.open = True
    d.tick(10.0)  # seated at 10 s
    d.finish(1, 12.0, None, retry=False)  # its decode server failed
    router.open = False
    d.route(req(1, tier=3), 12.0, "decode")  # waits again from 12 s
    d.tick(31.0)
    assert host.ended == []
    d.tick(42.0)
    assert host.ended == [(1, "timeout", 42.0)]


def test_no_seat_timeout_means_the_decode_waits_however_long():
    d, _, host = driver(None)
    hand_off(d, 1, 3, 0.0)
    d.tick(10_000.0)
    assert host.ended == [] and sorted(d.waiting) == [1]


@settings(max_examples=60, deadline=None)
@given(ops=driver_ops(20_000))
def test_no_decode_waits_longer_than_the_seat_timeout(ops):
    """Whatever arrives, waits, is seated or cancelled: after any retry at ``now``, no request waits for a decode
    seat since before ``now - decode_seat_s``; every timed-out request ended exactly once, and the queues hold
    exactly the waiting requests."""
    seat_s = 5.0
    d, router, host = driver(seat_s)
    now, rid, since = 0.0, 0, {}
    for op, arg in ops:
        if op == "arrive":
            rid += 1
            hand_off(d, rid, arg, now)
            if rid in d.waiting:
                since[rid] = now + 0.05
        elif op == "cancel":
            d.cancel(arg)
        elif op == "toggle":
            router.open = not router.open
        else:
            now += arg / 1e3
        d.retry_pending(now + 0.05)
        assert all(now + 0.05 - since[r] < seat_s for r in d.waiting), "a decode waited past its seat timeout"
        q = queued(d)
        assert len(q) == len(set(q)) and set(q) == set(d.waiting)
    ended = [e[0] for e in host.ended]
    assert len(ended) == len(set(ended)), "a request ended twice"
    assert not set(ended) & set(host.seated), "a request both seated and timed out"
