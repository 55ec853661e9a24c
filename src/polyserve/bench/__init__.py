"""The benchmark client: load an OpenAI-compatible endpoint with SLO tiers; report per-tier attainment.

bench
=====

``polyserve bench`` speaks ``vllm bench serve``'s flags, with vLLM's meanings, and adds what no public
benchmark reports: per-SLO tier attainment and goodput, with the SLO of each request sent as headers
(``x-slo-ttft-ms``, ``x-slo-tpot-ms``, ``x-polyserve-tier``), so a SLO-aware gateway can act on them::

    polyserve bench --host 127.0.0.1 --port 8000 --backend vllm --model llama-3.1-8b --dataset-name random \
        --num-prompts 500 --request-rate 20 --random-input-len 1024 --random-output-len 128 \
        --tiers tiers.toml --save-result --save-detailed --result-dir results/
    polyserve bench plot results/polyserve-bench-20qps-llama-3.1-8b-20250101-120000.json

vLLM's flags taken: ``--backend`` (openai, vllm, openai-chat), ``--base-url`` or ``--host``/``--port``,
``--endpoint``, ``--model``, ``--served-model-name``, ``--tokenizer`` (recorded only: nothing is downloaded;
token counts are the server's ``usage``, else words), ``--dataset-name random|sharegpt`` (and our ``trace``),
``--dataset-path``, ``--sharegpt-output-len``, ``--no-oversample``, ``--random-input-len``,
``--random-output-len``, ``--random-range-ratio``, ``--random-prefix-len``, ``--ignore-eos``,
``--num-prompts``, ``--request-rate``, ``--burstiness``, ``--ramp-up-strategy`` with ``--ramp-up-start-rps``
and ``--ramp-up-end-rps``, ``--max-concurrency``, ``--num-warmups``, ``--seed``, ``--percentile-metrics``,
``--metric-percentiles``, ``--goodput``, ``--save-result``, ``--save-detailed``, ``--metadata``,
``--result-dir``, ``--result-filename``, ``--disable-tqdm``. Ours: ``--tiers``, ``--tier-weights``,
``--duration``, ``--timeout``, ``--trace-format``. The workload (``dataset``): random, a local ShareGPT file,
or any trace the simulator reads, with each request's tier drawn from the mix, all seeded by ``--seed``.

Measured per request (from the stream, on the client's clock, from the moment it is sent): TTFT (first text
chunk), every inter-token gap (ITL), TPOT = (E2E - TTFT) / (tokens - 1), E2E (``[DONE]``), output tokens
(``usage`` if sent, else chunks), and the deadline SLO: chunk *k* is due at ``TTFT_SLO + (k-1) * TPOT_SLO``;
a request is attained if every chunk was on time (early tokens bank slack).

Reported per tier and overall: ``completed``, ``failed``, ``attained``, ``attainment`` (attained / sent;
failures count as missed), ``dslo_request_goodput`` (attained requests per second of run time), vLLM's
``request_goodput`` (``--goodput ttft:MS tpot:MS [e2el:MS]``; null without it), throughputs, vLLM's
``max_output_tokens_per_s`` and ``max_concurrent_requests``, ``mean_/median_/std_/p<P>_`` of ``ttft``,
``tpot``, ``itl``, ``e2el`` in ms (``--metric-percentiles``, plus 50 and 99 always), ``error_kinds`` by kind
(``http_<status>``, ``timeout``, ``connection``, ``stream_broken``, ``stream_error``, ``invalid_response``,
``empty_response``). Every request sent ends completed or failed; the run stops by itself (``--num-prompts``,
``--duration`` stops sending, each request bounded by ``--timeout``).

Result file (``--save-result``; ``--result-dir``, ``--result-filename``; default name
``polyserve-bench-<rate>qps-<model>-<YYYYmmdd-HHMMSS>.json``): vLLM's keys with vLLM's meanings where they
overlap (with ``--save-detailed`` its per-request lists ``input_lens``, ``output_lens``, ``ttfts``, ``itls``,
``start_times``, ``generated_texts`` and ``errors``), plus ``tiers``, ``error_kinds``, ``tier_definitions``,
``workload`` and ``requests`` (per-request records for plots). A live progress line shows on stderr when it
is a terminal (``--disable-tqdm`` turns it off); a table ends the run. Exit code 1 if no request completed,
2 for bad flags or files.

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
