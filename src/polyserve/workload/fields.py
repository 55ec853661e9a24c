"""Field checks shared by the readers, each raising an ``InputError`` that says what is allowed.

Readers parse rows with a fast path (plain ``int()``/``float()`` and one combined test) and call these only
when that test fails, so the careful messages cost nothing on good rows.
"""

from __future__ import annotations

import math

from polyserve.core.errors import InputError


def token_count(text: str, path: str, line: int, field: str) -> int:
    """An integer >= 1. ``"12.0"`` is taken as 12 (some tools write counts as floats); ``"12.5"`` is not."""
    value: int | None
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = math.nan
        value = int(f) if math.isfinite(f) and f.is_integer() else None
    if value is None or value < 1:
        raise InputError(path, line, field, f"must be an integer >= 1 (a token count), got {text!r}")
    return value


def seconds(text: str, path: str, line: int, field: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise InputError(path, line, field, f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def not_before(
    value: float, previous: float, shown: str, previous_shown: str, path: str, line: int, field: str
):
    """Timestamps must not decrease (ties are fine: requests may arrive in the same instant)."""
    if value < previous:
        raise InputError(
            path,
            line,
            field,
            f"timestamps must not decrease: {shown!r} is earlier than the previous row's {previous_shown!r}",
        )


def tier_index(text: str, index: dict[str, int], path: str, line: int, field: str) -> int:
    """The index of the tier named ``text`` (surrounding spaces ignored)."""
    i = index.get(text.strip())
    if i is None:
        raise InputError(path, line, field, f"unknown tier {text!r}; known tiers: {', '.join(index)}")
    return i
