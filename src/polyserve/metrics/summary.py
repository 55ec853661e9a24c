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
    STATUS_NAMES,
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


def summarize(workload, rec: RequestRecords, *, window: tuple[float, float] | None = None) -> dict[str, object]:
    """Attainment and latency figures, overall and per tier.

    ``window``: only requests arriving in ``[start, end)`` seconds count (goodput runs exclude warm-up).
    """
    arrived = rec.status != NOT_ARRIVED
    if window is not None:
        arrived &= (workload.arrival_s >= window[0]) & (workload.arrival_s < window[1])
    d = derived_columns(workload, rec)
    status = rec.status
    tiers = workload.tiers

    def block(mask: np.ndarray) -> dict[str, object]:
        n = int(mask.sum())
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
        }

    overall = block(arrived)
    per_tier = {t.name: block(arrived & (workload.tier == i)) for i, t in enumerate(tiers)}
    counts = {name: int((arrived & (status == k)).sum()) for k, name in enumerate(STATUS_NAMES) if name != "not_arrived"}
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
        "tpot_ms": overall["tpot_ms"],
        "e2e_ms": overall["e2e_ms"],
        "scheduling_delay_ms": percentiles_ms(d["sched"][arrived & ~np.isnan(d["sched"])]),
        "preemptions": int(rec.preemptions[arrived].sum()),
        "promoted": int(rec.promoted[arrived].sum()),
        "tiers": per_tier,
    }
    return out


def tier_attainments(workload, rec: RequestRecords, window: tuple[float, float] | None = None) -> dict[str, float]:
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


def write_requests_csv(path: str | Path, workload, rec: RequestRecords) -> int:
    """One row per arrived request, in request order. Seconds; empty cell = not applicable. Returns rows."""
    d = derived_columns(workload, rec)
    arrived = np.nonzero(rec.status != NOT_ARRIVED)[0]
    names = workload.tiers.names
    arr = workload.arrival_s
    tiers = workload.tier.tolist()
    inp = workload.input_tokens.tolist()
    out = workload.output_tokens.tolist()
    ttft_slo = (workload.ttft_ms / 1e3).tolist()
    tpot_slo = (workload.tpot_ms / 1e3).tolist()
    status = rec.status.tolist()
    sched = rec.scheduled.tolist()
    pdone = rec.prefill_done.tolist()
    fin = rec.finish.tolist()
    tslack = rec.ttft_slack.tolist()
    wslack = rec.worst_slack.tolist()
    gen = rec.generated.tolist()
    pre = rec.preemptions.tolist()
    inst = rec.instance.tolist()
    pinst = rec.prefill_instance.tolist()
    promo = rec.promoted.tolist()
    ttft = d["ttft"].tolist()
    tpot = d["tpot"].tolist()
    e2e = d["e2e"].tolist()
    sdelay = d["sched"].tolist()
    arr_l = arr.tolist()
    reasons = rec.reason
    big = int(NO_SLACK)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        rows = []
        for i in arrived.tolist():
            st = status[i]
            done = st in (ATTAINED, VIOLATED)
            ts = tslack[i]
            ws = wslack[i]
            worst = min(ts if ts != big else big, ws)
            rows.append(
                (
                    i,
                    names[tiers[i]],
                    _fmt(arr_l[i]),
                    inp[i],
                    out[i],
                    _fmt(sched[i] / NS) if sched[i] >= 0 else "",
                    _fmt(pdone[i] / NS) if pdone[i] >= 0 else "",
                    _fmt(fin[i] / NS) if done else "",
                    _fmt(e2e[i]),
                    _fmt(ttft[i]),
                    _fmt(sdelay[i]),
                    _fmt(e2e[i] - ttft[i]) if done else "",
                    _fmt(tpot[i]),
                    _fmt(ttft_slo[i]),
                    _fmt(tpot_slo[i]),
                    _fmt(ts / NS) if ts != big else "",
                    _fmt(worst / NS) if worst != big else "",
                    int(ts != big and ts >= 0),
                    int(done and ws >= 0),
                    int(st == ATTAINED),
                    STATUS_NAMES[st],
                    gen[i],
                    pre[i],
                    inst[i] if inst[i] >= 0 else "",
                    pinst[i] if pinst[i] >= 0 else "",
                    int(promo[i]),
                    reasons.get(i, ""),
                )
            )
            if len(rows) >= 8192:
                w.writerows(rows)
                rows.clear()
        w.writerows(rows)
    return int(arrived.size)


__all__ = ["CSV_COLUMNS", "UNFINISHED", "percentiles_ms", "summarize", "tier_attainments", "write_requests_csv"]
