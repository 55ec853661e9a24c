"""``Workload``: the requests a simulation or benchmark runs, as arrival-sorted columns.

Columns rather than request objects, so a million requests cost ~40 MB and a simulator can take
``workload.arrival_s[i]`` without touching the others. Row *i* of every column is request *i*.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from polyserve.core.tiers import TierSet


@dataclass
class Workload:
    """What the simulator consumes. Built by ``build_workload`` / ``poisson_lengths_workload``."""

    arrival_s: np.ndarray  # float64 seconds, non-decreasing, first >= 0
    input_tokens: np.ndarray  # int64 >= 1: prompt tokens
    output_tokens: np.ndarray  # int64 >= 1: tokens to generate (known to the simulator, not the policy)
    tier: np.ndarray  # int16 index into `tiers`
    ttft_ms: np.ndarray  # float64 per-request TTFT SLO: tier.ttft_ms + tier.ttft_ms_per_input_token * input
    tpot_ms: np.ndarray  # float64 per-request TPOT SLO: tier.tpot_ms
    tiers: TierSet  # the tiers `tier` indexes, with the mix weights the workload was drawn with
    # JSON-able provenance (trace path and sha256, arrival process, rate, seed, transforms, lengths, tiers),
    # copied into every report so a result names exactly what produced it.
    description: dict

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        for name in ("input_tokens", "output_tokens", "tier", "ttft_ms", "tpot_ms"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Workload.{name} has {len(getattr(self, name))} rows, arrival_s has {n}")
        if n and (self.arrival_s[0] < 0 or np.any(np.diff(self.arrival_s) < 0)):
            raise ValueError("Workload.arrival_s must be non-decreasing and start at or after 0")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def slice(self, start: int, stop: int) -> Workload:
        """Requests ``start:stop`` (Python slice rules), arrival times unchanged."""
        description = copy.deepcopy(self.description)
        description["slice"] = [start, stop]
        return Workload(
            arrival_s=self.arrival_s[start:stop],
            input_tokens=self.input_tokens[start:stop],
            output_tokens=self.output_tokens[start:stop],
            tier=self.tier[start:stop],
            ttft_ms=self.ttft_ms[start:stop],
            tpot_ms=self.tpot_ms[start:stop],
            tiers=self.tiers,
            description=description,
        )

    def tier_counts(self) -> dict[str, int]:
        """Requests per tier name, tightest tier first (tiers with no requests included, as 0)."""
        counts = np.bincount(self.tier.astype(np.intp), minlength=len(self.tiers))
        return {t.name: int(c) for t, c in zip(self.tiers, counts, strict=True)}
