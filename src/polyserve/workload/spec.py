"""``WorkloadSpec``: what the CLI and API flags say about the requests to send.

It is checked when built (``ConfigError`` on NaN, negative or contradictory values), so a bad flag fails
before any trace is read. What it means, by case:

**With a trace, ``arrival="trace"`` (the default): replay.** The trace is replayed whole, as recorded,
unless told otherwise. Transforms, in this order:

1. ``start_s``: start at this time of the *recorded* trace (rows before it are dropped; it becomes time 0);
2. ``num_requests``: use at most the first N rows;
3. ``rate``: re-time so the mean rate is ``rate`` (the trace's burstiness shape is kept);
4. ``tile``: repeat the trace end to end until ``duration_s`` is covered;
5. ``duration_s``: keep arrivals in ``[0, duration_s)``.

Lengths are the rows' own unless ``input_len`` / ``output_len`` name a synthetic distribution (then the
recorded arrivals carry synthetic lengths). A lengths-only trace cannot be replayed.

**With a trace, ``arrival="poisson"|"gamma"``: resample.** Arrivals are synthetic at ``rate`` (required),
for ``num_requests`` requests and/or ``duration_s`` seconds (at least one). Each request draws one trace
row (uniformly, with replacement), and takes its prompt length, output length (jointly: a real pair) and
tier (if the trace has a tier column) from that row, unless a length is given as a distribution.

**Without a trace: synthetic.** ``arrival="trace"`` means ``"poisson"``; ``rate`` and ``num_requests`` and/or
``duration_s`` are required. Default lengths are ``fixed:1024`` prompt and ``fixed:128`` output tokens,
the defaults of ``vllm bench serve``'s random dataset, so results compare with runs made with it.

Tiers: the trace's ``tier`` column if any, else a seeded draw from the TierSet's weights. ``tier_weights``
replaces those weights and, when given explicitly, also overrides a tier column (an explicit flag wins over
the file); names it leaves out get weight 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from polyserve.core.errors import ConfigError
from polyserve.workload.formats import FORMATS
from polyserve.workload.lengths import LengthSpec

ARRIVALS = ("trace", "poisson", "gamma")
DEFAULT_INPUT_LEN = LengthSpec.fixed(1024)  # vllm bench serve --random-input-len default
DEFAULT_OUTPUT_LEN = LengthSpec.fixed(128)  # vllm bench serve --random-output-len default


def _finite(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)  # type: ignore[operator]
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class WorkloadSpec:
    """The workload flags. Strings are accepted for ``input_len``/``output_len`` (parsed) and a path-like
    for ``trace`` (kept as ``str``)."""

    trace: str | None = None  # path to a trace file
    trace_format: str | None = None  # None = detect from the first line
    rate: float | None = None  # req/s: re-times a replayed trace, or drives synthetic arrivals
    arrival: str = "trace"  # "trace" (replay timestamps) | "poisson" | "gamma"; no trace: "trace" = poisson
    burstiness: float = 1.0  # gamma shape, as `vllm bench serve` (1 = Poisson); only with arrival="gamma"
    duration_s: float | None = None  # keep arrivals in [0, duration_s)
    tile: bool = False  # repeat a replayed trace end to end until duration_s is covered
    num_requests: int | None = None  # synthetic: how many; replay: cap on the trace rows used
    input_len: LengthSpec | None = None  # None: the trace's lengths if there is a trace, else fixed:1024
    output_len: LengthSpec | None = None  # None: the trace's lengths if there is a trace, else fixed:128
    tier_weights: dict[str, float] | None = None  # replaces the TierSet's mix weights (and a tier column)
    start_s: float = 0.0  # replay: where in the recorded trace to start

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, LengthSpec.parse(value))
            elif value is not None and not isinstance(value, LengthSpec):
                raise ConfigError(
                    f"{name} must be a LengthSpec or a string such as 'fixed:128', got {value!r}"
                )
        if isinstance(self.trace, os.PathLike):
            object.__setattr__(self, "trace", os.fspath(self.trace))
        if self.trace is not None and (not isinstance(self.trace, str) or not self.trace):
            raise ConfigError(f"trace must be a file path, got {self.trace!r}")
        if self.trace_format is not None and self.trace_format not in FORMATS:
            raise ConfigError(
                f"unknown trace format {self.trace_format!r}; known formats: {', '.join(FORMATS)}"
            )
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"unknown arrival process {self.arrival!r}; known: {', '.join(ARRIVALS)}")
        if self.rate is not None:
            _finite("rate (req/s)", self.rate, positive=True)
        _finite("burstiness", self.burstiness, positive=True)
        if self.duration_s is not None:
            _finite("duration_s", self.duration_s, positive=True)
        _finite("start_s", self.start_s, positive=False)
        if self.num_requests is not None and (
            isinstance(self.num_requests, bool)
            or not isinstance(self.num_requests, int)
            or self.num_requests < 1
        ):
            raise ConfigError(f"num_requests must be an integer >= 1, got {self.num_requests!r}")
        if self.tier_weights is not None:
            if not isinstance(self.tier_weights, dict) or not self.tier_weights:
                raise ConfigError("tier_weights must map at least one tier name to a weight")
            for name, w in self.tier_weights.items():
                _finite(f"tier weight of {name!r}", w, positive=False)
            if sum(self.tier_weights.values()) <= 0:
                raise ConfigError("tier_weights sum to 0; give at least one tier a weight > 0")

        synthetic = self.trace is None or self.arrival != "trace"
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ConfigError("burstiness applies only to arrival='gamma' (Poisson is burstiness 1)")
        if self.tile and self.duration_s is None:
            raise ConfigError("tile needs duration_s: tiling repeats the trace until that duration is filled")
        if self.tile and synthetic:
            raise ConfigError("tile repeats a replayed trace; it does not apply to synthetic arrivals")
        if self.start_s != 0 and synthetic:
            raise ConfigError(
                "start_s picks where to start replaying a trace; it does not apply to synthetic arrivals"
            )
        if synthetic:
            if self.rate is None:
                raise ConfigError(f"{self.process} arrivals need a rate (req/s)")
            if self.num_requests is None and self.duration_s is None:
                raise ConfigError(f"{self.process} arrivals need num_requests or duration_s (or both)")
        if self.trace is None:
            for name in ("input_len", "output_len"):
                spec = getattr(self, name)
                if spec is not None and spec.kind == "trace":
                    raise ConfigError(f"{name}='trace' resamples lengths from a trace; give a trace file")

    @property
    def process(self) -> str:
        """The arrival process actually used: "trace" (replay), "poisson" or "gamma"."""
        if self.arrival == "trace" and self.trace is None:
            return "poisson"
        return self.arrival

    @property
    def input_lengths(self) -> LengthSpec:
        """``input_len`` with its default filled in."""
        if self.input_len is not None:
            return self.input_len
        return LengthSpec.trace() if self.trace is not None else DEFAULT_INPUT_LEN

    @property
    def output_lengths(self) -> LengthSpec:
        if self.output_len is not None:
            return self.output_len
        return LengthSpec.trace() if self.trace is not None else DEFAULT_OUTPUT_LEN
