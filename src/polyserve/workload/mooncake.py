"""Streaming reader for Mooncake traces: JSON lines of ``{"timestamp", "input_length", "output_length",
"hash_ids"}``.

``timestamp`` is milliseconds (the Mooncake release writes integers; any finite number >= 0 is taken).
``hash_ids`` (the prompt's KV-block hashes, for prefix-cache studies) is not used, but must be a list when
present, so a file with shifted or mangled keys fails loudly. An optional ``tier`` key names the request's
tier. Line 1 is the first object; blank lines are skipped.
"""

from __future__ import annotations

import array
import json
import math

import numpy as np

from polyserve.core.errors import InputError
from polyserve.core.tiers import TierSet
from polyserve.workload import fields
from polyserve.workload.csv_reader import tier_lookup
from polyserve.workload.formats import ACCEPTED, MOONCAKE_KEYS, NOT_UTF8, TIER_COLUMN, open_text
from polyserve.workload.trace import TraceData, to_numpy


def read_mooncake(path: str, tiers: TierSet | None, sha256: str) -> TraceData:
    """Parse a Mooncake JSONL trace. Raises ``InputError`` on the first bad line."""
    with open_text(path) as f:
        try:
            return _read_lines(path, tiers, sha256, f)
        except UnicodeDecodeError:
            raise InputError(path, None, "file", NOT_UTF8) from None
        except OSError as e:
            raise InputError(path, None, "file", f"cannot read trace: {e.strerror or e}") from None


def _read_lines(path: str, tiers: TierSet | None, sha256: str, f) -> TraceData:
    times = array.array("d")
    ins = array.array("q")
    outs = array.array("q")
    tier_col = array.array("h")
    tier_index: dict[str, int] | None = None  # decided by the first object: with or without a tier key
    prev = 0.0
    inf = math.inf
    for line, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            t = obj["timestamp"]
            a = obj["input_length"]
            b = obj["output_length"]
            h = obj.get("hash_ids")
            ok = (
                type(a) is int
                and type(b) is int
                and a >= 1
                and b >= 1
                and (type(t) is int or type(t) is float)
                and prev <= t < inf
                and (h is None or type(h) is list)
            )
            if tier_index is None:
                tier_index = tier_lookup(path, tiers) if TIER_COLUMN in obj else {}
            k = 0
            if tier_index:
                k = tier_index.get(obj.get(TIER_COLUMN), -1)  # type: ignore[arg-type]
                ok = ok and k >= 0
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            t, a, b, k = _check_line(path, line, raw, tier_index or {}, prev)
        times.append(t)
        ins.append(a)
        outs.append(b)
        if tier_index:
            tier_col.append(k)
        prev = t

    if not ins:
        raise InputError(path, 1, "json", f"no JSON objects in the file; {ACCEPTED}")
    arrival = to_numpy(times, np.float64)
    arrival -= arrival[0]
    arrival /= 1000.0
    return TraceData(
        path=path,
        format="mooncake",
        sha256=sha256,
        arrival_s=arrival,
        input_tokens=to_numpy(ins, np.int64),
        output_tokens=to_numpy(outs, np.int64),
        tier=to_numpy(tier_col, np.int16) if tier_index else None,
    )


def _shown(value: object) -> str:
    return json.dumps(value)[:60]


def _check_line(path: str, line: int, raw: str, tier_index: dict[str, int], prev: float):
    """Re-examine a line that failed the fast path: return its values or raise the exact ``InputError``."""
    try:
        obj = json.loads(raw.strip())
    except json.JSONDecodeError as e:
        raise InputError(path, line, "json", f"not valid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(path, line, "json", f"must be a JSON object with {', '.join(MOONCAKE_KEYS)}")
    for key in MOONCAKE_KEYS:
        if key not in obj:
            raise InputError(path, line, key, f"missing key; every line needs {', '.join(MOONCAKE_KEYS)}")
    t = obj["timestamp"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise InputError(
            path, line, "timestamp", f"must be a finite number of milliseconds >= 0, got {_shown(t)}"
        )
    fields.not_before(t, prev, _shown(t), _shown(prev), path, line, "timestamp")
    counts = []
    for key in ("input_length", "output_length"):
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer() or v < 1:
            raise InputError(path, line, key, f"must be an integer >= 1 (a token count), got {_shown(v)}")
        counts.append(int(v))
    h = obj.get("hash_ids")
    if h is not None and not isinstance(h, list):
        raise InputError(path, line, "hash_ids", f"must be a list of block hashes, got {_shown(h)}")
    k = 0
    if tier_index:
        if TIER_COLUMN not in obj:
            raise InputError(
                path, line, TIER_COLUMN, "missing key; the first line has a tier, so every line needs one"
            )
        tier = obj[TIER_COLUMN]
        if not isinstance(tier, str):
            raise InputError(path, line, TIER_COLUMN, f"must be a tier name (a string), got {_shown(tier)}")
        k = fields.tier_index(tier, tier_index, path, line, TIER_COLUMN)
    return float(t), counts[0], counts[1], k
