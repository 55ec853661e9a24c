"""The result document (one JSON file) and where it is written.

Layout, as ``vllm bench serve`` writes it where the two overlap: run metadata (``date``, ``backend``,
``endpoint_type``, ``model_id``, ``tokenizer_id``, ``num_prompts``, ``request_rate``, ``burstiness``,
``max_concurrency``, the ramp-up's ``ramp_up_strategy``/``ramp_up_start_rps``/``ramp_up_end_rps`` and
``rps_change_events``, and every ``--metadata KEY=VALUE`` as a top-level key), the overall summary at the top
level (``polyserve.bench.report``), ``latencies`` and ``queue_times`` (seconds, per request), and with
``--save-detailed`` vLLM's per-request lists, in request order: ``input_lens``, ``output_lens`` (0 for a
failed request), ``ttfts`` and ``itls`` (seconds; 0.0 and [] when no text came), ``start_times`` (the
client's clock, seconds), ``generated_texts`` and ``errors`` (``""`` for a completed request, else
``"<kind>: <detail>"``). Ours besides: ``tiers`` (the same summary per tier), ``error_kinds``,
``tier_definitions``, ``workload`` (provenance from the workload builder), ``token_counting`` and ``requests``
(one record per request sent, for plots). Rates are JSON numbers except an infinite one, written as the string
``"inf"``.

The default file name follows ``vllm bench serve``:
``polyserve-bench-<rate>qps[-concurrency<N>]-<model>-<YYYYmmdd-HHMMSS>.json``, or with a ramp-up
``polyserve-bench-ramp-up-<strategy>-<start>qps-<end>qps[-concurrency<N>]-<model>-<YYYYmmdd-HHMMSS>.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from polyserve import __version__
from polyserve.bench.config import BenchConfig
from polyserve.bench.report import summarize
from polyserve.bench.runner import BenchRun
from polyserve.core.tiers import TierSet


def _rate(cfg: BenchConfig) -> float | str | None:
    """``"inf"``, the rate, or None (a replayed trace's own timestamps, or a ramp-up)."""
    if cfg.rate_is_infinite:
        return "inf"
    return cfg.request_rate  # None: a replayed trace's own timestamps


def _clean(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


TOKEN_COUNTING = ("no tokenizer is loaded (--tokenizer is recorded only): prompt and output lengths are the "
                  "server's usage.prompt_tokens / usage.completion_tokens when it sends them, else prompt words "
                  "(whitespace-separated) and text chunks received")


def build_result(cfg: BenchConfig, run: BenchRun, tiers: TierSet, workload_description: dict) -> dict:
    doc: dict[str, object] = dict(cfg.metadata)  # vLLM: metadata first; the run's own keys win
    doc.update({
        "date": run.started_at,
        "backend": cfg.backend_name,
        "endpoint_type": cfg.backend_name,
        "model_id": run.model,
        "model_name": run.model_name or run.model,
        "tokenizer_id": cfg.tokenizer or run.model,
        "token_counting": TOKEN_COUNTING,
        "base_url": cfg.base_url,
        "endpoint": cfg.endpoint,
        "dataset_name": cfg.dataset_name,
        "num_prompts": len(run.records) + run.not_sent,
        "request_rate": _rate(cfg),
        "burstiness": cfg.burstiness,
        "max_concurrency": cfg.max_concurrency,
        "seed": cfg.seed,
        "not_sent": run.not_sent,
        "percentile_metrics": ",".join(cfg.percentile_metrics),
        "metric_percentiles": ",".join(f"{p:g}" for p in cfg.percentiles),
        "num_warmups": cfg.num_warmups,
    })
    if cfg.ramp_up_strategy is not None:
        doc.update(ramp_up_strategy=cfg.ramp_up_strategy, ramp_up_start_rps=cfg.ramp_up_start_rps,
                   ramp_up_end_rps=cfg.ramp_up_end_rps, rps_change_events=run.rps_change_events)
    if cfg.goodput_slo_ms:
        doc["goodput_slo_ms"] = dict(cfg.goodput_slo_ms)
    doc.update(summarize(run.records, run.duration_s, tiers.names, cfg.percentiles, cfg.goodput_slo_ms))
    doc.update(per_request_lists(run, cfg.save_detailed))
    doc["tier_definitions"] = tiers.to_dict()
    doc["workload"] = workload_description
    doc["polyserve_version"] = __version__
    doc["requests"] = [r.to_dict() for r in run.records]
    return _clean(doc)  # type: ignore[return-value]


def per_request_lists(run: BenchRun, detailed: bool) -> dict[str, list]:
    """vLLM's per-request lists (seconds), in request order; the long ones only when ``detailed``."""
    out: dict[str, list] = {
        "latencies": [r.e2el_ms / 1e3 if r.ok and r.e2el_ms is not None else 0.0 for r in run.records],
        "queue_times": [round(r.send_s - r.scheduled_s, 6) for r in run.records],
    }
    if not detailed:
        return out
    outcomes = run.outcomes or [None] * len(run.records)
    ttfts, itls, starts, texts, errors = [], [], [], [], []
    for r, o in zip(run.records, outcomes, strict=True):
        ttfts.append(r.ttft_ms / 1e3 if r.ttft_ms is not None else 0.0)
        itls.append([g / 1e3 for g in r.itl_ms])
        starts.append(o.send if o is not None else r.send_s)
        texts.append("".join(o.text) if o is not None else "")
        errors.append("" if r.ok else f"{r.error}: {r.error_detail}")
    out.update(input_lens=[r.input_tokens for r in run.records],
               output_lens=[r.output_tokens if r.ok else 0 for r in run.records],
               ttfts=ttfts, itls=itls, start_times=starts, generated_texts=texts, errors=errors)
    return out


def default_filename(doc: dict, now: dt.datetime | None = None) -> str:
    rate = doc.get("request_rate")
    rate_s = "trace" if rate is None else ("inf" if rate == "inf" else f"{float(rate):g}")
    if doc.get("ramp_up_strategy"):
        rate_s = f"ramp-up-{doc['ramp_up_strategy']}-{doc['ramp_up_start_rps']}qps-{doc['ramp_up_end_rps']}"
    conc = f"-concurrency{doc['max_concurrency']}" if doc.get("max_concurrency") else ""
    model = str(doc.get("model_id", "model")).rstrip("/").split("/")[-1].replace(" ", "_") or "model"
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"polyserve-bench-{rate_s}qps{conc}-{model}-{stamp}.json"


def save_result(doc: dict, result_dir: str | Path = ".", filename: str | None = None) -> Path:
    """Write ``doc`` as ``result_dir/filename`` (the directory is created; the file appears whole)."""
    d = Path(result_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / (filename or default_filename(doc))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
