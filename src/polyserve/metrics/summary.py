"""Turn per-request records into the summary (JSON-able dict) and the per-request CSV.

Definitions (README "Definitions"): a request is *attained* when every output token met its deadline
``arrival + TTFT + (k-1) * TPOT``; attainment = attained / arrived, per tier and overall, where a request
still unfinished at the end counts as not attained. TTFT counts from arrival (router pending time and every
queue included); TPOT of a request is ``(finish - first token) / (output tokens - 1)``, as vLLM reports it.

Summary times are milliseconds (keys end ``_ms``); the CSV is in seconds with Vidur's column names where they
overlap. Wall-clock figures never enter either file, so the same inputs give byte-identical outputs.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from polyserve.metrics.records import (
    ATTAINED,
    NO_SLACK,
    NOT_ARRIVED,
    REJECTED,
    SHED,
    STATUS_NAMES,
    TIMED_OUT,
    UNFINISHED,
    VIOLATED,
    RequestRecords,
)

NS = 1e9
PCTS = (50, 90, 99)


def percentiles_ms(values_s: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/mean in ms of an array in seconds; None when empty (JSON null)."""
    if values_s.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    q = np.percentile(values_s, PCTS) * 1e3
    out: dict[str, float | None] = {f"p{p}": round(float(v), 4) for p, v in zip(PCTS, q, strict=True)}
    out["mean"] = round(float(values_s.mean() * 1e3), 4)
    return out


TAIL_PCTS = (50.0, 99.0, 99.9)


def tail_ms(values_s: np.ndarray) -> dict[str, float | None]:
    """p50/p99/p99.9 in ms (None when empty): the tail figures of *all* requests."""
    keys = ("p50", "p99", "p99.9")
    if values_s.size == 0:
        return dict.fromkeys(keys)
    q = np.percentile(values_s, TAIL_PCTS) * 1e3
    return {k: round(float(v), 4) for k, v in zip(keys, q, strict=True)}


def ttft_all(workload, rec: RequestRecords, end_s: float | None) -> np.ndarray:
    """TTFT in seconds of every request that was served or is still waiting, attained or not (NaN for shed
    and rejected requests, which got an explicit error instead of a token). A request with no first token by
    the run's end ``end_s`` counts with the time it had waited by then (a lower bound on its TTFT), so a
    request left waiting is never dropped from the tail; with ``end_s`` None it counts as infinite."""
    arr = workload.arrival_s
    ft = np.where(rec.first_token >= 0, rec.first_token / NS - arr, np.nan)
    waiting = (rec.first_token < 0) & (rec.status != SHED) & (rec.status != REJECTED) & (rec.status != NOT_ARRIVED)
    if waiting.any():
        ft[waiting] = (end_s - arr[waiting]) if end_s is not None else np.inf
    return ft


def derived_columns(workload, rec: RequestRecords) -> dict[str, np.ndarray]:
    """Per-request latencies in seconds (NaN where undefined)."""
    arr = workload.arrival_s
    ft = np.where(rec.first_token >= 0, rec.first_token / NS, np.nan)
    fin_ok = (rec.status == ATTAINED) | (rec.status == VIOLATED)
    fin = np.where(fin_ok, rec.finish / NS, np.nan)
    ttft = ft - arr
    e2e = fin - arr
    out = workload.output_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (fin - ft) / np.maximum(out - 1, 1), np.nan)
    sched = np.where(rec.scheduled >= 0, rec.scheduled / NS - arr, np.nan)
    return {"ttft": ttft, "tpot": tpot, "e2e": e2e, "sched": sched, "finished": fin_ok}


