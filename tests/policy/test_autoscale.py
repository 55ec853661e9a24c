"""The target-concurrency autoscaler (``policy/autoscale.py``): desired = ceil(ongoing / target) clamped to
[min_servers, pool size]; up after ``upscale_delay_s`` above, down after ``downscale_delay_s`` below.

Fleet: 4 mixed servers (helpers), shared pool (tier None), target 4 requests per server unless stated.
"""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.core.fleet import ScaleAction
from polyserve.policy import AUTOSCALERS
from polyserve.policy.autoscale import TargetConcurrencyAutoscaler

from .helpers import fleet, load, model, req


def scaler(**kw) -> TargetConcurrencyAutoscaler:
    return TargetConcurrencyAutoscaler(**{"target": 4.0, "upscale_delay_s": 1.0, "downscale_delay_s": 10.0, **kw})


def pool(active=(0,), n=4):
    f = fleet(n)
    for sid in active:
        f.apply_scale(ScaleAction(sid, True, None, "test"), 0.0)
    return f


def apply(f, acts, now):
    for a in acts:
        f.apply_scale(a, now)


def finish_all_but(f, keep: int, now: float) -> None:
    for rid in sorted(f.entries)[keep:]:
        f.on_finish(rid, now, 10)


def test_scales_up_only_after_the_upscale_delay():
    """10 ongoing on 1 server, target 4: desired 3. Nothing at 0 s and 0.99 s; at 1.0 s servers 1 and 2 start."""
    f = pool()
    load(f, 0, 10)
    a = scaler()
    assert a.decide(f, 0.0) == []
    assert a.decide(f, 0.99) == []
    acts = a.decide(f, 1.0)
    assert [(x.server, x.activate, x.tier) for x in acts] == [(1, True, None), (2, True, None)]
    assert acts[0].reason == "10 ongoing > 1 x 4"


def test_pending_requests_count_as_ongoing():
    """4 outstanding + 5 pending = 9 ongoing, target 4: desired 3."""
    f = pool()
    load(f, 0, 4)
    for k in range(5):
        f.pending[0].append(req(100 + k, 0))
    a = scaler(upscale_delay_s=0.0)
    assert [x.server for x in a.decide(f, 0.0)] == [1, 2]


def test_scale_up_is_clamped_to_the_pool_size():
    """100 ongoing want 25 servers; only 3 more exist: all of them start, no more."""
    f = pool()
    load(f, 0, 100)
    acts = scaler(upscale_delay_s=0.0).decide(f, 0.0)
    assert sorted(x.server for x in acts) == [1, 2, 3]


def test_at_target_nothing_changes():
    """8 ongoing on 2 servers, target 4: desired = current, no action ever."""
    f = pool(active=(0, 1))
    load(f, 0, 4)
    load(f, 1, 4)
    a = scaler(upscale_delay_s=0.0, downscale_delay_s=0.0)
    assert all(a.decide(f, t) == [] for t in (0.0, 5.0, 50.0))


def test_a_dip_below_the_threshold_restarts_the_upscale_delay():
    """Above at 0 s, back at target at 0.5 s, above again at 0.8 s: the delay counts from 0.8 s (fires at 1.8 s)."""
    f = pool()
    load(f, 0, 10)
    a = scaler()
    assert a.decide(f, 0.0) == []
    finish_all_but(f, 4, 0.5)  # 4 ongoing: desired 1 = current
    assert a.decide(f, 0.5) == []
    load(f, 0, 6, start_rid=50_000)  # 10 ongoing again
    assert a.decide(f, 0.8) == []
    assert a.decide(f, 1.7) == []
    assert [x.server for x in a.decide(f, 1.8)] == [1, 2]


def test_scales_down_after_the_downscale_delay_releasing_the_least_loaded():
    """3 active (loads 2, 0, 0), 2 ongoing: desired 1. Below from 2 s; nothing at 11.9 s; at 12 s servers 2 and 1
    (empty; ties broken towards the highest id) go, never server 0 (busy)."""
    f = pool(active=(0, 1, 2))
    load(f, 0, 2)
    a = scaler()
    assert a.decide(f, 2.0) == []
    assert a.decide(f, 11.9) == []
    acts = a.decide(f, 12.0)
    assert [(x.server, x.activate) for x in acts] == [(2, False), (1, False)]
    assert acts[0].reason == "2 ongoing < 3 x 4"
    apply(f, acts, 12.0)
    assert [s.sid for s in f.active_servers()] == [0]


