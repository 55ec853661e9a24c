"""Per-request metrics from raw stream timings: TTFT, ITL, TPOT, E2E and the deadline-SLO check.

Definitions (times from the request's send time, as ``vllm bench serve`` measures them):
- TTFT: first chunk carrying text; ITL: the gap between consecutive text chunks; E2E (``e2el``): the end of
  the stream (``[DONE]``); TPOT: ``(E2E - TTFT) / (output tokens - 1)`` (vLLM's definition; none for a
  one-token output). Output tokens: the server's ``usage.completion_tokens`` if it sent usage, else the
  number of text chunks.
- DSLO (the paper's deadline SLO): text chunk *k* (1-based) is due at ``TTFT_SLO + (k-1) * TPOT_SLO`` after
  sending; a request is **attained** iff it completed and every chunk met its deadline. Slack is cumulative: a
  request ahead of schedule banks it. A chunk is taken as one token; a server that packs several tokens in
  one chunk is judged against the deadline of the chunk's index, which is earlier than its tokens' own, so
  the check never passes a request that missed.
A failed request is never attained; its partial timings are kept in its record but left out of the latency
statistics (as vLLM does).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from polyserve.bench.client import Outcome
from polyserve.bench.dataset import BenchRequest


def dslo_check(chunk_times_s: list[float], ttft_slo_s: float, tpot_slo_s: float) -> tuple[bool, float | None]:
    """(every chunk on time, worst slack in s) for chunk times relative to the send time."""
    worst: float | None = None
    for k, t in enumerate(chunk_times_s):
        slack = ttft_slo_s + k * tpot_slo_s - t
        if worst is None or slack < worst:
            worst = slack
    return (worst is not None and worst >= 0), worst


@dataclass
class RequestRecord:
    """One request's result, as stored in the result JSON (``requests``) and used for plots. Times in ms."""

    index: int
    tier: str
    scheduled_s: float  # when it was due to be sent, from the benchmark start
    send_s: float  # when it was sent (later than scheduled under --max-concurrency or a busy client)
    input_tokens: int
    output_tokens: int  # usage.completion_tokens, else text chunks received
    ok: bool
    error: str | None  # failure kind (see polyserve.bench.client), None if completed
    error_detail: str
    ttft_ms: float | None
    tpot_ms: float | None
    e2el_ms: float | None
    itl_ms: list[float]
    ttft_slo_ms: float
    tpot_slo_ms: float
    attained: bool
    worst_slack_ms: float | None  # min over chunks of deadline - arrival (negative: missed)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 4)


def request_record(req: BenchRequest, o: Outcome, start: float) -> RequestRecord:
    """Metrics of one request from its raw ``Outcome``; ``start``: the benchmark's start on the same clock."""
    rel = [t - o.send for t in o.chunk_times]
    ttft = rel[0] if rel else None
    itl = [b - a for a, b in itertools.pairwise(rel)]
    e2el = (o.end - o.send) if o.end is not None else None
    ok = o.error is None
    out = o.usage_output_tokens if (ok and o.usage_output_tokens is not None) else len(rel)
    tpot = None
    if ok and ttft is not None and e2el is not None and out > 1:
        tpot = (e2el - ttft) / (out - 1)
    met, worst = dslo_check(rel, req.ttft_slo_ms / 1e3, req.tpot_slo_ms / 1e3)
    return RequestRecord(
        index=req.index,
        tier=req.tier,
        scheduled_s=round(req.at_s, 6),
        send_s=round(o.send - start, 6),
        input_tokens=o.usage_prompt_tokens if o.usage_prompt_tokens is not None else req.input_tokens,
        output_tokens=out,
        ok=ok,
        error=o.error,
        error_detail=o.error_detail,
        ttft_ms=_ms(ttft),
        tpot_ms=_ms(tpot),
        e2el_ms=_ms(e2el) if ok else None,
        itl_ms=[round(g * 1e3, 4) for g in itl],
        ttft_slo_ms=req.ttft_slo_ms,
        tpot_slo_ms=req.tpot_slo_ms,
        attained=ok and met,
        worst_slack_ms=_ms(worst),
    )