def summarize(
    workload, rec: RequestRecords, *, window: tuple[float, float] | None = None, end_s: float | None = None
) -> dict[str, object]:
    """Attainment and latency figures, overall and per tier.

    ``window``: only requests arriving in ``[start, end)`` seconds count (goodput runs exclude warm-up).
    ``end_s``: when the run ended (for the TTFT of requests still waiting then, ``ttft_all``).

    ``ttft_ms`` is over completed requests (as vLLM reports it); ``ttft_ms_all`` is over every request that
    was not shed or rejected, attained or not, waiting ones included: the tail a user sees.
    ``ttft_over_slo_p99`` is the p99 of TTFT / the request's TTFT SLO over the same requests (the tail bound
    of the headline goodput compares it with 2). ``shed_fraction``: shed / requests; ``timed_out_fraction``:
    requests whose stream ended with an error after the first token (no decode seat in time) / requests.
    """
    arrived = rec.status != NOT_ARRIVED
    if window is not None:
        arrived &= (workload.arrival_s >= window[0]) & (workload.arrival_s < window[1])
    d = derived_columns(workload, rec)
    status = rec.status
    tiers = workload.tiers
    t_all = ttft_all(workload, rec, end_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_norm = t_all / (workload.ttft_ms / 1e3)
    served = ~np.isnan(t_all)

    def block(mask: np.ndarray) -> dict[str, object]:
        n = int(mask.sum())
        m_all = mask & served
        p99n = float(np.percentile(t_norm[m_all], 99)) if m_all.any() else None
        att = int((mask & (status == ATTAINED)).sum())
        fin = mask & d["finished"]
        ttft_ok = mask & (rec.ttft_slack != NO_SLACK) & (rec.ttft_slack >= 0)
        tpot_ok = fin & (rec.worst_slack >= 0)
        return {
            "requests": n,
            "attained": att,
            "attainment": round(att / n, 6) if n else None,
            "completed": int(fin.sum()),
            "ttft_met": int(ttft_ok.sum()),
            "tpot_met": int(tpot_ok.sum()),
            "ttft_ms": percentiles_ms(d["ttft"][fin]),
            "tpot_ms": percentiles_ms(d["tpot"][fin & ~np.isnan(d["tpot"])]),
            "e2e_ms": percentiles_ms(d["e2e"][fin]),
            "ttft_ms_all": tail_ms(t_all[m_all]),
            "ttft_over_slo_p99": None if p99n is None else (round(p99n, 6) if math.isfinite(p99n) else math.inf),
            "shed_fraction": round(int((mask & (status == SHED)).sum()) / n, 6) if n else None,
            "timed_out_fraction": round(int((mask & (status == TIMED_OUT)).sum()) / n, 6) if n else None,
        }

    overall = block(arrived)
    per_tier = {t.name: block(arrived & (workload.tier == i)) for i, t in enumerate(tiers)}
    counts = {
        name: int((arrived & (status == k)).sum())
        for k, name in enumerate(STATUS_NAMES)
        if name != "not_arrived"
    }
    sel = np.nonzero(arrived)[0]
    if sel.size:
        first = float(workload.arrival_s[sel].min())
        fins = rec.finish[sel]
        last = float(fins.max()) / NS if (fins >= 0).any() else first
        span = max(last - first, 1e-9)
    else:
        span = 0.0
    out: dict[str, object] = {
        "requests": overall["requests"],
        "attained": overall["attained"],
        "attainment": overall["attainment"],
        "status": counts,
        "throughput_rps": round(overall["completed"] / span, 6) if span else None,
        "goodput_rps": round(overall["attained"] / span, 6) if span else None,
        "ttft_ms": overall["ttft_ms"],
        "ttft_ms_all": overall["ttft_ms_all"],
        "ttft_over_slo_p99": overall["ttft_over_slo_p99"],
        "shed_fraction": overall["shed_fraction"],
        "timed_out_fraction": overall["timed_out_fraction"],
        "tpot_ms": overall["tpot_ms"],
        "e2e_ms": overall["e2e_ms"],
        "scheduling_delay_ms": percentiles_ms(d["sched"][arrived & ~np.isnan(d["sched"])]),
        "preemptions": int(rec.preemptions[arrived].sum()),
        "promoted": int(rec.promoted[arrived].sum()),
        "tiers": per_tier,
    }
    return out


def tier_attainments(
    workload, rec: RequestRecords, window: tuple[float, float] | None = None
) -> dict[str, float]:
    """Attainment per tier (NaN for a tier with no requests) — the cheap part of ``summarize``."""
    arrived = rec.status != NOT_ARRIVED
    if window is not None:
        arrived &= (workload.arrival_s >= window[0]) & (workload.arrival_s < window[1])
    att = arrived & (rec.status == ATTAINED)
    out = {}
    for i, t in enumerate(workload.tiers):
        m = workload.tier == i
        n = int((arrived & m).sum())
        out[t.name] = (int((att & m).sum()) / n) if n else math.nan
    return out


CSV_COLUMNS = (
    "request_id",
    "tier",
    "arrived_at",
    "request_num_prefill_tokens",
    "request_num_decode_tokens",
    "scheduled_at",
    "prefill_completed_at",
    "completed_at",
    "request_e2e_time",
    "prefill_e2e_time",
    "request_scheduling_delay",
    "decode_time",
    "tpot",
    "ttft_slo",
    "tpot_slo",
    "ttft_slack",
    "worst_slack",
    "ttft_met",
    "tpot_met",
    "attained",
    "status",
    "tokens_generated",
    "request_num_restarts",
    "instance",
    "prefill_instance",
    "promoted",
    "reason",
)


def _fmt(x: float) -> str:
    return "" if x != x else repr(round(x, 9))  # NaN -> empty cell


def _secs(values: np.ndarray, keep: np.ndarray | None = None) -> list:
    """Seconds with 9 decimals (1 ns); NaN or not kept -> None (an empty CSV cell).

    Fixed-point ``%.9f`` is about twice as fast as float ``repr`` here, which matters for a million rows.
    """
    blank = np.isnan(values) if keep is None else ~keep | np.isnan(values)
    out = ["%.9f" % x for x in np.where(blank, 0.0, values).tolist()]
    if blank.any():
        for i in np.nonzero(blank)[0].tolist():
            out[i] = None  # type: ignore[call-overload]
    return out


def _ns_secs(values: np.ndarray, keep: np.ndarray | None = None) -> list:
    """Integer ns as seconds; negative (never happened) or not kept -> None."""
    keep = values >= 0 if keep is None else keep
    return _secs(values / NS, keep)


def write_requests_csv(path: str | Path, workload, rec: RequestRecords, chunk: int = 65_536) -> int:
    """One row per arrived request, in request order. Seconds; empty cell = not applicable. Returns rows.

    Columns are converted to text a chunk at a time, so a million requests never exist as a million row
    objects at once.
    """
    d = derived_columns(workload, rec)
    arrived = np.nonzero(rec.status != NOT_ARRIVED)[0]
    names = np.array(workload.tiers.names, dtype=object)
    status_names = np.array(STATUS_NAMES, dtype=object)
    big = NO_SLACK
    done_all = (rec.status == ATTAINED) | (rec.status == VIOLATED)
    worst_all = np.minimum(rec.ttft_slack, rec.worst_slack)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for start in range(0, arrived.size, chunk):
            idx = arrived[start : start + chunk]
            done = done_all[idx]
            ts = rec.ttft_slack[idx]
            ws = rec.worst_slack[idx]
            worst = worst_all[idx]
            e2e = d["e2e"][idx]
            ttft = d["ttft"][idx]
            inst = rec.instance[idx].tolist()
            pinst = rec.prefill_instance[idx].tolist()
            reasons = [rec.reason.get(i, "") for i in idx.tolist()] if rec.reason else [""] * idx.size
            cols = [
                idx.tolist(),
                names[workload.tier[idx].astype(np.intp)].tolist(),
                _secs(workload.arrival_s[idx]),
                workload.input_tokens[idx].tolist(),
                workload.output_tokens[idx].tolist(),
                _ns_secs(rec.scheduled[idx]),
                _ns_secs(rec.prefill_done[idx]),
                _ns_secs(rec.finish[idx], done),
                _secs(e2e),
                _secs(ttft),
                _secs(d["sched"][idx]),
                _secs(np.where(done, e2e - ttft, np.nan)),
                _secs(d["tpot"][idx]),
                _secs(workload.ttft_ms[idx] / 1e3),
                _secs(workload.tpot_ms[idx] / 1e3),
                _ns_secs(ts, ts != big),
                _ns_secs(worst, worst != big),
                ((ts != big) & (ts >= 0)).astype(np.int8).tolist(),
                (done & (ws >= 0)).astype(np.int8).tolist(),
                (rec.status[idx] == ATTAINED).astype(np.int8).tolist(),
                status_names[rec.status[idx].astype(np.intp)].tolist(),
                rec.generated[idx].tolist(),
                rec.preemptions[idx].tolist(),
                [v if v >= 0 else None for v in inst],
                [v if v >= 0 else None for v in pinst],
                rec.promoted[idx].astype(np.int8).tolist(),
                reasons,
            ]
            w.writerows(zip(*cols, strict=True))
    return int(arrived.size)


__all__ = [
    "CSV_COLUMNS",
    "UNFINISHED",
    "percentiles_ms",
    "summarize",
    "tier_attainments",
    "write_requests_csv",
]
