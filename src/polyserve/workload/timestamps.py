"""Wall-clock timestamps as the Azure LLM inference traces write them.

The 2023 files write ``2023-11-16 18:15:46.6805900`` (seven fractional digits, one more than ``datetime``
keeps); the 2024 week-long files use the same header and may carry other fractional lengths and a UTC
offset (``2024-05-10 00:00:00.009930+00:00``). Every fractional digit is kept.

Speed: a trace has few distinct minutes, so the seconds at the start of each minute are cached under the
stamp's first 16 characters (plus its offset); a row then costs a dictionary lookup and one ``float()``
(about 1 us). A stamp in any other shape goes through a full regular expression, which also fills the cache.

Precision: seconds are counted from midnight (UTC) of the *first* date seen, not from an epoch, so a
float64 keeps sub-microsecond precision across a week-long trace (epoch seconds, ~1.7e9, would keep ~0.2 us).

Failure modes: ``WallClock.__call__`` raises ``ValueError`` on text that is not such a timestamp or names an
impossible date or time; the reader turns that into an ``InputError`` naming the row. A stamp without an
offset is read as UTC, so a file mixing naive and ``+00:00`` stamps still reads consistently.
"""

from __future__ import annotations

import datetime as _dt
import re

_STAMP = re.compile(
    r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)\s*(Z|[+-]\d{2}:?\d{2})?\s*\Z",
    re.ASCII,
)

EXAMPLE = "2023-11-16 18:15:46.6805900"


def _split_offset(text: str) -> tuple[str, str]:
    """``("2024-05-10 00:00:00.1", "+00:00")`` from ``"2024-05-10 00:00:00.1+00:00"``; offset "" if none."""
    if text[-6:-5] in ("+", "-") and text[-3:-2] == ":":
        return text[:-6], text[-6:]
    if text[-1:] == "Z":
        return text[:-1], "Z"
    return text, ""


class WallClock:
    """Parses wall-clock stamps into seconds since midnight UTC of the first date it was given.

    Stateful only in that the first call fixes the base date; each reader needs its own instance.
    """

    __slots__ = ("_base", "_minutes")

    def __init__(self) -> None:
        self._base: int | None = None  # proleptic ordinal of the first date seen
        self._minutes: dict[str, float] = {}  # "YYYY-MM-DD HH:MM" + offset -> seconds at that minute's start

    def __call__(self, text: str) -> float:
        body, offset = _split_offset(text)
        start = self._minutes.get(body[:16] + offset)
        if start is not None and body[16:17] == ":":
            rest = body[17:]
            # Plain "SS" or "SS.ffff" only: float() alone would also take "1e1", "nan" or "4_6".
            if (
                rest[:2].isdigit()
                and rest.isascii()
                and (len(rest) == 2 or (rest[2] == "." and rest[3:].isdigit()))
            ):
                seconds = float(rest)
                if seconds < 61.0:
                    return start + seconds
        return self._parse_slow(text)

    def _parse_slow(self, text: str) -> float:
        m = _STAMP.match(text)
        if m is None:
            raise ValueError(text)
        date, hh, mm, ss, tz = m.groups()
        ordinal = _dt.date.fromisoformat(date).toordinal()  # ValueError on 2023-02-30
        if self._base is None:
            self._base = ordinal
        hours, minutes, seconds = int(hh), int(mm), float(ss)
        if hours > 23 or minutes > 59 or seconds >= 61.0:  # 60.x is a leap second
            raise ValueError(text)
        shift = 0
        if tz is not None and tz != "Z":
            digits = tz[1:].replace(":", "")
            shift = (-1 if tz[0] == "-" else 1) * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        start = float((ordinal - self._base) * 86400 + hours * 3600 + minutes * 60 - shift)
        if text == text.strip() and text[10] == " ":
            body, offset = _split_offset(text)
            self._minutes[body[:16] + offset] = start
        return start + seconds
