"""The requests a benchmark sends: when, with what prompt, how many tokens back, and under which SLO tier.

Built from the shared workload code, so a benchmark and a simulation of the same flags send the same requests:
- ``random``: ``vllm bench serve``'s random dataset: ``--num-prompts`` requests whose prompt lengths are
  uniform in ``[floor(L(1-r)), ceil(L(1+r))]`` for ``L = --random-input-len``, ``r = --random-range-ratio``
  (output lengths alike, at least 1), after a fixed prefix of ``--random-prefix-len`` words shared by every
  prompt (the same prefix each time: a prefix cache can reuse it);
- ``sharegpt``: a local ShareGPT JSON file (``--dataset-path``; nothing is downloaded), as vLLM samples it:
  conversations with at least two turns, shuffled by ``--seed``; the first turn is the prompt, the second's
  length the output length (``--sharegpt-output-len`` overrides it); kept only if the prompt has 4 to 1,024
  tokens, the output at least 4 (unless overridden) and both together at most 2,048; repeated (seeded) when
  there are fewer than ``--num-prompts`` (``--no-oversample``: not);
- ``trace``: a trace file the simulator reads (``read_trace`` formats), replayed on the wall clock at its
  recorded times, or re-timed to ``--request-rate`` (``inf``: all at once); its lengths, and its tier column
  if it has one.
Arrivals (random, sharegpt): ``--request-rate`` (Poisson, or gamma with ``--burstiness``; ``inf``: all at
once), or a ramp (``--ramp-up-strategy linear|exponential`` from ``--ramp-up-start-rps`` to
``--ramp-up-end-rps``: request ``i`` of ``n`` is scheduled at the rate ``start + (end - start) * i/(n-1)``, or
``start * (end/start)^(i/(n-1))``, its gap gamma-drawn at that rate, as vLLM does).
Each request draws its tier from the mix (``--tiers`` file, ``--tier-weights``; by default the shipped tiers
in an equal mix) with the workload's seeded stream, and carries that tier's SLOs: TTFT
``ttft_ms + ttft_ms_per_input_token * prompt tokens`` and TPOT ``tpot_ms``.

Token counts, offline. No tokenizer is loaded (``--tokenizer`` is recorded, never downloaded): a prompt's
length is its number of whitespace-separated words, which is exactly the emulated engine's count and about a
real tokenizer's (English runs ~1.3 tokens per word on Llama's). What was actually served is taken from the
server's ``usage`` when it sends it (``polyserve bench`` always asks for it). Random prompts are words drawn
(seeded) from a list of common short English words, different from prompt to prompt so a real engine's
prefix cache cannot shortcut them (beyond ``--random-prefix-len``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from polyserve.bench.config import DEFAULT_NUM_PROMPTS, BenchConfig
from polyserve.core.errors import InputError
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
PREFIX_STREAM = 101  # the random prefix
SHAREGPT_STREAM = 102  # the ShareGPT shuffle and oversampling
RAMP_STREAM = 103  # the gaps of a ramp-up


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
    rate: float | None = None  # a ramp-up: the request rate it was scheduled at (req/s)


def load_tiers(cfg: BenchConfig) -> TierSet:
    from polyserve.data import DEFAULT_TIERS

    tiers = TierSet.from_toml(cfg.tiers_path or DEFAULT_TIERS)
    if cfg.tier_weights is not None:
        tiers = tiers.with_weights(cfg.tier_weights)
    return tiers


def random_bounds(length: int, ratio: float) -> tuple[int, int]:
    """vllm bench serve's random lengths: ``[floor(L(1-r)), ceil(L(1+r))]``, at least 1."""
    return max(1, math.floor(length * (1 - ratio))), max(1, math.ceil(length * (1 + ratio)))


