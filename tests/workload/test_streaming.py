"""Readers stream: a large trace costs its numpy columns and a few bytes per row more, never a list of row
objects (which would cost hundreds of bytes per row)."""

from __future__ import annotations

import tracemalloc

import pytest

from polyserve.workload import read_trace

# tracemalloc slows every allocation ~10x, so the files are kept to 50k-100k rows: plenty to tell a few
# bytes per row (columnar) from a few hundred (row objects).


def vidur_row(i: int) -> str:
    return f"{i * 0.01:.3f},{100 + i % 3000},{1 + i % 500}\n"


def azure_row(i: int) -> str:
    stamp = (
        f"2023-11-16 {10 + i // 360_000:02d}:{(i // 6000) % 60:02d}:{(i // 100) % 60:02d}.{i % 100:02d}00000"
    )
    return f"{stamp},{100 + i % 3000},{1 + i % 500}\n"


def mooncake_row(i: int) -> str:
    lengths = f'"input_length": {100 + i % 3000}, "output_length": {1 + i % 500}'
    return f'{{"timestamp": {i * 10}, {lengths}, "hash_ids": [1, 2]}}\n'


CASES = {
    "azure": ("t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n", azure_row, 100_000),
    "vidur": ("t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n", vidur_row, 50_000),
    "mooncake": ("t.jsonl", "", mooncake_row, 50_000),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_reading_a_large_trace_builds_no_row_objects(tmp_path, fmt):
    name, header, row, rows = CASES[fmt]
    path = tmp_path / name
    with open(path, "w", encoding="utf-8") as f:
        f.write(header)
        f.writelines(row(i) for i in range(rows))

    tracemalloc.start()
    try:
        trace = read_trace(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert trace.format == fmt and len(trace) == rows
    columns = trace.arrival_s.nbytes + trace.input_tokens.nbytes + trace.output_tokens.nbytes
    assert columns == 24 * rows
    # Measured: ~1.6 bytes/row beyond the columns (array.array growth slack). 16 leaves room, and is far
    # below even one small Python object per row.
    assert (peak - columns) / rows < 16
