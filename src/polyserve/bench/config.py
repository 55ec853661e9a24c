"""``BenchConfig``: one benchmark run, as ``polyserve bench``'s flags (``vllm bench serve`` spelling) say.

Validated when built: a bad value raises ``ConfigError`` naming the flag and what is allowed, before anything
is sent. Defaults follow ``vllm bench serve`` where it has the flag (``/v1/completions``, 1024 prompt and 128
output tokens for the random dataset, 1000 prompts, all sent at once, percentiles at 99), and so do the rules
of its flags (``--backend`` and the endpoint agree, a ramp-up replaces ``--request-rate``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from polyserve.core.errors import ConfigError

DATASETS = ("random", "sharegpt", "trace")
BACKENDS = ("openai", "vllm", "openai-chat")  # vllm bench serve's OpenAI-compatible backends
RAMP_UP = ("linear", "exponential")
METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
DEFAULT_NUM_PROMPTS = 1000  # vllm bench serve's default


@dataclass(frozen=True)
class BenchConfig:
    base_url: str = "http://127.0.0.1:8000"
    endpoint: str = "/v1/completions"
    model: str | None = None  # None: the first model the server lists at /v1/models
    dataset_name: str = "random"
    dataset_path: str | None = None  # trace file (--dataset-name trace) or ShareGPT JSON (sharegpt)
    trace_format: str | None = None  # None: detect from the file
    random_input_len: int = 1024
    random_output_len: int = 128
    random_range_ratio: float = 0.0  # lengths uniform in [L*(1-r), L*(1+r)], as vllm bench serve
    num_prompts: int | None = None  # None: 1000, or unbounded when --duration bounds the run
    request_rate: float | None = None  # req/s; inf: all at once; None: inf (random) or recorded times (trace)
    burstiness: float = 1.0  # gamma shape of the gaps (1 = Poisson)
    max_concurrency: int | None = None  # at most this many requests in flight
    seed: int = 0
    duration_s: float | None = None  # stop sending after this many seconds
    timeout_s: float = 600.0  # per request, whole stream
    percentile_metrics: tuple[str, ...] = METRICS
    metric_percentiles: tuple[float, ...] = (99.0,)
    goodput_slo_ms: dict[str, float] | None = None  # vLLM's --goodput: ttft/tpot/e2el limits
    tiers_path: str | None = None  # None: the shipped tiers
    tier_weights: dict[str, float] | None = None  # None: the tier file's weights (shipped: equal)
    ignore_eos: bool = False  # --ignore-eos; the random and trace datasets always send it (as vLLM's random)
    extra_body: dict[str, object] = field(default_factory=dict)
    backend: str | None = None  # vLLM's --backend; None: from the endpoint (openai, or openai-chat)
    tokenizer: str | None = None  # recorded as tokenizer_id; never loaded (see token_counting)
    served_model_name: str | None = None  # the name sent in requests (vLLM: model_name); --model is the id
    random_prefix_len: int = 0  # a fixed prefix of this many words before every random prompt
    sharegpt_output_len: int | None = None  # overrides the ShareGPT completion lengths
    no_oversample: bool = False  # sharegpt: fewer valid conversations than --num-prompts are not repeated
    num_warmups: int = 0  # requests sent (the first request's input) before the measured run
    ramp_up_strategy: str | None = None  # linear | exponential: the rate goes start -> end over the run
    ramp_up_start_rps: int | None = None
    ramp_up_end_rps: int | None = None
    save_detailed: bool = False  # per-request lists in the result (vLLM's input_lens, ttfts, itls, ...)
    metadata: dict[str, str] = field(default_factory=dict)  # --metadata KEY=VALUE: top-level result keys

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must start with http:// or https://, got {self.base_url!r}")
        if not self.endpoint.startswith("/"):
            raise ConfigError(f"--endpoint must be a path such as /v1/completions, got {self.endpoint!r}")
        if self.dataset_name not in DATASETS:
            raise ConfigError(
                f"--dataset-name must be one of {', '.join(DATASETS)}, got {self.dataset_name!r}"
            )
        if self.dataset_name == "trace" and not self.dataset_path:
            raise ConfigError("--dataset-name trace needs --dataset-path FILE (a trace the simulator reads)")
        if self.dataset_name == "sharegpt" and not self.dataset_path:
            raise ConfigError("--dataset-name sharegpt needs --dataset-path FILE (a local ShareGPT JSON file, such "
                              "as ShareGPT_V3_unfiltered_cleaned_split.json; nothing is downloaded)")
        if self.dataset_name == "random" and self.dataset_path:
            raise ConfigError("--dataset-path is for --dataset-name trace or sharegpt; the random dataset reads no "
                              "file")
        if self.backend is not None:
            if self.backend not in BACKENDS:
                raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)} (the OpenAI-compatible ones "
                                  f"polyserve bench speaks), got {self.backend!r}")
            chat_endpoint = self.endpoint.rstrip("/").endswith("chat/completions")
            if (self.backend == "openai-chat") != chat_endpoint:
                want = "/v1/chat/completions" if self.backend == "openai-chat" else "/v1/completions"
                raise ConfigError(f"--backend {self.backend} sends to {want}; --endpoint is {self.endpoint} "
                                  f"(give --endpoint {want}, or the matching --backend)")
        if self.random_prefix_len < 0:
            raise ConfigError(f"--random-prefix-len must be >= 0, got {self.random_prefix_len}")
        if self.random_prefix_len and self.dataset_name != "random":
            raise ConfigError("--random-prefix-len applies to --dataset-name random")
        if self.sharegpt_output_len is not None:
            if self.dataset_name != "sharegpt":
                raise ConfigError("--sharegpt-output-len applies to --dataset-name sharegpt")
            if self.sharegpt_output_len < 1:
                raise ConfigError(f"--sharegpt-output-len must be >= 1, got {self.sharegpt_output_len}")
        if self.num_warmups < 0:
            raise ConfigError(f"--num-warmups must be >= 0, got {self.num_warmups}")
        self._check_ramp_up()
        for name in ("random_input_len", "random_output_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.random_range_ratio < 1:
            raise ConfigError(f"--random-range-ratio must be in [0, 1), got {self.random_range_ratio}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ConfigError(f"--num-prompts must be >= 1, got {self.num_prompts}")
        if self.request_rate is not None and not (self.request_rate > 0):
            raise ConfigError(f"--request-rate must be > 0 (or inf), got {self.request_rate}")
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise ConfigError(f"--burstiness must be a finite number > 0, got {self.burstiness}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ConfigError(f"--duration must be a finite number of seconds > 0, got {self.duration_s}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"--timeout must be a finite number of seconds > 0, got {self.timeout_s}")
        bad = [m for m in self.percentile_metrics if m not in METRICS]
        if bad or not self.percentile_metrics:
            raise ConfigError(
                f"--percentile-metrics: use a comma list of {', '.join(METRICS)}, got {bad or '[]'}"
            )
        for p in self.metric_percentiles:
            if not 0 < p < 100:
                raise ConfigError(f"--metric-percentiles must be in (0, 100), got {p:g}")
        if self.goodput_slo_ms is not None:
            for k, v in self.goodput_slo_ms.items():
                if k not in GOODPUT_KEYS:
                    raise ConfigError(f"--goodput: unknown metric {k!r}; use {', '.join(GOODPUT_KEYS)}")
                if not (math.isfinite(v) and v > 0):
                    raise ConfigError(f"--goodput {k}: the limit must be a number of ms > 0, got {v}")
        if self.rate_is_infinite and self.dataset_name != "trace" and self.burstiness != 1.0:
            raise ConfigError("--burstiness shapes the gaps between requests; give a finite --request-rate")
        if self.dataset_name == "trace" and self.burstiness != 1.0:
            raise ConfigError(
                "--burstiness applies to the random dataset; a trace keeps its recorded burstiness"
            )
        if (self.num_prompts is None and self.duration_s is not None and self.rate_is_infinite
                and self.ramp_up_strategy is None):
            raise ConfigError("with --request-rate inf every prompt is sent at once; give --num-prompts")

    def _check_ramp_up(self) -> None:
        """vllm bench serve's rules: a ramp replaces --request-rate; both ends given; start <= end; > 0 here
        (vLLM accepts a start of 0 and then fails on its first request's rate)."""
        s, lo, hi = self.ramp_up_strategy, self.ramp_up_start_rps, self.ramp_up_end_rps
        if s is None:
            if lo is not None or hi is not None:
                raise ConfigError("--ramp-up-start-rps/--ramp-up-end-rps need --ramp-up-strategy linear|exponential")
            return
        if s not in RAMP_UP:
            raise ConfigError(f"--ramp-up-strategy must be one of {', '.join(RAMP_UP)}, got {s!r}")
        if self.request_rate is not None:
            raise ConfigError("with --ramp-up-strategy the rate goes from --ramp-up-start-rps to --ramp-up-end-rps; "
                              "do not give --request-rate")
        if lo is None or hi is None:
            raise ConfigError("--ramp-up-strategy needs both --ramp-up-start-rps and --ramp-up-end-rps")
        if lo < 1 or hi < 1:
            raise ConfigError(f"--ramp-up-start-rps and --ramp-up-end-rps must be >= 1 req/s, got {lo} and {hi}")
        if lo > hi:
            raise ConfigError(f"--ramp-up-start-rps ({lo}) must be <= --ramp-up-end-rps ({hi})")
        if self.dataset_name == "trace":
            raise ConfigError("--ramp-up-strategy shapes synthetic arrivals; a trace keeps its own (use random or "
                              "sharegpt)")

    @property
    def sends_ignore_eos(self) -> bool:
        """``ignore_eos: true`` in every request: --ignore-eos, or a dataset whose output lengths are meant
        exactly (random, as vllm bench serve forces it; trace, whose recorded lengths are replayed)."""
        return self.ignore_eos or self.dataset_name in ("random", "trace")

    @property
    def backend_name(self) -> str:
        return self.backend or ("openai-chat" if self.chat else "openai")

    @property
    def rate_is_infinite(self) -> bool:
        """All requests at once (``--request-rate inf``, the random and sharegpt datasets' default)."""
        if self.ramp_up_strategy is not None:
            return False
        if self.request_rate is None:
            return self.dataset_name != "trace"
        return math.isinf(self.request_rate)

    @property
    def chat(self) -> bool:
        return self.endpoint.rstrip("/").endswith("/chat/completions")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.endpoint

    @property
    def percentiles(self) -> list[float]:
        """The percentiles reported: the requested ones, plus 50 and 99 always."""
        return sorted({50.0, 99.0, *self.metric_percentiles})


def parse_goodput(items: list[str] | None) -> dict[str, float] | None:
    """``["ttft:500", "tpot:50"]`` (or ``"ttft:500,tpot:50"`` items) -> ``{"ttft": 500.0, "tpot": 50.0}``."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        for part in item.replace(",", " ").split():
            key, sep, val = part.partition(":")
            try:
                if not sep:
                    raise ValueError
                out[key.strip()] = float(val)
            except ValueError:
                raise ConfigError(f"--goodput: expected METRIC:MS such as ttft:500, got {part!r}") from None
    return out


def parse_metadata(items: list[str] | None) -> dict[str, str]:
    """``["version=0.3.3", "tp=1"]`` -> ``{"version": "0.3.3", "tp": "1"}`` (vLLM's --metadata)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--metadata: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``"t20=1,t30=2"`` -> ``{"t20": 1.0, "t30": 2.0}`` (names are checked against the tiers later)."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, val = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(val)
        except ValueError:
            raise ConfigError(
                f"--tier-weights: expected NAME=WEIGHT[,NAME=WEIGHT...], got {part!r}"
            ) from None
    return out


def parse_list(text: str, flag: str, kind: type = str) -> tuple:
    """A comma list (``"ttft,tpot"`` / ``"50,99"``), each item converted by ``kind``."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        return tuple(kind(s) for s in items)
    except ValueError:
        raise ConfigError(f"{flag}: expected a comma-separated list, got {text!r}") from None
