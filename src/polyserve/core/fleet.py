"""The fleet ledger: what the router knows about every server, from its own accounting.

Why a ledger and not a snapshot of the engines: a live gateway cannot see inside vLLM; it knows what it sent
to each backend and what has streamed back. The simulator feeds the *same* ledger from the same three events
(dispatch, first token, finish), so a policy sees identical information in both faces and its decisions can
be replayed. Policies read the ledger; only the driver (simulator or gateway) writes it, through the
``on_*`` methods below, which keep every aggregate incrementally so that reading one costs O(1).

Times are float seconds; ``now`` always comes in as an argument (the ledger never reads a clock).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from polyserve.core.outcomes import TierOutcomes
from polyserve.core.tiers import TierSet

Role = Literal["mixed", "prefill", "decode"]
Phase = Literal["mixed", "prefill", "decode"]
Action = Literal["dispatch", "pending", "shed", "reject"]


class IterationTimeModel(Protocol):
    """The slice of a latency model that policies use (``polyserve.latency`` models satisfy it)."""

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float: ...


@dataclass(slots=True)
class RequestInfo:
    """What a policy may know about a request. Never its true output length (only ``max_tokens`` if sent)."""

    rid: int
    arrival: float  # s
    input_tokens: int
    tier: int  # index into the TierSet, tightest = 0
    ttft_slo: float  # s, from arrival to first token
    tpot_slo: float  # s, between consecutive tokens (cumulative: token k is due at arrival+ttft+(k-1)*tpot)
    max_tokens: int | None = None

    @property
    def ttft_deadline(self) -> float:
        return self.arrival + self.ttft_slo

    def token_deadline(self, k: int) -> float:
        """Deadline of output token ``k`` (1-based): ``arrival + TTFT + (k-1) * TPOT``."""
        return self.arrival + self.ttft_slo + (k - 1) * self.tpot_slo


@dataclass(slots=True, eq=False)
class LedgerEntry:
    """One request that is on a server (dispatched, not finished)."""

    info: RequestInfo
    server: int
    dispatched_at: float
    expected_output: float  # tokens; the tier's learned mean, bounded by max_tokens
    first_token_at: float | None = None
    tokens_out: int = 0  # streamed so far (the gateway counts them; the simulator only sets 1 at first token)


@dataclass(slots=True, eq=False)
class ServerState:
    """The router's view of one server. Aggregates are maintained by ``FleetState``'s ``on_*`` methods."""

    sid: int
    role: Role = "mixed"
    active: bool = False  # False = in the idle pool (released, not paid for, not routable)
    tier: int | None = None  # owning tier for tiered policies; None for a shared pool
    ready_at: float = 0.0  # cold start ends (active servers only route after it)
    draining: bool = False  # accepts no new work; released when empty
    healthy: bool = True  # the gateway marks dead backends
    # accounting ------------------------------------------------------------------------------------------
    num_requests: int = 0  # dispatched, not finished
    num_prefill: int = 0  # dispatched, first token not yet seen (includes KV in transfer for decode servers)
    prefill_tokens: int = 0  # input tokens of those
    num_decode: int = 0  # first token seen, not finished
    input_tokens: int = 0  # input tokens of every outstanding request (KV the prompts hold)
    expected_output: float = 0.0  # sum of expected output tokens of outstanding requests
    tier_counts: list[int] = field(default_factory=list)  # outstanding requests per request tier
    prefill_by_tier: list[int] = field(default_factory=list)  # awaiting-first-token prompt tokens per tier
    # awaiting-first-token requests as (TTFT deadline, rid, prompt tokens), earliest deadline first: the
    # queue an EDF server runs, so a policy can test a new prompt against every queued deadline
    prefill_queue: list[tuple[float, int, int]] = field(default_factory=list)
    prefill_version: int = 0  # bumped by every change of prefill_queue, so a policy may cache views of it
    last_change: float = 0.0  # last dispatch/finish/move; scale-down hysteresis reads it
    became_empty_at: float | None = 0.0
    dispatched_total: int = 0

    @property
    def tightest_tier(self) -> int | None:
        """Tier index of the tightest request on the server (it bounds the whole batch), None if empty."""
        for t, c in enumerate(self.tier_counts):
            if c:
                return t
        return None

    def routable(self, now: float) -> bool:
        return self.active and self.healthy and not self.draining and self.ready_at <= now


@dataclass(frozen=True, slots=True)
class ScaleAction:
    """Move a server between the idle pool and a tier (or from tier to tier)."""

    server: int
    activate: bool  # True: idle -> active (or tier move); False: active -> idle pool (must be empty)
    tier: int | None = None  # tier it joins when activated
    reason: str = ""
    # disaggregated, adaptive split: the role an idle server takes when activated (None: keep its role); only
    # an idle server may change role (it holds nothing)
    role: Role | None = None


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """A router's answer for one request. ``reason`` is recorded for every decision."""

    action: Action
    server: int | None = None
    reason: str = ""
    scale: tuple[ScaleAction, ...] = ()
    promoted: bool = False  # placed on a tighter tier's server (lazy promotion)

    @staticmethod
    def to(server: int, reason: str = "", scale: tuple[ScaleAction, ...] = (), promoted: bool = False):
        return RoutingDecision("dispatch", server, reason, scale, promoted)

    @staticmethod
    def wait(reason: str) -> RoutingDecision:
        return RoutingDecision("pending", None, reason)


