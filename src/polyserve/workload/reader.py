"""``read_trace``: detect a trace's format, parse it, fingerprint it.

Everything a trace can get wrong is caught here, before a simulation starts: the first bad row raises an
``InputError`` whose text is ``FILE:LINE: FIELD: what is wrong`` (the header is line 1; for JSON lines the
first object is line 1; FIELD is the column as the file spells it).
"""

from __future__ import annotations

from pathlib import Path

from polyserve.core.errors import ConfigError
from polyserve.core.tiers import TierSet
from polyserve.workload.csv_reader import read_csv
from polyserve.workload.formats import CSV_LAYOUTS, FORMATS, detect_format
from polyserve.workload.mooncake import read_mooncake
from polyserve.workload.trace import TraceData, file_sha256


def read_trace(path: str | Path, fmt: str | None = None, tiers: TierSet | None = None) -> TraceData:
    """Read the trace at ``path``.

    ``fmt`` forces a format (one of ``FORMATS``); None detects it from the first line. ``tiers`` is needed
    only when the file has a ``tier`` column (names are mapped to indices into it; an unknown name is an
    ``InputError``). Raises ``ConfigError`` for an unknown ``fmt`` or a tier column without ``tiers``.
    """
    path = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown trace format {fmt!r}; known formats: {', '.join(FORMATS)}")
    digest = file_sha256(path)  # also the first check that the file can be read at all
    if fmt is None:
        fmt = detect_format(path)
    if fmt == "mooncake":
        return read_mooncake(path, tiers, digest)
    return read_csv(path, CSV_LAYOUTS[fmt], tiers, digest)
