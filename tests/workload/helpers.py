"""Small helpers for the workload tests (no fixtures magic: plain functions)."""

from __future__ import annotations

from pathlib import Path

from polyserve.core.tiers import Tier, TierSet
from polyserve.data import DEFAULT_TIERS

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def default_tiers() -> TierSet:
    """The shipped tiers: t20, t30, t50, t100 (tightest first), equal weights."""
    return TierSet.from_toml(DEFAULT_TIERS)


def two_tiers(weight_fast: float = 1.0, weight_slow: float = 1.0) -> TierSet:
    """A tiny tier set with distinct SLO parameters, to check the SLO arithmetic."""
    return TierSet(
        [
            Tier("fast", tpot_ms=20, ttft_ms=250, ttft_ms_per_input_token=0.5, weight=weight_fast),
            Tier("slow", tpot_ms=80, ttft_ms=4000, ttft_ms_per_input_token=0.0, weight=weight_slow),
        ]
    )


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    """Write ``text`` to ``tmp_path/name`` and return the path as a string (as error messages show it)."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return str(path)