def workload_spec(cfg: BenchConfig, num: int | None = None) -> WorkloadSpec:
    """The ``WorkloadSpec`` behind the flags (an infinite rate, or a ramp, is built at 1 req/s and re-timed).
    ``num``: the number of requests (sharegpt: the samples), else from the flags."""
    rate = None if cfg.request_rate is None or cfg.rate_is_infinite else cfg.request_rate
    if cfg.dataset_name in ("random", "sharegpt"):
        if num is None:
            num = cfg.num_prompts
            if num is None and (cfg.duration_s is None or cfg.ramp_up_strategy is not None):
                num = DEFAULT_NUM_PROMPTS

        def lengths(n: int) -> str:
            lo, hi = random_bounds(n, cfg.random_range_ratio)
            return f"fixed:{n}" if lo == hi else f"uniform:{lo}:{hi}"

        sharegpt = cfg.dataset_name == "sharegpt"  # its lengths come from the file
        timed = not cfg.rate_is_infinite and cfg.ramp_up_strategy is None
        return WorkloadSpec(
            rate=rate if rate is not None else 1.0,
            arrival="gamma" if cfg.burstiness != 1.0 else "poisson",
            burstiness=cfg.burstiness,
            num_requests=num,
            duration_s=cfg.duration_s if timed else None,
            input_len="fixed:1" if sharegpt else lengths(cfg.random_input_len),
            output_len="fixed:1" if sharegpt else lengths(cfg.random_output_len),
        )
    return WorkloadSpec(
        trace=cfg.dataset_path,
        trace_format=cfg.trace_format,
        arrival="trace",
        rate=rate,
        num_requests=cfg.num_prompts,
        duration_s=None if cfg.rate_is_infinite else cfg.duration_s,
    )


@dataclass(frozen=True)
class ShareGPTSample:
    prompt: str
    input_tokens: int  # words
    output_tokens: int  # the completion's words, or --sharegpt-output-len


