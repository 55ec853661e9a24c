"""The result document (one JSON file) and where it is written.

Layout: run metadata (``date``, ``backend``, ``model_id``, ``base_url``, ``endpoint``, ``num_prompts``,
``request_rate``, ``burstiness``, ``max_concurrency``, ``seed``), the overall summary at the top level
(``polyserve.bench.report``), ``tiers`` per tier, ``errors`` by kind, ``tier_definitions``, ``workload``
(provenance from the workload builder) and ``requests`` (one record per request sent, for plots). Rates are
JSON numbers except an infinite one, written as the string ``"inf"``.

The default file name follows ``vllm bench serve``:
``polyserve-bench-<rate>qps[-concurrency<N>]-<model>-<YYYYmmdd-HHMMSS>.json``.
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


def build_result(cfg: BenchConfig, run: BenchRun, tiers: TierSet, workload_description: dict) -> dict:
    doc: dict[str, object] = {
        "date": run.started_at,
        "backend": "openai-chat" if cfg.chat else "openai",
        "model_id": run.model,
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
    }
    if cfg.goodput_slo_ms:
        doc["vllm_goodput_slo_ms"] = dict(cfg.goodput_slo_ms)
    doc.update(summarize(run.records, run.duration_s, tiers.names, cfg.percentiles, cfg.goodput_slo_ms))
    doc["tier_definitions"] = tiers.to_dict()
    doc["workload"] = workload_description
    doc["polyserve_version"] = __version__
    doc["requests"] = [r.to_dict() for r in run.records]
    return _clean(doc)  # type: ignore[return-value]


def default_filename(doc: dict, now: dt.datetime | None = None) -> str:
    rate = doc.get("request_rate")
    rate_s = "trace" if rate is None else ("inf" if rate == "inf" else f"{float(rate):g}")
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