def test_scale_down_prefers_the_least_loaded_busy_servers():
    """Loads 5, 1, 0 with target 10 (6 ongoing: desired 1): the 0- and 1-request servers are released, not the 5."""
    f = pool(active=(0, 1, 2))
    load(f, 0, 5)
    load(f, 1, 1)
    acts = scaler(target=10.0, downscale_delay_s=0.0).decide(f, 0.0)
    assert [x.server for x in acts] == [2, 1]


def test_never_scales_below_min_servers():
    """No load at all, min_servers 2: of 4 active servers two are released and two always stay."""
    f = pool(active=(0, 1, 2, 3))
    a = scaler(min_servers=2, downscale_delay_s=0.0)
    acts = a.decide(f, 0.0)
    assert len(acts) == 2 and all(not x.activate for x in acts)
    apply(f, acts, 0.0)
    assert len(f.active_servers()) == 2
    assert all(a.decide(f, t) == [] for t in (1.0, 100.0, 1000.0))


def test_a_single_server_at_min_one_is_never_released():
    """min_servers 1 (default) with nothing ongoing: the last server is kept forever."""
    f = pool()
    a = scaler(downscale_delay_s=0.0)
    assert all(a.decide(f, t) == [] for t in (0.0, 10.0, 1e6))


def test_draining_servers_are_reused_first_on_scale_up():
    """A draining server (not counted as active) comes back before an idle one is started."""
    f = pool(active=(0, 2))
    f.servers[2].draining = True
    load(f, 0, 8)
    acts = scaler(upscale_delay_s=0.0).decide(f, 0.0)
    assert [x.server for x in acts] == [2]


def test_default_target_is_derived_from_the_tightest_tpot():
    """target = floor((0.8 * 20 ms - b0) / b2) = floor((16 - 6.472) / 0.3044) = 31 requests per server."""
    m = model()
    expected = int((0.020 * 0.8 - m.b0) / m.b2)
    assert expected == 31
    a = TargetConcurrencyAutoscaler()
    assert a.resolved_target(pool()) == 31.0


@pytest.mark.parametrize(
    "kw", [{"target": 0.0}, {"target": -1.0}, {"upscale_delay_s": -1.0}, {"downscale_delay_s": -0.5},
           {"min_servers": 0}]
)
def test_bad_options_raise_config_error(kw):
    """A non-positive target, a negative delay or min_servers < 1 are configuration errors."""
    with pytest.raises(ConfigError):
        TargetConcurrencyAutoscaler(**kw)


def test_registered_as_target_concurrency():
    """The registry builds it with options."""
    a = AUTOSCALERS.create("target-concurrency", target=7.0, min_servers=2)
    assert isinstance(a, TargetConcurrencyAutoscaler) and a.target == 7.0 and a.min_servers == 2


@pytest.mark.parametrize("kw", [{"upscale_delay_s": float("nan")}, {"downscale_delay_s": float("nan")}])
def test_nan_delays_raise_config_error(kw):
    """Style rule: configs are validated at construction, no NaN."""
    with pytest.raises(ConfigError):
        TargetConcurrencyAutoscaler(**kw)


def test_disaggregated_decode_backlog_scales_the_decode_pool():
    """Decode server with 4 requests and 8 more pending for decode, target 4: decode wants 3 servers, prefill 1."""
    f = fleet(roles=["prefill", "prefill", "decode", "decode", "decode"])
    for sid in (0, 2):
        f.apply_scale(ScaleAction(sid, True, None, "test"), 0.0)
    load(f, 2, 4)
    for k in range(8):
        f.pending_decode[0].append(req(100 + k, 0))
    acts = scaler(upscale_delay_s=0.0).decide(f, 0.0)
    assert sorted(x.server for x in acts if x.activate) == [3, 4]
