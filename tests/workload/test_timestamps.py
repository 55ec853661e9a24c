"""WallClock: exact, fast parsing of Azure wall-clock stamps."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyserve.workload.timestamps import WallClock


def test_seven_fractional_digits_are_all_kept():
    clock = WallClock()
    assert clock("2023-11-16 18:15:46.6805900") == pytest.approx(18 * 3600 + 15 * 60 + 46.68059, abs=1e-9)
    assert clock("2023-11-16 18:15:46.6805901") - clock("2023-11-16 18:15:46.6805900") == pytest.approx(
        1e-7, abs=1e-9
    )


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("2024-05-10 00:00:01", 1.0),
        ("2024-05-10 00:00:01.5", 1.5),
        ("2024-05-10T00:00:01.25", 1.25),
        ("2024-05-10 00:00:01Z", 1.0),
        ("2024-05-10 00:00:01.009930+00:00", 1.00993),
        ("2024-05-10 02:00:01+02:00", 1.0),
        ("2024-05-09 23:00:01-01:00", 1.0),
        ("2024-05-10 05:30:01+0530", 1.0),
        ("2024-05-11 00:00:01", 86401.0),
    ],
)
def test_offsets_and_fraction_lengths(stamp, seconds):
    clock = WallClock()
    clock("2024-05-10 00:00:00")  # fixes the base date
    assert clock(stamp) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12.5",
        "2023-11-16",
        "2023-11-16 18:15",
        "2023-02-30 00:00:00",
        "2023-11-16 24:00:00",
        "2023-11-16 18:60:00",
        "2023-11-16 18:15:61",
        "2023-11-16 18:15:4x",
        "2023-11-16 18:15:nan",
        "2023-11-16 18:15:1e1",
        "2023-11-16 18:15:4_6",
        "2023-11-16 18:15:46.",
        "2023-11-16 18:15:46+5",
    ],
)
def test_malformed_stamps_raise_value_error_even_after_the_minute_is_cached(bad):
    clock = WallClock()
    clock("2023-11-16 18:15:00")  # warms the cache for that minute
    with pytest.raises(ValueError):
        clock(bad)


stamps = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1))


@settings(max_examples=200, deadline=None)
@given(first=stamps, others=st.lists(stamps, min_size=1, max_size=20), sep=st.sampled_from([" ", "T"]))
def test_matches_datetime_arithmetic_and_the_cache_changes_nothing(first, others, sep):
    clock = WallClock()
    base = dt.datetime.combine(first.date(), dt.time())
    for when in [first, *others]:
        text = when.isoformat(sep=sep)
        expected = (when - base).total_seconds()
        got = clock(text)
        assert got == pytest.approx(expected, abs=1e-6)
        assert clock(text) == got  # second parse hits the cached minute: bit-identical
