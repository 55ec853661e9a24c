"""``EngineConfig``: what one emulated engine is (model, GPU, limits, pace) and which faults it injects.

A plain, validated dataclass: the CLI, the subprocess launcher and in-process callers (the gateway's
``polyserve up``, tests) all build one, so they agree on defaults. Invalid values raise ``ConfigError`` naming
the flag and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from polyserve.core.errors import ConfigError

SCHEDULING_POLICIES = ("fcfs", "priority", "deadline", "edf")
DEADLINE_POLICIES = ("deadline", "edf")  # the ones that read each request's polyserve_slo


@dataclass(frozen=True)
class EngineConfig:
    model: str = "llama-3.1-8b"  # architecture for the latency model (see `polyserve.latency.hardware`)
    gpu: str = "h100"
    tp: int = 1
    time_scale: float = 1.0  # run the model this many times faster than real time (tests use > 1)
    latency_model: str = "auto"  # auto | linear | roofline | table
    latency_coefficients: str | None = None  # a `polyserve profile fit` output (linear)
    latency_profile: str | None = None  # a Vidur mlp.csv (table)
    gpu_memory_utilization: float = 0.9
    served_model_name: str | None = None  # the name clients send as "model"; default: ``model``
    default_output_len: int = 128  # tokens generated when a request gives no max_tokens
    max_num_seqs: int = 256  # vLLM max_num_seqs
    max_num_batched_tokens: int | None = None  # vLLM token budget; None: 8192, 2048 on A100 (vLLM's default)
    kv_capacity_tokens: int | None = (
        None  # override the KV capacity derived from GPU memory (tests: preemption)
    )
    # "fcfs" (vLLM's default) or "priority": waiting queue ordered by the request's ``priority`` field (lower
    # first), then arrival; preemption picks the lowest priority, latest arrival (vLLM's priority policy);
    # "deadline": PolyServe's engine scheduler (earliest TTFT deadline first, prefill chunks sized to the
    # decode batch's tightest token deadline) on each request's ``polyserve_slo`` (see serving/openai.py);
    # "edf": earliest TTFT deadline first on the same deadlines, with the static token budget
    scheduling_policy: str = "fcfs"
    kv_link_gbps: float = 400.0  # a prefilled request's KV arrives over this link (disaggregated hand-off)
    # failure injection (tests of gateways and clients)
    fail_after: int | None = None  # after this many generation requests, new ones get HTTP 500
    crash_mid_stream: int | None = None  # streams drop the connection after this many tokens
    add_latency_ms: float = 0.0  # extra delay before each generation response starts

    def __post_init__(self) -> None:
        if not (
            isinstance(self.time_scale, int | float)
            and math.isfinite(self.time_scale)
            and self.time_scale > 0
        ):
            raise ConfigError(f"--time-scale must be a finite number > 0, got {self.time_scale!r}")
        if self.tp < 1:
            raise ConfigError(f"--tp must be >= 1, got {self.tp}")
        if self.default_output_len < 1:
            raise ConfigError(f"--default-output-len must be >= 1, got {self.default_output_len}")
        if self.max_num_seqs < 1:
            raise ConfigError(f"--max-num-seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ConfigError(f"--max-num-batched-tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < 2:
            raise ConfigError(f"--kv-capacity-tokens must be >= 2, got {self.kv_capacity_tokens}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ConfigError(
                f"--scheduling-policy must be one of {', '.join(SCHEDULING_POLICIES)}, "
                f"got {self.scheduling_policy!r}"
            )
        if not (isinstance(self.kv_link_gbps, int | float) and math.isfinite(self.kv_link_gbps)
                and self.kv_link_gbps > 0):
            raise ConfigError(f"--kv-link-gbps must be a finite number > 0, got {self.kv_link_gbps!r}")
        if self.fail_after is not None and self.fail_after < 0:
            raise ConfigError(f"--fail-after must be >= 0 requests, got {self.fail_after}")
        if self.crash_mid_stream is not None and self.crash_mid_stream < 0:
            raise ConfigError(f"--crash-mid-stream must be >= 0 tokens, got {self.crash_mid_stream}")
        if not (math.isfinite(self.add_latency_ms) and self.add_latency_ms >= 0):
            raise ConfigError(f"--add-latency-ms must be a finite number >= 0, got {self.add_latency_ms}")
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise ConfigError("--served-model-name must not be empty")

    @property
    def name(self) -> str:
        """The model name clients must send (``served_model_name``, else ``model``)."""
        return self.served_model_name or self.model
