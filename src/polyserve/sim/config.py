"""Simulation settings (a plain, validated dataclass; the CLI and the Python API both build one)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from polyserve.core.errors import ConfigError

Mode = Literal["colocated", "disaggregated"]


def default_max_num_batched_tokens(gpu: str) -> int:
    """vLLM V1's default token budget for the OpenAI server.

    8192 on GPUs with >= 70 GiB other than A100, else 2048 (vLLM ``EngineArgs`` defaults).
    """
    return 2048 if gpu.lower().startswith("a100") else 8192


@dataclass(frozen=True)
class SimConfig:
    instances: int = 32
    mode: Mode = "colocated"
    prefill_fraction: float = 0.25  # disaggregated: share of instances in the prefill pool (at least 1)
    kv_link_gbps: float = 400.0  # disaggregated: KV hand-off bandwidth per request
    cold_start_s: float = 0.0  # time from scale-up to a server accepting work (the paper assumes 0)
    max_num_seqs: int = 256  # vLLM default
    max_num_batched_tokens: int = 8192  # vLLM V1 default on H100/H200 for the OpenAI server
    tick_s: float = 1.0  # period of the router/autoscaler tick (only runs while something is pending/scaled)
    stall_ticks: int = 600  # ticks in a row with nothing but pending requests left before the run gives up
    horizon_s: float | None = None  # hard stop; requests unfinished then count as not attained
    fast: bool = True  # plan runs of identical decode iterations at once (exactly equal results)
    output_len_prior: float = 256.0  # expected output length before a tier has a finished request
    send_max_tokens: bool = False  # tell the policy each request's true output length as max_tokens
    # what happens to a request whose TTFT can no longer be met, for every router alike
    # (``policy/overload.py``): "serve" it late, after every attainable request, or "shed" it with the reason
    overload: str = "serve"
    # disaggregated: a request that has streamed its first token and waits longer than this for a decode seat
    # ends with an error (status timed_out), as the gateway ends it after ``timeouts.idle_s`` (also 30 s by
    # default); None: it waits, however long, and completes late
    decode_seat_timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1, got {self.instances}")
        if self.mode not in ("colocated", "disaggregated"):
            raise ConfigError(f"--mode must be colocated or disaggregated, got {self.mode!r}")
        if self.mode == "disaggregated" and self.instances < 2:
            raise ConfigError("--mode disaggregated needs at least 2 instances (one prefill, one decode)")
        if not 0 < self.prefill_fraction < 1:
            raise ConfigError(f"--prefill-fraction must be in (0, 1), got {self.prefill_fraction}")
        for name in ("kv_link_gbps", "tick_s", "output_len_prior"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v}")
        if not (math.isfinite(self.cold_start_s) and self.cold_start_s >= 0):
            raise ConfigError(f"--cold-start must be >= 0 s, got {self.cold_start_s}")
        if self.stall_ticks < 1:
            raise ConfigError(f"stall_ticks must be >= 1, got {self.stall_ticks}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ConfigError("max_num_seqs and max_num_batched_tokens must be >= 1")
        if self.overload not in ("serve", "shed"):
            raise ConfigError(f"--overload must be serve or shed, got {self.overload!r}")
        if self.decode_seat_timeout_s is not None and not (
            math.isfinite(self.decode_seat_timeout_s) and self.decode_seat_timeout_s > 0
        ):
            raise ConfigError(
                f"--decode-seat-timeout must be a finite number of seconds > 0 (0 on the command line: unbounded), "
                f"got {self.decode_seat_timeout_s}"
            )
        if self.horizon_s is not None and not self.horizon_s > 0:
            raise ConfigError(f"horizon must be > 0 s, got {self.horizon_s}")

    @property
    def num_prefill(self) -> int:
        if self.mode != "disaggregated":
            return 0
        return min(self.instances - 1, max(1, round(self.instances * self.prefill_fraction)))

    def roles(self) -> list[str]:
        p = self.num_prefill
        if self.mode == "colocated":
            return ["mixed"] * self.instances
        return ["prefill"] * p + ["decode"] * (self.instances - p)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
