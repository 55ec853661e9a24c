"""The simulator's per-request state (mutable, slotted: one object per live request, dropped at finish).

Token timing is tracked lazily. While a request decodes on an instance, it gains one token per iteration, so
its token count is ``g0 + (C - c0)`` where ``C`` is the instance's iteration counter and ``(c0, g0)`` the
counter and count when it joined the decode batch. Its slack at iteration ``j`` is ``K + j*s - E(j)``
(``E(j)`` the iteration's end time, ``s`` its TPOT, ``K`` a per-request constant), so the worst slack over
its life is ``K`` plus a range minimum of the instance's ``j*s - E(j)``; see ``SlackTrack``.
"""

from __future__ import annotations

from polyserve.core.fleet import RequestInfo

# states
NEW, WAITING, PREFILLING, DECODING, TRANSFER, PENDING, DONE = range(7)
BIG = 1 << 62


class SimRequest:
    __slots__ = (
        "K",
        "arrival",
        "c0",
        "counted",
        "finish_time",
        "first_token_time",
        "g0",
        "generated",
        "index",
        "info",
        "input_tokens",
        "instances",
        "output_tokens",
        "preemptions",
        "prefill_done_time",
        "prefill_target",
        "prefilled",
        "rid",
        "scheduled_time",
        "state",
        "tier",
        "tpot",
        "ttft",
        "ttft_slack",
        "worst_slack",
    )

    def __init__(
        self,
        rid: int,
        index: int,
        arrival: int,
        input_tokens: int,
        output_tokens: int,
        tier: int,
        ttft: int,
        tpot: int,
    ) -> None:
        self.rid = rid
        self.index = index  # row in the workload / results arrays
        self.arrival = arrival  # ns
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.tier = tier
        self.ttft = ttft  # ns (SLO, relative to arrival)
        self.tpot = tpot  # ns
        self.state = NEW
        self.prefilled = 0  # tokens of prefill_target computed on the current instance
        self.prefill_target = input_tokens  # prompt (+ generated tokens after a preemption: recompute)
        self.generated = 0  # tokens emitted, as of the last anchor (exact while not decoding)
        self.c0 = 0
        self.g0 = 0
        self.K = 0
        self.ttft_slack: int | None = None  # ns; deadline - first token time
        self.worst_slack = BIG  # ns; min over tokens 2.. of deadline - emit time
        self.first_token_time = -1
        self.finish_time = -1
        self.scheduled_time = -1  # first admitted into a batch
        self.prefill_done_time = -1
        self.preemptions = 0
        self.instances: list[int] = []
        self.info: RequestInfo | None = None
        self.counted = False  # its SLO miss was counted for early stopping

    def deadline(self, k: int) -> int:
        """Deadline (ns) of output token ``k``, 1-based."""
        return self.arrival + self.ttft + (k - 1) * self.tpot


class SlackTrack:
    """Suffix minimum of ``h(j) = j*s - E(j)`` over an instance's iterations, for one TPOT ``s``.

    A monotonic stack: points ``(j, h)`` with ``j`` and ``h`` strictly increasing. Appending pops every
    point whose ``h`` is not below the new one (it can never again be a suffix minimum). The minimum of ``h``
    over ``[a, now]`` is the ``h`` of the first point with ``j >= a``. Appending is amortised O(1), a query is
    O(log n). Requests join and leave a batch only between segments (a single iteration, or a fast-path run
    of equal iterations), so every query range covers whole segments and one point per segment, at its start,
    holding the segment's minimum, is exact. Within a run of equal iterations ``h`` is linear, so that
    minimum is at one of the run's two ends.
    """

    __slots__ = ("hs", "js", "s")

    def __init__(self, s: int) -> None:
        self.s = s
        self.js: list[int] = []
        self.hs: list[int] = []

    def push(self, j: int, e: int) -> None:
        """Add iteration ``j`` that ended at ``e``."""
        self.push_h(j, j * self.s - e)

    def push_h(self, j: int, h: int) -> None:
        """Add a point ``(j, h)``: a segment starting at iteration ``j`` whose minimum ``h`` is ``h``.

        Queries only ever start at segment starts (requests join and leave between segments), so one
        point per segment is exact.
        """
        hs = self.hs
        while hs and hs[-1] >= h:
            hs.pop()
            self.js.pop()
        hs.append(h)
        self.js.append(j)

    def min_from(self, a: int) -> int | None:
        """min h(j) for j >= a, or None if no point there."""
        from bisect import bisect_left

        i = bisect_left(self.js, a)
        return self.hs[i] if i < len(self.hs) else None

    def trim_before(self, a: int) -> None:
        """Forget points with ``j < a`` (no live request can ask for them)."""
        from bisect import bisect_left

        i = bisect_left(self.js, a)
        if i:
            del self.js[:i]
            del self.hs[:i]
