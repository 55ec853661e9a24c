"""Per-tier arrivals and certain misses over a sliding window: the fleet's view of who is losing requests.

Why: a router placing one request sees only servers' ledgers, never what became of the requests it could not
place. Under overload that is the figure that matters for every-tier goodput: which tier is losing requests
now, and is it losing more than another? The driver (simulator and gateway alike) writes here; a policy
reads (``FleetState.outcomes``), e.g. lazy promotion refusing to give a worse-off tier's capacity to a
better-off one (``policy/polyserve.py``, ``fair_promotion``).

A *certain miss* is a request the driver knows cannot be attained the moment it knows it: shed (in the
router, on arrival or in an engine's queue), rejected, overflowed, or found a lost cause under ``serve`` (its
first token, or disaggregated its second, can no longer be on time). A request that is served and then
misses a later token's deadline is not counted: no one knows until it finishes, and the driver does not
track token deadlines. So ``miss_share`` is a lower bound on a tier's miss rate, exact when every miss is a
shed (the co-located runs measured in ``docs/results.md``: every miss was a router shed).

Pure and clock-free: ``now`` comes in as an argument; a ``now`` earlier than one already seen counts as that
latest time (the window never moves back).
Memory is bounded by the window: what is older is dropped on every write and query.
"""

from __future__ import annotations

from collections import deque


class TierOutcomes:
    """Per-tier counts of arrivals and certain misses in the last ``window_s`` seconds; O(1) amortised per
    write and per query (each timestamp is appended once and dropped once)."""

    def __init__(self, num_tiers: int, window_s: float = 30.0) -> None:
        if num_tiers < 1:
            raise ValueError(f"TierOutcomes needs at least one tier, got {num_tiers}")
        if not window_s > 0:
            raise ValueError(f"TierOutcomes window_s must be > 0, got {window_s!r}")
        self.window_s = window_s
        self._arrivals: list[deque[float]] = [deque() for _ in range(num_tiers)]
        # [0]: misses of the first token (co-located, or a disaggregated prefill); [1]: of a disaggregated
        # decode's second token, which the tier's decode servers (not the shared prefill pool) answer for
        self._misses: tuple[list[deque[float]], list[deque[float]]] = (
            [deque() for _ in range(num_tiers)], [deque() for _ in range(num_tiers)])
        self._last = float("-inf")
        self.total_arrivals = [0] * num_tiers
        # per phase, as the windows: a disaggregated request found a lost cause under ``serve`` in its prefill
        # and again in its decode is one miss of each phase, so each total counts a request at most once
        self.total_misses = [0] * num_tiers  # of the first token
        self.total_decode_misses = [0] * num_tiers  # of a disaggregated decode's second token

    def _advance(self, now: float) -> float:
        # a stale ``now`` (a live host that read its clock before another call went through) counts as the
        # latest time seen: the window never moves back, and the deques stay sorted
        if now > self._last:
            self._last = now
        return self._last

    def _trim(self, q: deque[float], now: float) -> int:
        horizon = now - self.window_s
        while q and q[0] < horizon:
            q.popleft()
        return len(q)

    def arrived(self, tier: int, now: float) -> None:
        """A new request of ``tier`` reached the driver (once per request, whatever becomes of it)."""
        now = self._advance(now)
        q = self._arrivals[tier]
        q.append(now)
        self._trim(q, now)
        self.total_arrivals[tier] += 1

    def missed(self, tier: int, now: float, decode: bool = False) -> None:
        """A request of ``tier`` is certainly missed: shed, rejected, overflowed, or a lost cause (``decode``:
        a disaggregated decode whose second token can no longer be on time)."""
        now = self._advance(now)
        q = self._misses[decode][tier]
        q.append(now)
        self._trim(q, now)
        (self.total_decode_misses if decode else self.total_misses)[tier] += 1

    def counts(self, tier: int, now: float, decode: bool = False) -> tuple[int, int]:
        """(arrivals, certain misses of the first token, or with ``decode`` of a decode's second token) of
        ``tier`` in the window ending at ``now``."""
        now = self._advance(now)
        return self._trim(self._arrivals[tier], now), self._trim(self._misses[decode][tier], now)

    def miss_share(self, tier: int, now: float, decode: bool = False) -> float:
        """Certain misses (of the first token; ``decode``: of a decode's second) over arrivals of ``tier`` in
        the window (0 with no arrivals).

        Both are counted by when they happened, so a burst's sheds can briefly outnumber the window's
        arrivals; the share is capped at 1."""
        a, m = self.counts(tier, now, decode)
        return min(1.0, m / a) if a else 0.0
