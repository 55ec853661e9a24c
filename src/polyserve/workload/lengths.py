"""``LengthSpec``: a distribution of prompt or output lengths, as a CLI string names it.

Forms (``LengthSpec.parse``):

- ``128`` or ``fixed:128``    every request has 128 tokens;
- ``uniform:64:512``          integers drawn uniformly from 64..512, both ends included;
- ``zipf:1.2:4096``           Zipf with exponent 1.2 (> 1), values >= 1, clipped to 4096 (the clip puts the
                              tail's mass on 4096, as a model's context limit would);
- ``trace``                   resampled from a trace's rows (the workload builder does it; needs a trace).

``str(spec)`` gives the canonical form back, which is what reports record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from polyserve.core.errors import ConfigError

KINDS = ("fixed", "uniform", "zipf", "trace")
FORMS = "N or fixed:N, uniform:LOW:HIGH (inclusive), zipf:EXPONENT:MAX (EXPONENT > 1), trace"


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class LengthSpec:
    """A token-length distribution. Only the fields of its ``kind`` are meaningful; the rest stay 0."""

    kind: str  # "fixed" | "uniform" | "zipf" | "trace"
    value: int = 0  # fixed: the length
    low: int = 0  # uniform: smallest length (inclusive)
    high: int = 0  # uniform: largest length (inclusive)
    exponent: float = 0.0  # zipf: exponent a > 1 (smaller = heavier tail)
    max_tokens: int = 0  # zipf: clip

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown length distribution {self.kind!r}; allowed forms: {FORMS}")
        if self.kind == "fixed" and not (_is_int(self.value) and self.value >= 1):
            raise ConfigError(f"fixed length must be an integer >= 1, got {self.value!r}")
        if self.kind == "uniform" and not (
            _is_int(self.low) and _is_int(self.high) and 1 <= self.low <= self.high
        ):
            raise ConfigError(
                f"uniform lengths need integers 1 <= LOW <= HIGH, got {self.low!r}:{self.high!r}"
            )
        if self.kind == "zipf":
            if not (
                isinstance(self.exponent, int | float) and math.isfinite(self.exponent) and self.exponent > 1
            ):
                raise ConfigError(f"zipf exponent must be a finite number > 1, got {self.exponent!r}")
            if not (_is_int(self.max_tokens) and self.max_tokens >= 1):
                raise ConfigError(f"zipf MAX must be an integer >= 1, got {self.max_tokens!r}")

    # Constructors ------------------------------------------------------------------------------------------
    @classmethod
    def fixed(cls, value: int) -> LengthSpec:
        return cls("fixed", value=value)

    @classmethod
    def uniform(cls, low: int, high: int) -> LengthSpec:
        return cls("uniform", low=low, high=high)

    @classmethod
    def zipf(cls, exponent: float, max_tokens: int) -> LengthSpec:
        return cls("zipf", exponent=float(exponent), max_tokens=max_tokens)

    @classmethod
    def trace(cls) -> LengthSpec:
        return cls("trace")

    @classmethod
    def parse(cls, text: str) -> LengthSpec:
        """Parse a CLI string (see the module docstring). ``ConfigError`` listing the forms on bad text."""
        if not isinstance(text, str):
            raise ConfigError(f"length spec must be a string, got {text!r}; allowed forms: {FORMS}")
        parts = [p.strip() for p in text.strip().split(":")]
        kind = parts[0].lower()
        try:
            if len(parts) == 1 and kind.isascii() and kind.isdigit():
                return cls.fixed(int(kind))
            if kind == "trace" and len(parts) == 1:
                return cls.trace()
            if kind == "fixed" and len(parts) == 2:
                return cls.fixed(_int(parts[1]))
            if kind == "uniform" and len(parts) == 3:
                return cls.uniform(_int(parts[1]), _int(parts[2]))
            if kind == "zipf" and len(parts) == 3:
                return cls.zipf(float(parts[1]), _int(parts[2]))
        except (ValueError, ConfigError) as e:
            raise ConfigError(f"invalid length spec {text!r}: {e}; allowed forms: {FORMS}") from None
        raise ConfigError(f"invalid length spec {text!r}; allowed forms: {FORMS}")

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.value}"
        if self.kind == "uniform":
            return f"uniform:{self.low}:{self.high}"
        if self.kind == "zipf":
            return f"zipf:{self.exponent:g}:{self.max_tokens}"
        return "trace"

    # Sampling ----------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` int64 lengths >= 1. ``trace`` cannot sample itself: the builder resamples trace rows."""
        if self.kind == "fixed":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64)
        if self.kind == "zipf":
            return np.minimum(rng.zipf(self.exponent, size=n), self.max_tokens).astype(np.int64)
        raise ConfigError("a 'trace' length distribution needs a trace to resample from (give --trace)")


def _int(text: str) -> int:
    """An integer written plainly (``int()`` alone would also take ``1_000`` and ``+5``)."""
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)
