"""From per-request records to the benchmark's result: per tier and overall counts, attainment, goodput,
latency statistics; vLLM's key names where they overlap, with vLLM's meanings.

- ``completed`` / ``failed``: every request sent ends as one or the other; ``error_kinds``: failures by kind.
- ``attainment``: DSLO-attained requests / requests sent (a failed request is not attained).
- ``dslo_request_goodput``: DSLO-attained requests per second of benchmark duration (ours, per tier);
  ``request_goodput``: vLLM's ``--goodput`` definition (completed requests whose TTFT, TPOT and E2E are each
  within the given limits, per second), null unless ``--goodput`` is given (as vLLM).
- Latency statistics over completed requests: ``mean_``, ``median_``, ``std_`` and ``p<P>_`` for each of
  ttft, tpot, itl (every gap of every request), e2el, in ms; ``P`` the requested percentiles plus 50 and 99.
  A statistic of no values is null.
- ``max_output_tokens_per_s`` and ``max_concurrent_requests`` (vLLM's): over completed requests, the most
  text chunks received in one whole second (seconds counted from the first send), and the most requests in
  flight at one time (send to end, half-open intervals).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from polyserve.bench.config import METRICS
from polyserve.bench.metrics import RequestRecord


def pkey(p: float) -> str:
    """Percentile label as vLLM writes it: 99 -> "p99", 99.9 -> "p99.9"."""
    return f"p{int(p)}" if float(p).is_integer() else f"p{p:g}"


def latency_stats(records: Sequence[RequestRecord], percentiles: Sequence[float]) -> dict[str, float | None]:
    ok = [r for r in records if r.ok]
    values: dict[str, list[float]] = {
        "ttft": [r.ttft_ms for r in ok if r.ttft_ms is not None],
        "tpot": [r.tpot_ms for r in ok if r.tpot_ms is not None],
        "itl": [g for r in ok for g in r.itl_ms],
        "e2el": [r.e2el_ms for r in ok if r.e2el_ms is not None],
    }
    out: dict[str, float | None] = {}
    for m in METRICS:
        v = np.asarray(values[m], dtype=np.float64)
        has = v.size > 0
        out[f"mean_{m}_ms"] = float(v.mean()) if has else None
        out[f"median_{m}_ms"] = float(np.median(v)) if has else None
        out[f"std_{m}_ms"] = float(v.std()) if has else None
        for p in percentiles:
            out[f"{pkey(p)}_{m}_ms"] = float(np.percentile(v, p)) if has else None
    return out


def peaks(records: Sequence[RequestRecord]) -> tuple[float, int]:
    """vLLM's (max_output_tokens_per_s, max_concurrent_requests) over the completed requests."""
    ok = [r for r in records if r.ok and r.ttft_ms is not None and r.e2el_ms is not None]
    if not ok:
        return 0.0, 0
    t0 = min(r.send_s for r in ok)
    buckets: Counter[int] = Counter()
    events: list[tuple[float, int]] = []
    for r in ok:
        t = r.send_s + r.ttft_ms / 1e3  # type: ignore[operator]
        buckets[int(t - t0)] += 1
        for gap in r.itl_ms:
            t += gap / 1e3
            buckets[int(t - t0)] += 1
        events += [(r.send_s, 1), (r.send_s + r.e2el_ms / 1e3, -1)]  # type: ignore[operator]
    events.sort()  # at a tie, an end (-1) before a start: half-open intervals
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return float(max(buckets.values())), peak


def _vllm_good(r: RequestRecord, slo: dict[str, float]) -> bool:
    got = {"ttft": r.ttft_ms, "tpot": r.tpot_ms, "e2el": r.e2el_ms}
    for k, limit in slo.items():
        v = got[k]
        if k == "tpot" and v is None:
            continue  # a one-token answer has no TPOT to miss
        if v is None or v > limit:
            return False
    return True


def group_summary(
    records: Sequence[RequestRecord],
    duration_s: float,
    percentiles: Sequence[float],
    goodput_slo_ms: dict[str, float] | None,
) -> dict[str, object]:
    completed = [r for r in records if r.ok]
    attained = sum(1 for r in records if r.attained)
    sent = len(records)
    dur = max(duration_s, 1e-9)
    out_tokens = sum(r.output_tokens for r in completed)
    in_tokens = sum(r.input_tokens for r in completed)
    good = sum(1 for r in completed if _vllm_good(r, goodput_slo_ms)) if goodput_slo_ms else None
    tokens_per_s, concurrency = peaks(records)
    doc: dict[str, object] = {
        "completed": len(completed),
        "failed": sent - len(completed),
        "attained": attained,
        "attainment": attained / sent if sent else None,
        "dslo_request_goodput": attained / dur,
        "request_goodput": None if good is None else good / dur,
        "request_throughput": len(completed) / dur,
        "output_throughput": out_tokens / dur,
        "total_token_throughput": (in_tokens + out_tokens) / dur,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
    }
    doc["max_output_tokens_per_s"] = tokens_per_s
    doc["max_concurrent_requests"] = concurrency
    doc.update(latency_stats(records, percentiles))
    doc["error_kinds"] = dict(sorted(Counter(r.error for r in records if r.error is not None).items()))
    return doc


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    tier_names: Sequence[str],
    percentiles: Sequence[float],
    goodput_slo_ms: dict[str, float] | None = None,
) -> dict[str, object]:
    """Overall figures at the top level, and the same per tier under ``tiers`` (every tier of the mix, in
    tightest-first order, even with no request)."""
    doc = group_summary(records, duration_s, percentiles, goodput_slo_ms)
    doc["duration"] = duration_s
    tiers: dict[str, object] = {}
    for name in tier_names:
        rs = [r for r in records if r.tier == name]
        t = group_summary(rs, duration_s, percentiles, goodput_slo_ms)
        if rs:
            t["ttft_slo_ms"] = rs[0].ttft_slo_ms if len({r.ttft_slo_ms for r in rs}) == 1 else None
            t["tpot_slo_ms"] = rs[0].tpot_slo_ms
        tiers[name] = t
    doc["tiers"] = tiers
    return doc
