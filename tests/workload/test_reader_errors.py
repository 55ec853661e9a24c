"""Every bad trace fails before anything runs, with one line ``FILE:LINE: FIELD: what is wrong``.

LINE is 1-based with the header as line 1 (for JSON lines, the first object is line 1); FIELD is the column
as the file spells it.
"""

from __future__ import annotations

import pytest

from polyserve.core.errors import InputError
from polyserve.workload import read_trace

from .helpers import default_tiers, write

VIDUR = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BURST = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
COUNT = "must be an integer >= 1 (a token count), got"
STAMP = (
    "must be a date-time like '2023-11-16 18:15:46.6805900' (optionally with a UTC offset such as +00:00), "
    "got"
)

CSV_CASES = {
    "non-numeric count": (VIDUR + "0.0,10,5\n1.0,abc,5\n", f"3: num_prefill_tokens: {COUNT} 'abc'"),
    "negative count": (VIDUR + "0.0,10,-3\n", f"2: num_decode_tokens: {COUNT} '-3'"),
    "zero prompt": (VIDUR + "0.0,0,5\n", f"2: num_prefill_tokens: {COUNT} '0'"),
    "fractional count": (VIDUR + "0.0,12.5,5\n", f"2: num_prefill_tokens: {COUNT} '12.5'"),
    "empty count": (VIDUR + "0.0,,5\n", f"2: num_prefill_tokens: {COUNT} ''"),
    "nan time": (
        VIDUR + "nan,10,5\n",
        "2: arrived_at: must be a finite number of seconds >= 0, got 'nan'",
    ),
    "inf time": (
        VIDUR + "0,1,1\ninf,10,5\n",
        "3: arrived_at: must be a finite number of seconds >= 0, got 'inf'",
    ),
    "negative time": (
        VIDUR + "-1.0,10,5\n",
        "2: arrived_at: must be a finite number of seconds >= 0, got '-1.0'",
    ),
    "decreasing time": (
        VIDUR + "0.0,1,1\n2.0,1,1\n1.5,1,1\n",
        "4: arrived_at: timestamps must not decrease: '1.5' is earlier than the previous row's '2.0'",
    ),
    "first bad field in column order": (VIDUR + "x,-1,abc\n", "2: arrived_at: must be a finite number"),
    "short row": (
        VIDUR + "0.0,10\n",
        "2: num_decode_tokens: missing value: the row has 2 fields, the header has 3",
    ),
    "long row": (
        VIDUR + "0.0,10,5,7\n",
        "2: row: the row has 4 fields, the header has 3 (quote a field that contains a comma)",
    ),
    "header only": (VIDUR, "2: rows: no data rows after the header"),
    "header and blank lines only": (VIDUR + "\n\n", "2: rows: no data rows after the header"),
    "bad azure stamp": (
        AZURE + "2023-11-16 18:15:46.6805900,1,1\n2023-13-01 00:00:00,1,1\n",
        f"3: TIMESTAMP: {STAMP} '2023-13-01 00:00:00'",
    ),
    "azure stamp as seconds": (AZURE + "12.5,1,1\n", f"2: TIMESTAMP: {STAMP} '12.5'"),
    "decreasing azure stamp": (
        AZURE + "2023-11-16 18:15:46.6805900,1,1\n2023-11-16 18:15:46.6805899,1,1\n",
        "3: TIMESTAMP: timestamps must not decrease: '2023-11-16 18:15:46.6805899' is earlier than "
        "the previous row's '2023-11-16 18:15:46.6805900'",
    ),
    "azure zero output": (
        AZURE + "2023-11-16 18:15:46.6805900,1,0\n",
        f"2: GeneratedTokens: {COUNT} '0'",
    ),
    "burstgpt all failed": (
        BURST + "5,ChatGPT,472,0,472,Conversation log\n9,GPT-4,12,0,12,API log\n",
        "2: Response tokens: no usable rows: all 2 rows are failed requests (Response tokens 0)",
    ),
    "burstgpt zero request": (
        BURST + "5,ChatGPT,0,18,18,Conversation log\n",
        f"2: Request tokens: {COUNT} '0'",
    ),
    "burstgpt negative response is not a failure": (
        BURST + "5,ChatGPT,10,-1,9,Conversation log\n",
        f"2: Response tokens: {COUNT} '-1'",
    ),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_bad_csv_rows_name_file_line_field_and_what_is_allowed(tmp_path, case):
    text, expected = CSV_CASES[case]
    p = write(tmp_path, "t.csv", text)
    with pytest.raises(InputError) as e:
        read_trace(p)
    assert str(e.value).startswith(f"{p}:{expected}"), str(e.value)


def test_unknown_tier_lists_the_known_tiers(tmp_path):
    p = write(
        tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,tier\n0,1,1,t20\n1,1,1,t7\n"
    )
    with pytest.raises(InputError) as e:
        read_trace(p, tiers=default_tiers())
    assert str(e.value) == f"{p}:3: tier: unknown tier 't7'; known tiers: t20, t30, t50, t100"


@pytest.mark.parametrize(
    ("fmt", "header", "expected"),
    [
        (
            "azure",
            "TIMESTAMP,ContextTokens\n",
            "GeneratedTokens: missing column; the azure format needs "
            "TIMESTAMP, ContextTokens, GeneratedTokens",
        ),
        (
            "vidur",
            "num_prefill_tokens,num_decode_tokens\n",
            "arrived_at: missing column; the vidur format needs "
            "arrived_at, num_prefill_tokens, num_decode_tokens",
        ),
        (
            "burstgpt",
            "Timestamp,Model,Request tokens,Total tokens\n",
            "Response tokens: missing column; the "
            "burstgpt format needs Timestamp, Request tokens, Response tokens",
        ),
    ],
)
def test_missing_column_is_reported_on_the_header_line(tmp_path, fmt, header, expected):
    p = write(tmp_path, "t.csv", header + "1,2,3\n")
    with pytest.raises(InputError) as e:
        read_trace(p, fmt=fmt)
    assert str(e.value) == f"{p}:1: {expected}"


def test_forced_format_on_an_empty_file(tmp_path):
    p = write(tmp_path, "t.csv", "")
    with pytest.raises(InputError) as e:
        read_trace(p, fmt="vidur")
    assert str(e.value).startswith(f"{p}:1: header: file is empty; accepted: azure")


def test_non_utf8_bytes_are_reported(tmp_path):
    p = write(tmp_path, "t.csv", VIDUR.encode() + b"0,1,1\n1,\xff\xfe,1\n")
    with pytest.raises(InputError) as e:
        read_trace(p)
    assert str(e.value) == f"{p}: file: not UTF-8 text; traces are UTF-8 CSV or JSON lines"


def test_a_directory_is_unreadable(tmp_path):
    with pytest.raises(InputError) as e:
        read_trace(tmp_path)
    assert str(e.value) == f"{tmp_path}: file: cannot read trace: Is a directory"


MOON = '{"timestamp": 0, "input_length": 5, "output_length": 2}\n'
MOON_CASES = {
    "invalid json": (
        MOON + '{"timestamp": 1,\n',
        "2: json: not valid JSON: Expecting property name enclosed in double quotes (column 17)",
    ),
    "not an object": (
        MOON + "[1, 2, 3]\n",
        "2: json: must be a JSON object with timestamp, input_length, output_length",
    ),
    "missing key": (
        MOON + '{"timestamp": 1, "input_length": 5}\n',
        "2: output_length: missing key; every line needs timestamp, input_length, output_length",
    ),
    "negative length": (
        MOON + '{"timestamp": 1, "input_length": -3, "output_length": 2}\n',
        f"2: input_length: {COUNT} -3",
    ),
    "boolean length": (
        MOON + '{"timestamp": 1, "input_length": 4, "output_length": true}\n',
        f"2: output_length: {COUNT} true",
    ),
    "string timestamp": (
        MOON + '{"timestamp": "1", "input_length": 4, "output_length": 2}\n',
        '2: timestamp: must be a finite number of milliseconds >= 0, got "1"',
    ),
    "nan timestamp": (
        MOON + '{"timestamp": NaN, "input_length": 4, "output_length": 2}\n',
        "2: timestamp: must be a finite number of milliseconds >= 0, got NaN",
    ),
    "decreasing timestamp": (
        '{"timestamp": 10, "input_length": 5, "output_length": 2}\n'
        '{"timestamp": 9, "input_length": 5, "output_length": 2}\n',
        "2: timestamp: timestamps must not decrease: '9' is earlier than the previous row's '10'",
    ),
    "hash_ids not a list": (
        MOON + '{"timestamp": 1, "input_length": 4, "output_length": 2, "hash_ids": 7}\n',
        "2: hash_ids: must be a list of block hashes, got 7",
    ),
}


@pytest.mark.parametrize("case", list(MOON_CASES))
def test_bad_mooncake_lines_name_file_line_key_and_what_is_allowed(tmp_path, case):
    text, expected = MOON_CASES[case]
    p = write(tmp_path, "t.jsonl", text)
    with pytest.raises(InputError) as e:
        read_trace(p)
    assert str(e.value) == f"{p}:{expected}"


def test_mooncake_unknown_tier(tmp_path):
    p = write(
        tmp_path,
        "t.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 2, "tier": "t30"}\n'
        '{"timestamp": 1, "input_length": 5, "output_length": 2, "tier": "gold"}\n',
    )
    with pytest.raises(InputError) as e:
        read_trace(p, tiers=default_tiers())
    assert str(e.value) == f"{p}:2: tier: unknown tier 'gold'; known tiers: t20, t30, t50, t100"


def test_mooncake_with_no_objects(tmp_path):
    p = write(tmp_path, "t.jsonl", "\n\n")
    with pytest.raises(InputError) as e:
        read_trace(p, fmt="mooncake")
    assert str(e.value).startswith(f"{p}:1: json: no JSON objects in the file")
