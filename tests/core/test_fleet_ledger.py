"""``FleetState`` invariants under hypothesis-generated sequences of the driver's events.

The driver (simulator or gateway) writes the ledger only through dispatch / first token / finish and scale
actions. After every event:
- per-server aggregates equal the sums over that server's ledger entries;
- a request is on at most one server;
- an inactive server holds no requests (deactivating a busy one is refused, leaving the ledger unchanged);
- every active server is in exactly the ``LoadIndex`` of its (tier, role), and its walks are ordered
  (descending: most loaded first; ascending: least loaded first; ``below`` filters).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from polyserve.core.fleet import FleetConfig, FleetState, LoadIndex, RequestInfo, ScaleAction
from polyserve.core.tiers import Tier, TierSet

CAP = 3  # max_num_seqs: small, so the LoadIndex overflow bucket (more than CAP requests) is exercised
N_SERVERS = 4
TIERS = TierSet([Tier("a", 20, 500), Tier("b", 50, 2000)])


class _Model:
    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        return 0.005 + 1e-5 * prefill_tokens + 1e-3 * num_decode


def new_fleet(roles=("mixed", "mixed", "mixed", "decode")) -> FleetState:
    return FleetState(TIERS, FleetConfig(kv_capacity_tokens=100_000, max_num_seqs=CAP), _Model(), list(roles))


def snapshot(f: FleetState):
    return (
        [(s.active, s.tier, s.num_requests, s.num_prefill, s.num_decode, s.prefill_tokens, s.input_tokens,
          s.expected_output, tuple(s.tier_counts), tuple(s.prefill_by_tier), tuple(s.prefill_queue))
         for s in f.servers],
        {rid: (e.server, e.first_token_at) for rid, e in f.entries.items()},
        {k: [dict(b) for b in idx.buckets] for k, idx in f._index.items()},
        {role: f.num_idle(role) for role in ("mixed", "prefill", "decode")},
    )


def check_invariants(f: FleetState) -> None:
    nt = len(f.tiers)
    for s in f.servers:
        mine = [e for e in f.entries.values() if e.server == s.sid]
        pre = [e for e in mine if e.first_token_at is None]
        assert s.num_requests == len(mine)
        assert s.num_prefill == len(pre)
        assert s.num_decode == len(mine) - len(pre)
        assert s.prefill_tokens == sum(e.info.input_tokens for e in pre)
        assert s.input_tokens == sum(e.info.input_tokens for e in mine)
        assert s.expected_output == pytest.approx(sum(e.expected_output for e in mine), abs=1e-6)
        assert s.tier_counts == [sum(1 for e in mine if e.info.tier == t) for t in range(nt)]
        assert s.prefill_by_tier == [sum(e.info.input_tokens for e in pre if e.info.tier == t) for t in range(nt)]
        # the EDF prefill queue: exactly the awaiting-first-token requests, earliest TTFT deadline first
        assert s.prefill_queue == sorted((e.info.ttft_deadline, e.info.rid, e.info.input_tokens) for e in pre)
        assert (s.num_requests == 0) == (s.became_empty_at is not None)
        if not s.active:
            assert s.num_requests == 0, "an inactive server holds no requests"
    for role in {s.role for s in f.servers}:
        assert f.num_idle(role) == len(f.idle_servers(role)), f"idle count of {role} servers"
    # a request on at most one server: the entries' servers account for every outstanding request once
    assert sum(s.num_requests for s in f.servers) == len(f.entries)
    assert all(e.info.rid == rid for rid, e in f.entries.items())
    # load index: active servers, each in the index of its (tier, role), ordered by load
    seen: dict[int, tuple] = {}
    for key, idx in f._index.items():
        members = [sid for b in idx.buckets for sid in b]
        assert idx.size == len(members)
        for sid in members:
            assert sid not in seen, f"server {sid} in two load indexes {seen.get(sid)} and {key}"
            seen[sid] = key
        for b, bucket in enumerate(idx.buckets):
            for sid in bucket:
                assert b == min(f.servers[sid].num_requests, CAP + 1)
        assert idx.nonempty == [b for b, bucket in enumerate(idx.buckets) if bucket], "walks see every server"
        check_order(idx, f)
    assert {sid: key for sid, key in seen.items()} == {
        s.sid: (s.tier, s.role) for s in f.servers if s.active
    }


def bucket_load(f: FleetState, sid: int) -> int:
    return min(f.servers[sid].num_requests, CAP + 1)


def check_order(idx: LoadIndex, f: FleetState) -> None:
    desc = list(idx.descending())
    asc = list(idx.ascending())
    assert sorted(desc) == sorted(asc) == sorted(sid for b in idx.buckets for sid in b)
    assert [bucket_load(f, s) for s in desc] == sorted((bucket_load(f, s) for s in desc), reverse=True)
    assert [bucket_load(f, s) for s in asc] == sorted(bucket_load(f, s) for s in asc)
    for below in range(0, CAP + 2):
        got = list(idx.descending(below))
        assert got == [s for s in desc if f.servers[s].num_requests < below]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.f = new_fleet()
        self.next_rid = 0
        self.now = 0.0

    def _tick(self, dt: float) -> float:
        self.now += dt
        return self.now

    @rule(sid=st.integers(0, N_SERVERS - 1), tier=st.none() | st.integers(0, 1), dt=st.floats(0, 1),
          role=st.none() | st.sampled_from(["mixed", "prefill", "decode"]))
    def activate(self, sid, tier, dt, role):
        s = self.f.servers[sid]
        if role is not None and role != s.role and (s.active or s.num_requests):
            before = snapshot(self.f)
            with pytest.raises(ValueError, match="only an idle server may become"):
                self.f.apply_scale(ScaleAction(sid, True, tier, "test", role=role), self._tick(dt))
            assert snapshot(self.f) == before, "a refused role change leaves the ledger unchanged"
        else:
            self.f.apply_scale(ScaleAction(sid, True, tier, "test", role=role), self._tick(dt))
            assert s.active and s.role == (role or s.role)

    @rule(sid=st.integers(0, N_SERVERS - 1), dt=st.floats(0, 1))
    def deactivate(self, sid, dt):
        s = self.f.servers[sid]
        if s.num_requests:
            before = snapshot(self.f)
            with pytest.raises(ValueError):
                self.f.apply_scale(ScaleAction(sid, False), self._tick(dt))
            assert snapshot(self.f) == before, "a refused deactivation leaves the ledger unchanged"
        else:
            self.f.apply_scale(ScaleAction(sid, False), self._tick(dt))
            assert not s.active and s.tier is None

    @precondition(lambda self: any(s.active for s in self.f.servers))
    @rule(data=st.data(), tier=st.integers(0, 1), inp=st.integers(1, 5000),
          max_tokens=st.none() | st.integers(1, 400), first=st.booleans(), dt=st.floats(0, 1))
    def dispatch(self, data, tier, inp, max_tokens, first, dt):
        sid = data.draw(st.sampled_from([s.sid for s in self.f.servers if s.active]))
        info = RequestInfo(self.next_rid, self.now, inp, tier, 0.5, 0.02, max_tokens)
        self.next_rid += 1
        e = self.f.on_dispatch(info, sid, self._tick(dt), has_first_token=first)
        assert e.server == sid and e.expected_output == self.f.expected_output(tier, max_tokens)

    @precondition(lambda self: bool(self.f.entries))
    @rule(data=st.data(), dt=st.floats(0, 1))
    def redispatch_is_refused(self, data, dt):
        rid = data.draw(st.sampled_from(sorted(self.f.entries)))
        e = self.f.entries[rid]
        before = snapshot(self.f)
        with pytest.raises(ValueError):
            self.f.on_dispatch(e.info, e.server, self._tick(dt))
        assert snapshot(self.f) == before

    @precondition(lambda self: bool(self.f.entries))
    @rule(data=st.data(), dt=st.floats(0, 1))
    def first_token(self, data, dt):
        rid = data.draw(st.sampled_from(sorted(self.f.entries)))
        self.f.on_first_token(rid, self._tick(dt))
        assert self.f.entries[rid].first_token_at is not None and self.f.entries[rid].tokens_out >= 1

    @precondition(lambda self: bool(self.f.entries))
    @rule(data=st.data(), out=st.none() | st.integers(0, 500), dt=st.floats(0, 1))
    def finish(self, data, out, dt):
        rid = data.draw(st.sampled_from(sorted(self.f.entries)))
        sid = self.f.entries[rid].server
        now = self._tick(dt)
        self.f.on_finish(rid, now, out)
        assert rid not in self.f.entries
        s = self.f.servers[sid]
        if s.num_requests == 0:
            assert s.became_empty_at == now and s.expected_output == 0.0

    @invariant()
    def ledger_is_consistent(self):
        check_invariants(self.f)


TestLedgerInvariants = LedgerMachine.TestCase
TestLedgerInvariants.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---- hand-checked examples ---------------------------------------------------------------------------------
def test_expected_output_is_the_learned_tier_mean_bounded_by_max_tokens():
    """Prior 256 before any finish; after outputs of 100 and 300 the tier's mean is 200; max_tokens=150 caps it."""
    f = new_fleet()
    f.apply_scale(ScaleAction(0, True, 0), 0.0)
    assert f.expected_output(0) == 256.0
    for rid, out in ((1, 100), (2, 300)):
        f.on_dispatch(RequestInfo(rid, 0.0, 10, 0, 0.5, 0.02), 0, 0.0)
        f.on_finish(rid, 1.0, out)
    assert f.expected_output(0) == 200.0
    assert f.expected_output(0, max_tokens=150) == 150.0
    assert f.expected_output(1) == 256.0  # the other tier has learned nothing


