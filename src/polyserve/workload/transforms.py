"""Transforms of a recorded arrival sequence: window, re-time, tile, cut.

Each takes sorted arrival times (seconds) and returns new ones plus, where rows are dropped or repeated,
the trace-row index of each output request, so the builder can carry lengths and tiers along with
``column[index]``. None of them reorders arrivals, so sorted input gives sorted output.

Definitions the rest of PolyServe relies on:

- **mean rate** of ``n`` arrivals spanning ``span = t[n-1] - t[0]`` seconds is ``(n - 1) / span``: ``n``
  arrivals bound ``n - 1`` gaps, and ``span / (n - 1)`` is the mean gap. (``n / span`` would overstate a
  short trace's rate.) Undefined for fewer than two arrivals or a zero span.
- **re-time** to ``rate``: multiply every timestamp by ``mean_rate / rate``. The trace's shape (bursts, lulls,
  the order and relative spacing of requests) is kept; only the clock runs faster or slower, and afterwards
  the mean rate is exactly ``rate``.
- **tile** to ``duration``: lay copies of the trace end to end, copy *k* shifted by ``k * period`` with
  ``period = span + span / (n - 1)`` (the span plus one mean gap), so copies never overlap and the seam
  looks like an ordinary gap; as many copies as it takes to reach ``duration``, then cut.
- **cut** to ``duration``: keep arrivals in ``[0, duration)``.
- **window** from ``start``: drop arrivals before ``start`` and shift the rest by ``-start``, so a recorded
  window ``[start, start + duration)`` replays as ``[0, duration)``.
"""

from __future__ import annotations

import math

import numpy as np

from polyserve.core.errors import ConfigError
from polyserve.workload.arrivals import MAX_REQUESTS


def mean_rate(arrival_s: np.ndarray) -> float | None:
    """``(n - 1) / span`` requests per second; None if undefined (see the module docstring)."""
    n = len(arrival_s)
    if n < 2:
        return None
    span = float(arrival_s[-1] - arrival_s[0])
    return (n - 1) / span if span > 0 else None


def retime(arrival_s: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """Scale timestamps so the mean rate becomes ``rate``. Returns ``(times, factor)``.

    ``ConfigError`` if the trace has no defined mean rate (one row, or every row at the same instant).
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"target rate must be a finite number > 0 req/s, got {rate!r}")
    current = mean_rate(arrival_s)
    if current is None:
        raise ConfigError(
            f"cannot re-time a trace of {len(arrival_s)} request(s) that all arrive at one instant: "
            "it has no mean rate to scale"
        )
    factor = current / rate
    return arrival_s * factor, factor


def tile_period(arrival_s: np.ndarray) -> float:
    """``span + span / (n - 1)``: the shift between consecutive copies when tiling."""
    current = mean_rate(arrival_s)
    if current is None:
        raise ConfigError(
            f"cannot tile a trace of {len(arrival_s)} request(s) that all arrive at one instant: "
            "its copies would have no length"
        )
    return float(arrival_s[-1] - arrival_s[0]) + 1.0 / current


def tile(arrival_s: np.ndarray, duration_s: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Repeat the trace end to end until ``duration_s`` is covered, then cut to ``[0, duration_s)``.

    Returns ``(times, row_index, copies, period)``; ``copies`` is the number of copies laid (the last may be
    partly cut). A trace that already covers the duration is just cut.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"tile duration must be a finite number of seconds > 0, got {duration_s!r}")
    period = tile_period(arrival_s)
    first = float(arrival_s[0])
    copies = max(1, math.ceil((duration_s - first) / period))
    if copies * len(arrival_s) > MAX_REQUESTS:
        raise ConfigError(
            f"tiling to {duration_s} s would lay {copies:.3g} copies of {len(arrival_s)} rows "
            f"(over {MAX_REQUESTS:,} requests); shorten the duration or lower the rate"
        )
    shifts = np.arange(copies, dtype=np.float64) * period
    times = (arrival_s[None, :] + shifts[:, None]).ravel()
    rows = np.tile(np.arange(len(arrival_s), dtype=np.int64), copies)
    keep = cut(times, duration_s)
    return times[:keep], rows[:keep], copies, period


def cut(arrival_s: np.ndarray, duration_s: float) -> int:
    """How many leading arrivals fall in ``[0, duration_s)`` (arrivals must be sorted)."""
    return int(np.searchsorted(arrival_s, duration_s, side="left"))


def window(arrival_s: np.ndarray, start_s: float) -> tuple[np.ndarray, int]:
    """Drop arrivals before ``start_s`` and shift the rest to start the clock at ``start_s``.

    Returns ``(times, first_row)``: the rows kept are ``first_row:``.
    """
    first = int(np.searchsorted(arrival_s, start_s, side="left"))
    return arrival_s[first:] - start_s, first
