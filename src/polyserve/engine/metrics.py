"""The engine's Prometheus metrics, under vLLM's names, so a gateway or dashboard built for vLLM reads them.

Each engine app owns its ``CollectorRegistry`` (never the global one), so several engines in one process keep
separate figures. Every series carries ``model_name`` as vLLM's do. Gauges are read from the engine when
scraped. Times are wall-clock seconds as a client sees them: TTFT counts from the request's arrival at the
engine (queueing and any injected latency included); at ``--time-scale X`` they are X times shorter than the
model's own times.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from polyserve.serving.buckets import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS

CONTENT_TYPE = CONTENT_TYPE_LATEST


class EngineMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ["model_name"]
        self._gauges: list[tuple[Gauge, str]] = []
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", labels, registry=r
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled.", labels, registry=r
        )
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV cache usage (1 = full).", labels, registry=r)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token, from arrival.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive output tokens.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Arrival to last token.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens admitted.", labels, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Tokens generated.", labels, registry=r
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success", "Requests finished.", ["model_name", "finished_reason"], registry=r
        )
        self.success = self._success.labels(model_name, "length")
        self.preemptions = Counter(
            "vllm:num_preemptions", "Preemptions (recompute).", labels, registry=r
        ).labels(model_name)
        self.model_name = model_name

    def bind(
        self, running: Callable[[], float], waiting: Callable[[], float], kv: Callable[[], float]
    ) -> None:
        """Read the gauges from these functions at scrape time."""
        self.running.labels(self.model_name).set_function(running)
        self.waiting.labels(self.model_name).set_function(waiting)
        self.kv_usage.labels(self.model_name).set_function(kv)

    def render(self) -> bytes:
        return generate_latest(self.registry)
