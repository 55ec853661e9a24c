"""The benchmark client: load an OpenAI-compatible endpoint with SLO tiers; report per-tier attainment.

bench
=====

``polyserve bench`` speaks ``vllm bench serve``'s flags and adds what no public benchmark reports: per-SLO
tier attainment and goodput, with the SLO of each request sent as headers (``x-slo-ttft-ms``,
``x-slo-tpot-ms``, ``x-polyserve-tier``), so a SLO-aware gateway can act on them::

    polyserve bench --base-url http://127.0.0.1:8000 --model llama-3.1-8b --dataset-name random \\
        --num-prompts 500 --request-rate 20 --random-input-len 1024 --random-output-len 128 \\
        --tiers tiers.toml --save-result --result-dir results/
    polyserve bench plot results/polyserve-bench-20qps-llama-3.1-8b-20250101-120000.json

Workload. ``--dataset-name random``: prompts of ``--random-input-len`` words (one token per word on the
emulated engine, about one on a real tokenizer; ``--random-range-ratio`` spreads the lengths), exactly
``--random-output-len`` tokens back (``max_tokens`` with ``ignore_eos``). ``--dataset-name trace
--dataset-path FILE``: any trace the simulator reads (Azure, Vidur, BurstGPT CSV, Mooncake JSONL;
``--trace-format`` to force one), replayed on the wall clock at its recorded times, or re-timed by
``--request-rate``. Arrivals: ``--request-rate`` req/s, Poisson, or gamma with ``--burstiness``; ``inf``
(the random default) sends everything at once; ``--max-concurrency`` caps requests in flight. Tiers: each
request draws one from the mix (``--tiers FILE``, ``--tier-weights t20=1,t30=2``; default: the shipped
t20/t30/t50/t100 tiers, equal mix; a trace's tier column wins unless ``--tier-weights`` is given). Everything
random is seeded by ``--seed``.

Measured per request (from the stream, on the client's clock, from the moment it is sent): TTFT (first text
chunk), every inter-token gap (ITL), TPOT = (E2E - TTFT) / (tokens - 1), E2E (``[DONE]``), output tokens
(``usage`` if sent, else chunks), and the deadline SLO: chunk *k* is due at ``TTFT_SLO + (k-1) * TPOT_SLO``;
a request is attained if every chunk was on time (early tokens bank slack).

Reported per tier and overall: ``completed``, ``failed``, ``attained``, ``attainment`` (attained / sent;
failures count as missed), ``request_goodput`` (attained requests per second of run time), throughputs,
``mean_/median_/std_/p<P>_`` of ``ttft``, ``tpot``, ``itl``, ``e2el`` in ms (``--metric-percentiles``, plus 50
and 99 always), ``errors`` by kind (``http_<status>``, ``timeout``, ``connection``, ``stream_broken``,
``stream_error``, ``invalid_response``, ``empty_response``). ``--goodput ttft:MS tpot:MS [e2el:MS]`` adds
vLLM's goodput as ``vllm_request_goodput``. Every request sent ends completed or failed; the run stops by
itself (``--num-prompts``, ``--duration`` stops sending, each request bounded by ``--timeout``).

Result file (``--save-result``; ``--result-dir``, ``--result-filename``; default name
``polyserve-bench-<rate>qps-<model>-<YYYYmmdd-HHMMSS>.json``): vLLM's key names where they overlap, plus
``tiers``, ``errors``, ``tier_definitions``, ``workload`` and ``requests`` (per-request records for plots).
A live progress line shows on stderr when it is a terminal (``--disable-tqdm`` turns it off); a table ends
the run. Exit code 1 if no request completed, 2 for bad flags or files.

Python::

    doc = asyncio.run(benchmark(BenchConfig(base_url=url, num_prompts=100, request_rate=10)))
    save_result(doc, "results/")

``benchmark`` takes ``client=`` (any ``httpx.AsyncClient``, e.g. on ``StreamingASGITransport(app)`` to
benchmark an app in-process) and ``clock=``.

Reading guide: ``config`` (flags), ``dataset`` (requests from the workload code), ``client`` (one request
and its failure kinds), ``metrics`` (per-request figures and the DSLO check), ``runner`` (schedule, limits,
stop), ``report`` (aggregates), ``result`` (the JSON file), ``plot``, ``progress``, ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyserve.bench.api import benchmark
    from polyserve.bench.config import BenchConfig
    from polyserve.bench.dataset import BenchRequest, build_requests
    from polyserve.bench.metrics import RequestRecord, dslo_check
    from polyserve.bench.plot import plot_result
    from polyserve.bench.result import build_result, default_filename, save_result
    from polyserve.bench.runner import BenchError, BenchRun, Progress, run_benchmark

_LAZY = {
    "benchmark": "api",
    "BenchConfig": "config",
    "BenchRequest": "dataset",
    "build_requests": "dataset",
    "RequestRecord": "metrics",
    "dslo_check": "metrics",
    "plot_result": "plot",
    "build_result": "result",
    "default_filename": "result",
    "save_result": "result",
    "BenchError": "runner",
    "BenchRun": "runner",
    "Progress": "runner",
    "run_benchmark": "runner",
}


def __getattr__(name: str) -> object:
    """Load on first use, so ``polyserve --help`` does not pay for numpy, httpx or matplotlib."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'polyserve.bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"polyserve.bench.{mod}"), name)


__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchRequest",
    "BenchRun",
    "Progress",
    "RequestRecord",
    "benchmark",
    "build_requests",
    "build_result",
    "default_filename",
    "dslo_check",
    "plot_result",
    "run_benchmark",
    "save_result",
]
