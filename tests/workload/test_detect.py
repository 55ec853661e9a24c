"""detect_format: every format is recognised from its first line; anything else fails with the headers
that are accepted."""

from __future__ import annotations

import pytest

from polyserve.core.errors import InputError
from polyserve.data import ARXIV_LENGTHS, AZURE_CODE, AZURE_CONV
from polyserve.workload import detect_format

from .helpers import FIXTURES, write

ACCEPTED = (
    "accepted: azure (TIMESTAMP,ContextTokens,GeneratedTokens), "
    "vidur (arrived_at,num_prefill_tokens,num_decode_tokens), "
    "burstgpt (Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type), "
    "lengths (num_prefill_tokens,num_decode_tokens), "
    "mooncake (JSON lines with timestamp, input_length, output_length)"
)


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        (FIXTURES / "azure_2023.csv", "azure"),
        (FIXTURES / "azure_2024.csv", "azure"),
        (AZURE_CONV, "azure"),
        (AZURE_CODE, "azure"),
        (FIXTURES / "vidur_tiers.csv", "vidur"),
        (FIXTURES / "burstgpt.csv", "burstgpt"),
        (FIXTURES / "mooncake.jsonl", "mooncake"),
        (FIXTURES / "mooncake_tiers.jsonl", "mooncake"),
        (FIXTURES / "lengths.csv", "lengths"),
        (ARXIV_LENGTHS, "lengths"),
    ],
)
def test_each_format_is_detected_from_its_first_line(path, fmt):
    assert detect_format(path) == fmt


def test_header_columns_may_come_in_any_order_with_extras(tmp_path):
    p = write(tmp_path, "t.csv", "id,num_decode_tokens,arrived_at,num_prefill_tokens\n1,2,0.0,3\n")
    assert detect_format(p) == "vidur"


def test_a_bom_before_the_header_is_ignored(tmp_path):
    p = write(tmp_path, "t.csv", b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\n")
    assert detect_format(p) == "azure"


def test_unknown_header_names_the_accepted_headers(tmp_path):
    p = write(tmp_path, "t.csv", "time,prompt,completion\n0,1,2\n")
    with pytest.raises(InputError) as e:
        detect_format(p)
    assert str(e.value) == f"{p}:1: header: unrecognised trace header 'time,prompt,completion'; {ACCEPTED}"


def test_empty_file_is_rejected_at_line_1(tmp_path):
    p = write(tmp_path, "t.csv", "")
    with pytest.raises(InputError) as e:
        detect_format(p)
    assert str(e.value) == f"{p}:1: header: file is empty or starts with a blank line; {ACCEPTED}"


def test_json_line_without_mooncake_keys_is_rejected(tmp_path):
    p = write(tmp_path, "t.jsonl", '{"ts": 1, "input_length": 2}\n')
    with pytest.raises(InputError) as e:
        detect_format(p)
    assert str(e.value) == (
        f"{p}:1: header: a JSON line without timestamp, input_length, output_length; {ACCEPTED}"
    )


def test_missing_file_says_it_cannot_be_read(tmp_path):
    p = str(tmp_path / "nope.csv")
    with pytest.raises(InputError) as e:
        detect_format(p)
    assert str(e.value) == f"{p}: file: cannot read trace: No such file or directory"
