"""Time units of the simulator.

The virtual clock counts integer nanoseconds. Integers make sums exact, so a run of *k* identical iterations
computed at once (``start + k * step``) lands on exactly the same instant as *k* single steps, and the same
seed always gives byte-identical output. Reports convert to seconds (per-request CSV) or milliseconds
(summary JSON) only at the edge.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_US = 1_000


def s_to_ns(seconds: float) -> int:
    """Seconds -> integer nanoseconds (rounded to nearest)."""
    return round(seconds * NS_PER_S)


def ms_to_ns(ms: float) -> int:
    return round(ms * NS_PER_MS)


def ns_to_s(ns: int) -> float:
    return ns / NS_PER_S


def ns_to_ms(ns: int) -> float:
    return ns / NS_PER_MS
