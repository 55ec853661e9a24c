"""``TraceData``: one trace file, parsed into compact numpy columns.

A trace is held as columns, never as a list of row objects: a million-row trace costs ~26 MB (three 8-byte
columns and a 2-byte tier column), not the ~500 MB a list of small Python objects would. The readers append
each row into ``array.array`` buffers and hand them to numpy without copying.
"""

from __future__ import annotations

import array
import hashlib
from dataclasses import dataclass, field

import numpy as np

from polyserve.core.errors import InputError


@dataclass
class TraceData:
    """One trace file as columns, in file order (which the readers check is arrival order)."""

    path: str
    format: str  # "azure" | "vidur" | "burstgpt" | "mooncake" | "lengths"
    sha256: str  # of the file's bytes: reports name the exact input they were computed from
    arrival_s: np.ndarray | None  # float64 seconds since the first row; None for a lengths-only file
    input_tokens: np.ndarray  # int64, each >= 1
    output_tokens: np.ndarray  # int64, each >= 1
    tier: np.ndarray | None  # int16 index into the TierSet given to read_trace; None without a tier column
    # Rows left out on purpose, by reason (BurstGPT's failed requests: "response_tokens_zero"), so a report
    # can say how much of the file was not used.
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.input_tokens)
        for name in ("arrival_s", "output_tokens", "tier"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"TraceData.{name} has {len(col)} rows, input_tokens has {n}")

    def __len__(self) -> int:
        return len(self.input_tokens)

    @property
    def span_s(self) -> float:
        """Seconds from the first arrival to the last (0 for a lengths-only file or a single row)."""
        if self.arrival_s is None or len(self.arrival_s) == 0:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rate(self) -> float | None:
        """Requests per second as ``(n - 1) / span``: n arrivals bound n - 1 gaps.

        None when it is undefined (no timestamps, fewer than two rows, or every row at one instant).
        """
        span = self.span_s
        if self.arrival_s is None or len(self) < 2 or span <= 0:
            return None
        return (len(self) - 1) / span

    def describe(self) -> dict[str, object]:
        """JSON-able provenance for reports."""
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "rows": len(self),
            "skipped": dict(self.skipped),
            "span_s": self.span_s if self.arrival_s is not None else None,
            "has_tier_column": self.tier is not None,
        }


def file_sha256(path: str) -> str:
    """SHA-256 of the file's bytes, read in chunks (the file is never held whole in memory)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 18):
                h.update(chunk)
    except OSError as e:
        raise InputError(path, None, "file", f"cannot read trace: {e.strerror or e}") from None
    return h.hexdigest()


def to_numpy(buf: array.array, dtype: type) -> np.ndarray:
    """A numpy view of an ``array.array`` (no copy: the view keeps the buffer alive)."""
    return np.frombuffer(buf, dtype=dtype)