def test_load_index_walks_servers_by_load_both_ways():
    """Servers with 2, 0, 1 and 2 requests: descending 0/3 (2), 2 (1), 1 (0); ascending the reverse by bucket."""
    f = new_fleet(("mixed",) * 4)
    for sid in range(4):
        f.apply_scale(ScaleAction(sid, True, 0), 0.0)
    rid = 0
    for sid, k in ((0, 2), (2, 1), (3, 2)):
        for _ in range(k):
            f.on_dispatch(RequestInfo(rid, 0.0, 10, 0, 0.5, 0.02), sid, 0.0)
            rid += 1
    idx = f.index(0, "mixed")
    assert list(idx.descending()) == [0, 3, 2, 1]
    assert list(idx.ascending()) == [1, 2, 0, 3]
    assert list(idx.descending(below=2)) == [2, 1]
    assert list(idx.descending(below=1)) == [1]
    assert list(idx.descending(below=0)) == []


def test_load_index_below_filters_servers_beyond_the_overflow_bucket():
    """cap 3: a server with 6 requests must not appear in descending(below=5)."""
    idx = LoadIndex(3)
    idx.add(7, 6)  # overflow bucket
    idx.add(8, 2)
    assert list(idx.descending(below=5)) == [8]


def test_only_an_idle_server_changes_role_and_its_index_follows():
    """Adaptive prefill/decode split: an idle decode server activated as prefill joins the prefill index;
    an active server asked to change role is refused with the reason, its ledger untouched."""
    f = new_fleet(("prefill", "decode", "decode", "decode"))
    f.apply_scale(ScaleAction(1, True, None, "test", role="prefill"), 0.0)
    assert f.servers[1].role == "prefill" and 1 in set(f.index(None, "prefill").ascending())
    f.apply_scale(ScaleAction(2, True, 0, "test"), 0.0)
    before = snapshot(f)
    with pytest.raises(ValueError, match="only an idle server may become prefill"):
        f.apply_scale(ScaleAction(2, True, None, "test", role="prefill"), 0.0)
    assert snapshot(f) == before and 2 in set(f.index(0, "decode").ascending())
    check_invariants(f)


def test_the_idle_count_follows_a_fleet_started_all_active_then_all_idle():
    """``set_active_all`` / ``set_idle_all`` (a run's starting fleet) keep ``num_idle`` equal to the idle pool."""
    f = new_fleet()
    assert (f.num_idle("mixed"), f.num_idle("decode"), f.num_idle("prefill")) == (3, 1, 0)
    f.set_active_all(0.0)
    assert (f.num_idle("mixed"), f.num_idle("decode")) == (0, 0)
    check_invariants(f)
    f.set_idle_all()
    assert (f.num_idle("mixed"), f.num_idle("decode")) == (3, 1)
    check_invariants(f)
