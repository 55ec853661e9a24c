"""Streaming reader for the CSV trace formats (azure, vidur, burstgpt, lengths).

Rows are read one at a time with the ``csv`` module and appended to ``array.array`` columns, so memory is
the columns plus one row. Each row takes a fast path (plain ``int``/``float`` and one combined test); only a
row that fails it is re-examined field by field, in file column order, to raise the exact ``InputError``.

Line numbers are the CSV reader's physical line (the header is line 1); blank lines are skipped.
"""

from __future__ import annotations

import array
import csv
import math
from collections.abc import Callable

import numpy as np

from polyserve.core.errors import ConfigError, InputError
from polyserve.core.tiers import TierSet
from polyserve.workload import fields
from polyserve.workload.formats import ACCEPTED, NOT_UTF8, TIER_COLUMN, CsvLayout, open_text
from polyserve.workload.timestamps import EXAMPLE, WallClock
from polyserve.workload.trace import TraceData, to_numpy


def tier_lookup(path: str, tiers: TierSet | None) -> dict[str, int]:
    if tiers is None:
        raise ConfigError(
            f"{path} has a '{TIER_COLUMN}' column; pass the TierSet (tiers=...) to map its names"
        )
    return {name: i for i, name in enumerate(tiers.names)}


def read_csv(path: str, layout: CsvLayout, tiers: TierSet | None, sha256: str) -> TraceData:
    """Parse a CSV trace of the given layout. Raises ``InputError`` on the first bad row."""
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            return _read_rows(path, layout, tiers, sha256, reader)
        except UnicodeDecodeError:
            raise InputError(path, None, "file", NOT_UTF8) from None
        except csv.Error as e:
            raise InputError(path, reader.line_num, "file", f"malformed CSV: {e}") from None
        except OSError as e:
            raise InputError(path, None, "file", f"cannot read trace: {e.strerror or e}") from None


def _read_rows(path: str, layout: CsvLayout, tiers: TierSet | None, sha256: str, reader) -> TraceData:
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise InputError(path, 1, "header", f"file is empty; {ACCEPTED}") from None
    for column in layout.required:
        if column not in header:
            raise InputError(
                path,
                1,
                column,
                f"missing column; the {layout.name} format needs {', '.join(layout.required)}",
            )
    ncols = len(header)
    i_time = header.index(layout.time) if layout.time is not None else -1
    i_in = header.index(layout.input)
    i_out = header.index(layout.output)
    i_tier = header.index(TIER_COLUMN) if TIER_COLUMN in header else -1
    tier_index = tier_lookup(path, tiers) if i_tier >= 0 else {}
    timed = i_time >= 0
    parse_time: Callable[[str], float] = WallClock() if layout.wall_clock else float
    # Seconds columns must be >= 0; wall-clock times may sit before the first date's midnight (UTC offsets).
    prev = -math.inf if layout.wall_clock else 0.0
    prev_text = ""
    inf = math.inf

    times = array.array("d")
    ins = array.array("q")
    outs = array.array("q")
    tier_col = array.array("h")
    skipped = 0

    t = 0.0
    k = 0
    for row in reader:
        if not row:
            continue
        try:
            if timed:
                t = parse_time(row[i_time])
            a = int(row[i_in])
            b = int(row[i_out])
            ok = a >= 1 and b >= 1 and prev <= t < inf and len(row) == ncols
            if i_tier >= 0:
                k = tier_index.get(row[i_tier], -1)
                ok = ok and k >= 0
        except (ValueError, IndexError):
            ok = False
        if not ok:
            good = _check_row(
                path,
                reader.line_num,
                row,
                header,
                layout,
                i_time,
                i_in,
                i_out,
                i_tier,
                tier_index,
                parse_time,
                prev,
                prev_text,
            )
            if good is None:
                skipped += 1
                continue
            t, a, b, k = good
        if timed:
            times.append(t)
            prev = t
            prev_text = row[i_time]
        ins.append(a)
        outs.append(b)
        if i_tier >= 0:
            tier_col.append(k)

    if not ins:
        if skipped:
            raise InputError(
                path,
                2,
                layout.output,
                f"no usable rows: all {skipped} rows are failed requests ({layout.output} 0)",
            )
        raise InputError(path, 2, "rows", "no data rows after the header")
    arrival = None
    if timed:
        arrival = to_numpy(times, np.float64)
        arrival -= arrival[0]
    return TraceData(
        path=path,
        format=layout.name,
        sha256=sha256,
        arrival_s=arrival,
        input_tokens=to_numpy(ins, np.int64),
        output_tokens=to_numpy(outs, np.int64),
        tier=to_numpy(tier_col, np.int16) if i_tier >= 0 else None,
        skipped={"response_tokens_zero": skipped} if layout.skip_zero_output else {},
    )


def _check_row(
    path: str,
    line: int,
    row: list[str],
    header: list[str],
    layout: CsvLayout,
    i_time: int,
    i_in: int,
    i_out: int,
    i_tier: int,
    tier_index: dict[str, int],
    parse_time: Callable[[str], float],
    prev: float,
    prev_text: str,
) -> tuple[float, int, int, int] | None:
    """Re-examine a row that failed the fast path: return its values, None to skip it, or raise."""
    if len(row) < len(header):
        raise InputError(
            path,
            line,
            header[len(row)],
            f"missing value: the row has {len(row)} fields, the header has {len(header)}",
        )
    if len(row) > len(header):
        raise InputError(
            path,
            line,
            "row",
            f"the row has {len(row)} fields, the header has {len(header)} "
            "(quote a field that contains a comma)",
        )
    if layout.skip_zero_output and row[i_out].strip() in ("0", "0.0"):
        return None  # a failed BurstGPT request: it produced no tokens
    t, a, b, k = 0.0, 0, 0, 0
    for i in sorted(i for i in (i_time, i_in, i_out, i_tier) if i >= 0):
        name, text = header[i], row[i]
        if i == i_time:
            t = _time(text, path, line, name, layout, parse_time)
            fields.not_before(t, prev, text, prev_text, path, line, name)
        elif i == i_in:
            a = fields.token_count(text, path, line, name)
        elif i == i_out:
            b = fields.token_count(text, path, line, name)
        else:
            k = fields.tier_index(text, tier_index, path, line, name)
    return t, a, b, k


def _time(text: str, path: str, line: int, name: str, layout: CsvLayout, parse_time: Callable[[str], float]):
    if not layout.wall_clock:
        return fields.seconds(text, path, line, name)
    try:
        return parse_time(text)
    except ValueError:
        raise InputError(
            path,
            line,
            name,
            f"must be a date-time like '{EXAMPLE}' (optionally with a UTC offset such as +00:00), "
            f"got {text!r}",
        ) from None