class LoadIndex:
    """Active servers of one (tier, role) bucketed by outstanding requests.

    Why: "the most loaded server that can still take a request" and "the least loaded server" are asked on
    every arrival; scanning 1,000 servers each time would cost milliseconds. Buckets make both a walk from
    one end that usually stops at the first server. Within a bucket, servers keep insertion order (a dict
    used as an ordered set), so iteration is deterministic.
    """

    __slots__ = ("buckets", "cap", "nonempty", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap  # servers with more requests share the last bucket
        # values: the server's request count (read only in the overflow bucket, to honour ``below``)
        self.buckets: list[dict[int, int]] = [{} for _ in range(cap + 2)]
        # the indices of the non-empty buckets, ascending: a walk visits only those (with max_num_seqs 256
        # and a few servers, walking every bucket was most of the router's time per request)
        self.nonempty: list[int] = []
        self.size = 0

    def _b(self, n: int) -> int:
        return n if n <= self.cap else self.cap + 1

    def _put(self, b: int, sid: int, n: int) -> None:
        bucket = self.buckets[b]
        if not bucket:
            insort(self.nonempty, b)
        bucket[sid] = n

    def _take(self, b: int, sid: int) -> None:
        bucket = self.buckets[b]
        del bucket[sid]
        if not bucket:
            ne = self.nonempty
            del ne[bisect_left(ne, b)]

    def add(self, sid: int, n: int) -> None:
        self._put(self._b(n), sid, n)
        self.size += 1

    def remove(self, sid: int, n: int) -> None:
        self._take(self._b(n), sid)
        self.size -= 1

    def move(self, sid: int, old: int, new: int) -> None:
        bo, bn = self._b(old), self._b(new)
        if bo != bn:
            self._take(bo, sid)
            self._put(bn, sid, new)
        else:
            self.buckets[bn][sid] = new

    def descending(self, below: int | None = None) -> Iterator[int]:
        """Server ids from the most loaded down; ``below``: only servers with fewer requests than that."""
        ne = self.nonempty
        top = len(ne) if below is None else bisect_right(ne, self._b(below - 1))
        buckets = self.buckets
        cap = self.cap
        for b in ne[top - 1 :: -1] if top else ():  # a copy: the caller may move servers meanwhile
            if b > cap and below is not None:  # the overflow bucket mixes counts: filter them
                yield from [sid for sid, n in buckets[b].items() if n < below]
            else:
                yield from list(buckets[b])

    def ascending(self) -> Iterator[int]:
        buckets = self.buckets
        for b in list(self.nonempty):
            yield from list(buckets[b])


@dataclass(slots=True)
class FleetConfig:
    """Engine settings the policies need to predict a server (vLLM's defaults)."""

    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    output_len_prior: float = 256.0  # expected output before any request of a tier has finished
    kv_transfer_s_per_token: float = 0.0  # disaggregated: KV hand-off seconds per prompt token (0: co-located)


class FleetState:
    """Every server's ledger, the idle pool, tier ownership, pending queues and learned output lengths.

    Invariants (tested): per-server aggregates equal the sums over that server's ledger entries; a request is
    on at most one server; an inactive server holds no requests.
    """

    def __init__(
        self,
        tiers: TierSet,
        config: FleetConfig,
        model: IterationTimeModel,
        roles: Iterable[Role],
    ) -> None:
        self.tiers = tiers
        self.config = config
        self.model = model
        self.servers: list[ServerState] = []
        for sid, role in enumerate(roles):
            self.servers.append(
                ServerState(sid=sid, role=role, tier_counts=[0] * len(tiers), prefill_by_tier=[0] * len(tiers))
            )
        self.entries: dict[int, LedgerEntry] = {}
        self.pending: list[deque[RequestInfo]] = [deque() for _ in tiers]
        self.pending_decode: list[deque[RequestInfo]] = [deque() for _ in tiers]
        # arrivals and certain misses per tier over the last 30 s, written by the driver (core/outcomes.py)
        self.outcomes = TierOutcomes(len(tiers))
        self._out_sum = [0.0] * len(tiers)
        self._out_n = [0] * len(tiers)
        self.scaling_actions = 0
        self._index: dict[tuple[int | None, Role], LoadIndex] = {}
        # idle servers by role, kept by every write that activates, releases or re-roles a server, so a
        # policy can ask "is any server of this role idle?" in O(1) on every routing decision
        self._idle: dict[Role, int] = {}
        for s in self.servers:
            if s.active:
                self._idx(s).add(s.sid, s.num_requests)
            else:
                self._count_idle(s.role, +1)

    # ---- load index ---------------------------------------------------------------------------------------
    def _idx(self, s: ServerState) -> LoadIndex:
        key = (s.tier, s.role)
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = LoadIndex(self.config.max_num_seqs)
        return idx

    def index(self, tier: int | None, role: Role) -> LoadIndex:
        """Active servers owned by ``tier`` (None: the shared pool) with ``role``, by load."""
        key = (tier, role)
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = LoadIndex(self.config.max_num_seqs)
        return idx

    def set_active_all(self, now: float) -> None:
        """Start with every server active in the shared pool (untiered policies on a fixed fleet)."""
        for s in self.servers:
            if not s.active:
                s.active = True
                s.tier = None
                s.ready_at = now
                self._idx(s).add(s.sid, s.num_requests)
                self._count_idle(s.role, -1)

    def set_idle_all(self) -> None:
        """Start with every server in the idle pool (tiered policies scale up on demand)."""
        for s in self.servers:
            if s.active:
                self._idx(s).remove(s.sid, s.num_requests)
                s.active = False
                s.tier = None
                self._count_idle(s.role, +1)

    # ---- reads -----------------------------------------------------------------------------------------
    def expected_output(self, tier: int, max_tokens: int | None = None) -> float:
        """The tier's mean output length learned from finished requests (prior before any), <= max_tokens."""
        n = self._out_n[tier]
        mean = self._out_sum[tier] / n if n else self.config.output_len_prior
        return min(mean, max_tokens) if max_tokens else mean

    def active_servers(self, role: Role | None = None) -> list[ServerState]:
        return [s for s in self.servers if s.active and (role is None or s.role == role)]

    def tier_servers(self, tier: int | None, role: Role | None = None) -> list[ServerState]:
        return [s for s in self.servers if s.active and s.tier == tier and (role is None or s.role == role)]

    def idle_servers(self, role: Role | None = None) -> list[ServerState]:
        return [s for s in self.servers if not s.active and (role is None or s.role == role)]

    def _count_idle(self, role: Role, delta: int) -> None:
        self._idle[role] = self._idle.get(role, 0) + delta

    def num_idle(self, role: Role) -> int:
        """How many servers of ``role`` are in the idle pool (O(1); ``idle_servers`` lists them)."""
        return self._idle.get(role, 0)

    def num_pending(self) -> int:
        return sum(len(q) for q in self.pending) + sum(len(q) for q in self.pending_decode)

    # ---- writes (driver only) -----------------------------------------------------------------------------
    def on_dispatch(
        self, info: RequestInfo, sid: int, now: float, has_first_token: bool = False
    ) -> LedgerEntry:
        """``info`` was sent to server ``sid``.

        ``has_first_token``: a decode server receiving a request whose prefill ran elsewhere.
        """
        s = self.servers[sid]
        exp = self.expected_output(info.tier, info.max_tokens)
        e = LedgerEntry(info, sid, now, exp)
        if info.rid in self.entries:
            raise ValueError(f"request {info.rid} is already on server {self.entries[info.rid].server}")
        self.entries[info.rid] = e
        if s.active:
            self._idx(s).move(sid, s.num_requests, s.num_requests + 1)
        s.num_requests += 1
        s.input_tokens += info.input_tokens
        s.expected_output += exp
        s.tier_counts[info.tier] += 1
        s.dispatched_total += 1
        s.last_change = now
        s.became_empty_at = None
        if has_first_token:
            e.first_token_at = now
            e.tokens_out = 1
            s.num_decode += 1
        else:
            s.num_prefill += 1
            s.prefill_tokens += info.input_tokens
            s.prefill_by_tier[info.tier] += info.input_tokens
            insort(s.prefill_queue, (info.ttft_deadline, info.rid, info.input_tokens))
            s.prefill_version += 1
        return e

    @staticmethod
    def _dequeue_prefill(s: ServerState, info: RequestInfo) -> None:
        q = s.prefill_queue
        i = bisect_left(q, (info.ttft_deadline, info.rid, info.input_tokens))
        if i == len(q) or q[i][1] != info.rid:
            raise AssertionError(f"request {info.rid} is not in server {s.sid}'s prefill queue")
        del q[i]
        s.prefill_version += 1

    def on_first_token(self, rid: int, now: float) -> None:
        e = self.entries[rid]
        if e.first_token_at is not None:
            return
        s = self.servers[e.server]
        e.first_token_at = now
        e.tokens_out = max(e.tokens_out, 1)
        s.num_prefill -= 1
        s.prefill_tokens -= e.info.input_tokens
        s.prefill_by_tier[e.info.tier] -= e.info.input_tokens
        self._dequeue_prefill(s, e.info)
        s.num_decode += 1

    def on_finish(self, rid: int, now: float, output_tokens: int | None) -> LedgerEntry:
        """The request left its server (completed, failed or handed off).

        ``output_tokens`` (when it completed) teaches the tier's mean output length.
        """
        e = self.entries.pop(rid)
        s = self.servers[e.server]
        if s.active:
            self._idx(s).move(s.sid, s.num_requests, s.num_requests - 1)
        s.num_requests -= 1
        s.input_tokens -= e.info.input_tokens
        s.expected_output -= e.expected_output
        s.tier_counts[e.info.tier] -= 1
        if e.first_token_at is None:
            s.num_prefill -= 1
            s.prefill_tokens -= e.info.input_tokens
            s.prefill_by_tier[e.info.tier] -= e.info.input_tokens
            self._dequeue_prefill(s, e.info)
        else:
            s.num_decode -= 1
        s.last_change = now
        if s.num_requests == 0:
            s.became_empty_at = now
            s.expected_output = 0.0  # drop float drift
        if output_tokens is not None and output_tokens > 0:
            self._out_sum[e.info.tier] += output_tokens
            self._out_n[e.info.tier] += 1
        return e

    def on_tokens(self, rid: int, tokens: int) -> None:
        """``tokens`` output tokens of ``rid`` have streamed back (the gateway counts them; no-op if gone)."""
        e = self.entries.get(rid)
        if e is not None:
            e.tokens_out = tokens

    def mark_draining(self, sid: int, draining: bool = True) -> None:
        """Server ``sid`` takes no new work (``draining``) and is released once empty; or takes work again."""
        self.servers[sid].draining = draining

    def set_healthy(self, sid: int, healthy: bool) -> None:
        """The gateway's health check: an unhealthy server is never routable (``ServerState.routable``)."""
        self.servers[sid].healthy = healthy

    def apply_scale(self, a: ScaleAction, now: float, cold_start: float = 0.0, counted: bool = True) -> None:
        """Carry out a scale action. Deactivating a server that still holds requests is refused.

        ``counted=False``: the initial fleet, set up before the run, is not a scaling action."""
        s = self.servers[a.server]
        if s.active:
            self._idx(s).remove(s.sid, s.num_requests)
        if a.activate:
            if a.role is not None and a.role != s.role:
                if s.active or s.num_requests:
                    if s.active:
                        self._idx(s).add(s.sid, s.num_requests)
                    raise ValueError(f"server {s.sid} is active as {s.role}; only an idle server may become {a.role}")
                self._count_idle(s.role, -1)
                s.role = a.role
                self._count_idle(s.role, +1)
            if not s.active:
                s.ready_at = now + cold_start
                s.became_empty_at = now
                self._count_idle(s.role, -1)
            s.active = True
            s.draining = False
            s.tier = a.tier
            self._idx(s).add(s.sid, s.num_requests)
        else:
            if s.num_requests:
                self._idx(s).add(s.sid, s.num_requests)
                raise ValueError(f"server {s.sid} still holds {s.num_requests} requests; drain it first")
            if s.active:
                self._count_idle(s.role, +1)
            s.active = False
            s.tier = None
            s.draining = False
        s.last_change = now
        if counted:
            self.scaling_actions += 1
