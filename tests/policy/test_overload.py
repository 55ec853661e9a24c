"""The overload contract (``policy/overload.py``): one rule for lost causes, applied by the driver to every router.

Numbers (helpers: BLIS linear model, b0 = 6.472 ms, b1 = 19.80 us/prefill token): a t20 request with a
1000-token prompt arriving at 0 has TTFT deadline 0.6 s; alone on an idle server its prefill takes
b0 + 1000*b1 = 26.27 ms. So at 0.58 s it is lost (0.606 > 0.6) and at 0.57 s it is not (0.596 <= 0.6).
"""

from __future__ import annotations

import numpy as np
import pytest

from control.helpers import DecodeGate
from polyserve.control import FleetDriver
from polyserve.control.driver import DriverOptions, HostBase
from polyserve.core.errors import ConfigError
from polyserve.experiments.runner import PolicySpec, run_workload
from polyserve.metrics.records import SHED
from polyserve.policy import ROUTERS
from polyserve.policy.overload import LostCauseTest, check_overload_mode
from polyserve.sim.config import SimConfig
from polyserve.workload import WorkloadSpec, build_workload

from .helpers import fleet, model, req, tiers

ALL = ROUTERS.names()
COLOCATED_ONLY = {"co-chunk"}


def test_lost_once_even_an_idle_server_cannot_make_the_ttft():
    t = LostCauseTest(model())
    r = req(1, 0)
    assert t.min_first_token_s(1000) == pytest.approx(0.026272, abs=2e-5)
    assert t.lost_info(r, 0.58, "mixed")
    assert not t.lost_info(r, 0.57, "mixed")
    assert t.lost_info(r, 0.58, "prefill")


def test_a_decode_is_lost_once_its_second_token_cannot_be_on_time():
    """Token 2 of that t20 request is due at 0.6 + 0.02 = 0.62 s; the shortest decode iteration (one sequence,
    no KV) is b0 + b2 = 6.776 ms: lost at 0.614 s (0.6208 > 0.62), not at 0.613 s (0.6198)."""
    t = LostCauseTest(model())
    r = req(1, 0)
    assert t.min_decode_s == pytest.approx(0.006776, abs=2e-6)
    assert t.lost_info(r, 0.614, "decode")
    assert not t.lost_info(r, 0.613, "decode")
    # each phase is judged on its own next token: at 0.59 s the first token is out of reach, the second is not
    assert t.lost_info(r, 0.59, "mixed") and not t.lost_info(r, 0.59, "decode")


def test_unknown_overload_mode_is_refused_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match="serve, shed"):
        check_overload_mode("drop")
    with pytest.raises(ConfigError, match="--overload must be serve or shed"):
        SimConfig(overload="drop")


def _overloaded():
    # long prompts at several times what 3 servers can serve: queues form and many requests become lost causes
    return build_workload(WorkloadSpec(rate=40.0, num_requests=400, input_len="uniform:2000:6000",
                                       output_len="uniform:100:600"), tiers(), seed=5)


def _modes(name):
    return ("colocated",) if name in COLOCATED_ONLY else ("colocated", "disaggregated")


@pytest.mark.parametrize("name", ALL)
def test_every_router_sheds_lost_causes_under_the_same_contract(name):
    """Overload ``shed`` is the driver's, so it acts for every router: each sheds some requests when
    overloaded, every shed request carries the reason, and none of them ever produced a token."""
    wl = _overloaded()
    for mode in _modes(name):
        res = run_workload(wl, model(), PolicySpec(router=name), SimConfig(instances=3, mode=mode, overload="shed"),
                           seed=5)
        r = res.records
        shed = np.nonzero(r.status == SHED)[0]
        assert shed.size > 0, f"{name}/{mode}: nothing shed at 3x overload"
        assert all("TTFT deadline can no longer be met" in r.reason[i] for i in shed.tolist())
        assert (r.first_token[shed] < 0).all(), "a request that streamed a token is never shed"
        c = r.counts()
        assert c["unfinished"] == 0 and c["attained"] + c["violated"] + c["shed"] + c["rejected"] == len(wl)


@pytest.mark.parametrize("name", ["polyserve", "minimal", "round-robin"])
def test_serve_mode_sheds_nothing_and_every_request_completes(name):
    wl = _overloaded()
    res = run_workload(wl, model(), PolicySpec(router=name), SimConfig(instances=3, overload="serve"), seed=5)
    c = res.records.counts()
    assert c["shed"] == 0 and c["unfinished"] == 0
    assert c["attained"] + c["violated"] == len(wl)


def test_a_shed_request_was_lost_when_it_was_shed():
    """Shedding only drops requests the test calls lost at the moment they are dropped (recorded as finish)."""
    wl = _overloaded()
    res = run_workload(wl, model(), PolicySpec(router="minimal"), SimConfig(instances=3, overload="shed"), seed=5)
    r = res.records
    t = LostCauseTest(model())
    for i in np.nonzero(r.status == SHED)[0].tolist():
        deadline = float(wl.arrival_s[i] + wl.ttft_ms[i] / 1e3)
        assert t.lost(int(wl.input_tokens[i]), deadline + 1e-9, r.finish[i] / 1e9)


# ---- decode-phase lost causes: served after every attainable decode, never shed ----------------------------


class Host(HostBase):
    def __init__(self) -> None:
        self.dispatched: list[tuple[int, str]] = []
        self.ended: list[tuple[int, str]] = []
        self.lost_rids: list[int] = []

    def dispatch(self, info, sid, phase, promoted, now) -> None:
        self.dispatched.append((info.rid, phase))

    def end(self, info, outcome, reason, now) -> None:
        self.ended.append((info.rid, outcome))

    def lost(self, info, now) -> None:
        self.lost_rids.append(info.rid)


@pytest.mark.parametrize("shed", [True, False])
def test_a_lost_decode_is_never_shed_and_goes_behind_every_attainable_one(shed):
    f = fleet(2, roles=["prefill", "decode"])
    router, host = DecodeGate(), Host()
    d = FleetDriver(f, router, host, LostCauseTest(model()), DriverOptions(shed=shed, colocated=False))
    d.start(0.0)
    early = req(1, tier=0, arrival=0.0)  # t20, 1000 tokens: token 2 due at 0.62 s
    late = req(2, tier=0, arrival=0.5)  # token 2 due at 1.12 s
    for r in (early, late):
        d.arrive(r, r.arrival)
        d.first_token(r.rid, r.arrival + 0.05, 1)
        d.handoff(r, r.arrival + 0.05)  # no decode seat: both wait in the router, early first
    assert host.dispatched == [(1, "prefill"), (2, "prefill")]
    router.open = True
    d.retry_pending(0.7)  # early's token 2 can no longer be on time; late's still can
    assert host.lost_rids == [1], "the late-for-certain decode is reported as a certain miss"
    assert host.ended == [], "a request that has streamed its first token is never shed"
    assert host.dispatched[2:] == [(2, "decode"), (1, "decode")], "the attainable decode is seated first"
    assert not d.waiting
