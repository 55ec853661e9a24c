"""Trace formats PolyServe reads, and how a file's first line says which one it is.

Each CSV format is a ``CsvLayout``: which columns hold the arrival time and the token counts, and how the
time is written. Columns are matched by their exact name as the file spells them (``TIMESTAMP`` for Azure,
``Timestamp`` for BurstGPT); extra columns are allowed and ignored, except an optional ``tier`` column.

=========  ===========================================================  ======================================
format     first line                                                   arrival time
=========  ===========================================================  ======================================
azure      ``TIMESTAMP,ContextTokens,GeneratedTokens``                  wall clock, ``2023-11-16 18:15:46.68``
vidur      ``arrived_at,num_prefill_tokens,num_decode_tokens``          seconds (float)
burstgpt   ``Timestamp,Model,Request tokens,Response tokens,...``       seconds (float)
lengths    ``num_prefill_tokens,num_decode_tokens`` (no ``arrived_at``)  none: lengths only
mooncake   a JSON object with ``timestamp``, ``input_length``,          milliseconds (number)
           ``output_length`` (one object per line)
=========  ===========================================================  ======================================

Failure modes: ``detect_format`` raises ``InputError`` (line 1) for an unreadable or empty file and for a
first line no format claims, listing the accepted headers.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from polyserve.core.errors import InputError

TIER_COLUMN = "tier"  # optional in every format: tier names, validated against the TierSet


@dataclass(frozen=True)
class CsvLayout:
    """Where a CSV format keeps the fields PolyServe needs."""

    name: str
    time: str | None  # arrival-time column; None for a lengths-only file
    input: str  # prompt tokens
    output: str  # generated tokens
    wall_clock: bool = False  # time written as a date-time string (Azure) rather than seconds
    # BurstGPT logs failed requests as rows with zero response tokens; they never produced output, so they
    # are skipped (and counted) rather than rejected as invalid.
    skip_zero_output: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in (self.time, self.input, self.output) if c is not None)


CSV_LAYOUTS: dict[str, CsvLayout] = {
    "azure": CsvLayout("azure", "TIMESTAMP", "ContextTokens", "GeneratedTokens", wall_clock=True),
    "burstgpt": CsvLayout(
        "burstgpt", "Timestamp", "Request tokens", "Response tokens", skip_zero_output=True
    ),
    "vidur": CsvLayout("vidur", "arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    "lengths": CsvLayout("lengths", None, "num_prefill_tokens", "num_decode_tokens"),
}
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
FORMATS: tuple[str, ...] = ("azure", "vidur", "burstgpt", "mooncake", "lengths")

ACCEPTED = (
    "accepted: azure (TIMESTAMP,ContextTokens,GeneratedTokens), "
    "vidur (arrived_at,num_prefill_tokens,num_decode_tokens), "
    "burstgpt (Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type), "
    "lengths (num_prefill_tokens,num_decode_tokens), "
    "mooncake (JSON lines with timestamp, input_length, output_length)"
)


def open_text(path: str):
    """Open a trace as UTF-8 text (a leading BOM is dropped); ``InputError`` if it cannot be opened."""
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise InputError(path, None, "file", f"cannot read trace: {e.strerror or e}") from None


NOT_UTF8 = "not UTF-8 text; traces are UTF-8 CSV or JSON lines"


def read_first_line(path: str) -> str:
    """The file's first line, decoded on its own (so a bad byte further on is reported where it is)."""
    try:
        with open(path, "rb") as f:
            raw = f.readline()
    except OSError as e:
        raise InputError(path, None, "file", f"cannot read trace: {e.strerror or e}") from None
    try:
        first = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, 1, "file", NOT_UTF8) from None
    if not first.strip():
        raise InputError(path, 1, "header", f"file is empty or starts with a blank line; {ACCEPTED}")
    return first


def csv_header(line: str) -> list[str]:
    """Column names of a CSV header line, stripped of surrounding spaces."""
    return [name.strip() for name in next(csv.reader([line]), [])]


def detect_format(path: str | Path) -> str:
    """The format of the trace at ``path``, judged from its first line alone.

    A line starting with ``{`` must be a Mooncake JSON object; otherwise the line is a CSV header, checked
    in the order azure, burstgpt, vidur, lengths (``lengths`` is vidur without ``arrived_at``).
    """
    path = str(path)
    first = read_first_line(path)
    if first.lstrip().startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and all(k in obj for k in MOONCAKE_KEYS):
            return "mooncake"
        raise InputError(
            path, 1, "header", f"a JSON line without timestamp, input_length, output_length; {ACCEPTED}"
        )
    names = set(csv_header(first))
    for layout in CSV_LAYOUTS.values():
        if set(layout.required) <= names:
            return layout.name
    shown = first.strip()
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise InputError(path, 1, "header", f"unrecognised trace header {shown!r}; {ACCEPTED}")