def sharegpt_samples(path: str, num: int, seed: int, output_len: int | None = None,
                     oversample: bool = True) -> list[ShareGPTSample]:  # fmt: skip
    """``num`` samples of a ShareGPT file (vllm bench serve's rules, counted in words; see the module doc).
    Raises ``InputError`` naming the file (and the entry) when it cannot be read or has no usable sample."""
    shape = '[{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}, ...]'
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(path, None, "file", f"cannot read the ShareGPT file: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, None, "file", f"not a JSON file ({e}); a ShareGPT file is {shape}") from None
    if not isinstance(doc, list):
        raise InputError(path, None, "file", f"a ShareGPT file is a JSON list {shape}, got {type(doc).__name__}")
    entries = []
    for i, e in enumerate(doc):
        conv = e.get("conversations") if isinstance(e, dict) else None
        if not isinstance(conv, list) or len(conv) < 2:
            continue  # vLLM keeps entries with at least two turns
        turns = []
        for k, t in enumerate(conv[:2]):
            v = t.get("value") if isinstance(t, dict) else None
            if not isinstance(v, str):
                raise InputError(path, None, f"entry {i}: conversations[{k}].value",
                                 f"must be a string, got {json.dumps(t)[:120]}")
            turns.append(v)
        entries.append((turns[0], turns[1]))
    rng = np.random.default_rng([seed, SHAREGPT_STREAM])
    order = rng.permutation(len(entries))
    out: list[ShareGPTSample] = []
    for k in order.tolist():
        if len(out) >= num:
            break
        prompt, completion = entries[k]
        p = len(prompt.split())
        o = output_len if output_len is not None else len(completion.split())
        if p < 4 or (output_len is None and o < 4) or p > 1024 or p + o > 2048:
            continue
        out.append(ShareGPTSample(prompt, p, o))
    if not out:
        raise InputError(path, None, "conversations", f"no usable conversation ({len(entries)} with two turns; a "
                         "sample needs a prompt of 4 to 1,024 words, an answer of at least 4, at most 2,048 together)")
    if oversample and len(out) < num:
        extra = rng.integers(0, len(out), num - len(out))
        out += [out[j] for j in extra.tolist()]
    return out


def ramp_up_times(cfg: BenchConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(send times from the start, the rate each was scheduled at) of a ramp-up: request ``i`` waits a
    gamma gap (shape ``--burstiness``, mean ``1/rate_i``) after request ``i-1``; the first goes at once."""
    lo, hi = float(cfg.ramp_up_start_rps or 1), float(cfg.ramp_up_end_rps or 1)
    frac = np.arange(n) / max(n - 1, 1)
    rates = lo + (hi - lo) * frac if cfg.ramp_up_strategy == "linear" else lo * (hi / lo) ** frac
    b = cfg.burstiness
    gaps = np.random.default_rng([seed, RAMP_STREAM]).gamma(b, 1.0 / (rates * b))
    at = np.concatenate([[0.0], np.cumsum(gaps[1:])]) if n else np.zeros(0)
    return at, rates


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

    Raises ``ConfigError``/``InputError`` for flags the workload code rejects or a bad trace or ShareGPT file.
    """
    tiers = tiers or load_tiers(cfg)
    samples = None
    if cfg.dataset_name == "sharegpt":
        assert cfg.dataset_path is not None
        num = cfg.num_prompts or DEFAULT_NUM_PROMPTS
        samples = sharegpt_samples(cfg.dataset_path, num, cfg.seed, cfg.sharegpt_output_len, not cfg.no_oversample)
        wl = build_workload(workload_spec(cfg, len(samples)), tiers, cfg.seed)
        samples = samples[: len(wl)]  # --duration may have cut the arrivals
        wl = _with_lengths(wl, [x.input_tokens for x in samples], [x.output_tokens for x in samples])
        wl.description["lengths"] = {"source": "sharegpt", "path": cfg.dataset_path, "counted_in": "words",
                                     "output": cfg.sharegpt_output_len or "the answers' lengths"}
        texts = [x.prompt for x in samples]
    else:
        wl = build_workload(workload_spec(cfg), tiers, cfg.seed)
        prefix = ""
        if cfg.random_prefix_len:
            rng = np.random.default_rng([cfg.seed, PREFIX_STREAM])
            prefix = " ".join(VOCAB[rng.integers(0, len(VOCAB), cfg.random_prefix_len)].tolist())
            wl = _with_lengths(wl, (wl.input_tokens + cfg.random_prefix_len).tolist(), wl.output_tokens.tolist())
            wl.description["lengths"]["prefix"] = cfg.random_prefix_len
        body = prompts(wl.input_tokens - cfg.random_prefix_len, cfg.seed)
        texts = [f"{prefix} {b}" if prefix else b for b in body]
    rates: np.ndarray | None = None
    if cfg.ramp_up_strategy is not None:
        at, rates = ramp_up_times(cfg, len(wl), cfg.seed)
        wl.description["arrival"] = {"process": f"ramp-up {cfg.ramp_up_strategy}", "start_rps":
                                     cfg.ramp_up_start_rps, "end_rps": cfg.ramp_up_end_rps,
                                     "burstiness": cfg.burstiness}
    elif cfg.rate_is_infinite or not len(wl):
        at = np.zeros(len(wl))
    else:  # the first request goes at once (as vllm bench serve sends it), the others keep their gaps
        at = wl.arrival_s - wl.arrival_s[0]
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
            None if rates is None else float(rates[i]),
        )
        for i in range(len(wl))
    ]
    return reqs, wl


def _with_lengths(wl: Workload, inputs: list[int], outputs: list[int]) -> Workload:
    """``wl`` with other lengths, its TTFT SLOs recomputed for them (they grow with the prompt)."""
    inp = np.asarray(inputs, dtype=np.int64)
    ttft = np.array([wl.tiers[int(t)].ttft_slo_ms(int(n)) for t, n in zip(wl.tier, inp, strict=True)],
                    dtype=np.float64)
    return replace(wl, input_tokens=inp, output_tokens=np.asarray(outputs, dtype=np.int64), ttft_ms=ttft)
