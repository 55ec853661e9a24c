"""The requests a benchmark sends: when, with what prompt, how many tokens back, and under which SLO tier.

Built from the shared workload code, so a benchmark and a simulation of the same flags send the same requests:
- ``random``: ``vllm bench serve``'s random dataset: ``--num-prompts`` requests of ``--random-input-len``
  prompt and ``--random-output-len`` output tokens (uniform within ``--random-range-ratio``), arriving as a
  Poisson (or gamma, ``--burstiness``) process at ``--request-rate``, or all at once (``inf``);
- ``trace``: a trace file the simulator reads (``read_trace`` formats), replayed on the wall clock at its
  recorded times, or re-timed to ``--request-rate`` (``inf``: all at once); its lengths, and its tier column
  if it has one.
Each request draws its tier from the mix (``--tiers`` file, ``--tier-weights``; by default the shipped tiers
in an equal mix) with the workload's seeded stream, and carries that tier's SLOs: TTFT
``ttft_ms + ttft_ms_per_input_token * prompt tokens`` and TPOT ``tpot_ms``.

Prompts are words drawn (seeded) from a list of common short English words: one word per token on the
emulated engine, about one token per word on a real tokenizer, and different from prompt to prompt so a real
engine's prefix cache cannot shortcut them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyserve.bench.config import BenchConfig
from polyserve.core.tiers import TierSet
from polyserve.workload import Workload, WorkloadSpec, build_workload

VOCAB = np.array([
    "time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world", "school",
    "state", "family", "student", "group", "country", "problem", "hand", "part", "place", "case", "week",
    "company", "system", "program", "question", "work", "government", "number", "night", "point", "home",
    "water", "room", "mother", "area", "money", "story", "fact", "month", "lot", "right", "study", "book",
    "eye", "job", "word", "business", "issue", "side", "kind", "head", "house", "service", "friend",
    "father", "power", "hour", "game", "line", "end", "member", "law", "car", "city", "community", "name",
    "team", "minute", "idea", "kid", "body", "back", "parent", "face", "others", "level", "office", "door",
    "health", "person", "art", "war", "history", "party", "result", "change", "morning", "reason",
    "research", "girl", "guy", "moment", "air", "teacher", "force", "education",
])  # fmt: skip
PROMPT_STREAM = 100  # seed stream of the prompt words (the workload builder uses streams 0-4)


@dataclass(frozen=True)
class BenchRequest:
    index: int
    at_s: float  # when to send it, seconds after the benchmark starts
    prompt: str
    input_tokens: int  # prompt length as intended (words)
    output_tokens: int  # max_tokens sent
    tier: str
    ttft_slo_ms: float
    tpot_slo_ms: float


def load_tiers(cfg: BenchConfig) -> TierSet:
    from polyserve.data import DEFAULT_TIERS

    tiers = TierSet.from_toml(cfg.tiers_path or DEFAULT_TIERS)
    if cfg.tier_weights is not None:
        tiers = tiers.with_weights(cfg.tier_weights)
    return tiers


def workload_spec(cfg: BenchConfig) -> WorkloadSpec:
    """The ``WorkloadSpec`` behind the flags (an infinite rate is built at 1 req/s, then sent at once)."""
    rate = None if cfg.request_rate is None or cfg.rate_is_infinite else cfg.request_rate
    if cfg.dataset_name == "random":
        num = cfg.num_prompts
        if num is None and cfg.duration_s is None:
            from polyserve.bench.config import DEFAULT_NUM_PROMPTS

            num = DEFAULT_NUM_PROMPTS
        r = cfg.random_range_ratio

        def lengths(n: int) -> str:
            lo, hi = max(1, int(n * (1 - r))), max(1, int(n * (1 + r)))
            return f"fixed:{n}" if lo == hi else f"uniform:{lo}:{hi}"

        return WorkloadSpec(
            rate=rate if rate is not None else 1.0,
            arrival="gamma" if cfg.burstiness != 1.0 else "poisson",
            burstiness=cfg.burstiness,
            num_requests=num,
            duration_s=None if cfg.rate_is_infinite else cfg.duration_s,
            input_len=lengths(cfg.random_input_len),
            output_len=lengths(cfg.random_output_len),
        )
    return WorkloadSpec(
        trace=cfg.dataset_path,
        trace_format=cfg.trace_format,
        arrival="trace",
        rate=rate,
        num_requests=cfg.num_prompts,
        duration_s=None if cfg.rate_is_infinite else cfg.duration_s,
    )


def prompts(input_tokens: np.ndarray, seed: int) -> list[str]:
    """One prompt of ``n`` words per entry (seeded; the same seed gives the same prompts)."""
    rng = np.random.default_rng([seed, PROMPT_STREAM])
    words = VOCAB[rng.integers(0, len(VOCAB), int(input_tokens.sum()))]
    out = []
    start = 0
    for n in input_tokens.tolist():
        out.append(" ".join(words[start : start + n].tolist()))
        start += n
    return out


def build_requests(cfg: BenchConfig, tiers: TierSet | None = None) -> tuple[list[BenchRequest], Workload]:
    """The requests in send order, and the ``Workload`` they came from (its ``description`` is provenance).

    Raises ``ConfigError``/``InputError`` for flags the workload code rejects or a bad trace file.
    """
    tiers = tiers or load_tiers(cfg)
    wl = build_workload(workload_spec(cfg), tiers, cfg.seed)
    # the first request goes at once (as vllm bench serve sends it), the others keep their gaps
    at = np.zeros(len(wl)) if cfg.rate_is_infinite or not len(wl) else wl.arrival_s - wl.arrival_s[0]
    texts = prompts(wl.input_tokens, cfg.seed)
    names = wl.tiers.names
    reqs = [
        BenchRequest(
            i,
            float(at[i]),
            texts[i],
            int(wl.input_tokens[i]),
            int(wl.output_tokens[i]),
            names[int(wl.tier[i])],
            float(wl.ttft_ms[i]),
            float(wl.tpot_ms[i]),
        )
        for i in range(len(wl))
    ]
    return reqs, wl
