"""Synthetic arrival processes: Poisson and gamma, as ``vllm bench serve`` draws them.

Inter-arrival gaps are gamma-distributed with shape ``burstiness`` and scale ``1 / (rate * burstiness)``,
so the mean gap is ``1 / rate`` whatever the burstiness, and the coefficient of variation of the gaps is
``1 / sqrt(burstiness)``: burstiness 1 is a Poisson process (exponential gaps, CV 1), below 1 is burstier,
above 1 is smoother.

The process starts at time 0 and the first request arrives after one gap, so the expected number of
arrivals in ``[0, T)`` is exactly ``rate * T``.

Common random numbers: gaps are drawn as ``standard_gamma(burstiness) / (rate * burstiness)``, so with
the same generator state the arrivals at rate ``r`` are exactly those at rate 1 divided by ``r``. A goodput
bisection that keeps its seed then compares rates on the same sample path, and its curve is monotone in
the rate rather than noisy. Drawing more gaps never changes the earlier ones (numpy's generators are
sequential), so the cut-off by duration does not disturb the sample path either.
"""

from __future__ import annotations

import math

import numpy as np

from polyserve.core.errors import ConfigError

# A guard against a typo (rate 1e9) silently allocating gigabytes: 50 M requests is ~1.3 GB of columns.
MAX_REQUESTS = 50_000_000


def arrival_times(
    rng: np.random.Generator,
    rate: float,
    burstiness: float = 1.0,
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
) -> np.ndarray:
    """Arrival times (float64 seconds, non-decreasing, all > 0) of a gamma renewal process.

    Stops at ``num_requests`` arrivals or at the first arrival at or after ``duration_s``, whichever comes
    first; at least one of the two must be given. Raises ``ConfigError`` on a rate or burstiness that is not
    a finite number > 0, or when the request would exceed ``MAX_REQUESTS``.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"arrival rate must be a finite number > 0 req/s, got {rate!r}")
    if not (math.isfinite(burstiness) and burstiness > 0):
        raise ConfigError(f"burstiness must be a finite number > 0 (1 = Poisson), got {burstiness!r}")
    if num_requests is None and duration_s is None:
        raise ConfigError("synthetic arrivals need a number of requests or a duration (or both)")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"duration must be a finite number of seconds > 0, got {duration_s!r}")
    if num_requests is not None and num_requests < 0:
        raise ConfigError(f"number of requests must be >= 0, got {num_requests!r}")

    expected = rate * duration_s if duration_s is not None else math.inf
    if num_requests is not None:
        expected = min(expected, num_requests)
    if expected > MAX_REQUESTS:
        raise ConfigError(
            f"this would generate about {expected:.3g} requests (limit {MAX_REQUESTS:,}); "
            "lower the rate, the duration or the number of requests"
        )
    scale = 1.0 / (rate * burstiness)
    if duration_s is None:
        assert num_requests is not None
        return np.cumsum(rng.standard_gamma(burstiness, size=num_requests)) * scale

    # Draw in chunks until the process passes the duration: the chunk size only decides how far ahead we
    # draw, never the values (the stream is sequential).
    cap = num_requests if num_requests is not None else MAX_REQUESTS + 1
    chunk = int(expected + 6 * math.sqrt(expected / burstiness) + 16)
    unit: list[np.ndarray] = []
    drawn = 0
    times = np.empty(0)
    while drawn < cap:
        unit.append(rng.standard_gamma(burstiness, size=min(chunk, cap - drawn)))
        drawn += len(unit[-1])
        times = np.cumsum(np.concatenate(unit)) * scale  # one cumsum over all gaps: chunking cannot matter
        if times[-1] >= duration_s:
            break
        if drawn > MAX_REQUESTS:
            raise ConfigError(f"more than {MAX_REQUESTS:,} arrivals in {duration_s} s; lower the rate")
        chunk *= 2
    return times[: np.searchsorted(times, duration_s, side="left")]
