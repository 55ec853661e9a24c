"""Per-request results, stored as numpy columns indexed like the workload (no per-request objects survive).

Statuses: ``attained`` (every token by its deadline), ``violated`` (finished, some token late), ``shed``
(dropped by the router with a reason), ``rejected`` (could never be served, e.g. tighter than every tier, or
longer than an instance's KV), ``unfinished`` (still queued or running when the run stopped). Every arrived
request has exactly one status (the conservation invariant). ``timed_out`` (disaggregated): the first token
streamed, then no decode seat came within the seat timeout and the stream ended with an error; its TTFT
counts in the tails, it is neither completed nor attained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATUS_NAMES = ("unfinished", "attained", "violated", "shed", "rejected", "not_arrived", "timed_out")
UNFINISHED, ATTAINED, VIOLATED, SHED, REJECTED, NOT_ARRIVED, TIMED_OUT = range(7)
NO_SLACK = np.iinfo(np.int64).max  # worst_slack when a request has no token after the first


@dataclass
class RequestRecords:
    """Outcome columns for ``n`` requests. Times are integer ns on the simulation clock (-1 = never)."""

    n: int

    def __post_init__(self) -> None:
        n = self.n
        self.status = np.full(n, NOT_ARRIVED, dtype=np.int8)
        self.first_token = np.full(n, -1, dtype=np.int64)
        self.finish = np.full(n, -1, dtype=np.int64)
        self.scheduled = np.full(n, -1, dtype=np.int64)
        self.prefill_done = np.full(n, -1, dtype=np.int64)
        self.ttft_slack = np.full(n, NO_SLACK, dtype=np.int64)
        self.worst_slack = np.full(n, NO_SLACK, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int32)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.instance = np.full(n, -1, dtype=np.int32)  # decode (or co-located) server
        self.prefill_instance = np.full(n, -1, dtype=np.int32)  # disaggregated prefill server
        self.promoted = np.zeros(n, dtype=np.bool_)
        self.reason: dict[int, str] = {}  # shed/rejected reasons, by index

    def arrived_mask(self) -> np.ndarray:
        return self.status != NOT_ARRIVED

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.status, minlength=len(STATUS_NAMES))
        return {name: int(c[i]) for i, name in enumerate(STATUS_NAMES)}
