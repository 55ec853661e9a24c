"""Tiny helpers shared by the latency tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyserve.latency import Deployment, get_deployment
from polyserve.latency.table import LAYER_OPS


@pytest.fixture(scope="session")
def h100_8b() -> Deployment:
    return get_deployment("llama-3.1-8b", "h100", 1)


def write_mlp_csv(
    path: Path, rows: list[tuple[int, int, float]], *, shape: tuple[int, int, int, int]
) -> Path:
    """A minimal Vidur mlp.csv: (tp, num_tokens, per-op median ms) rows; every layer op gets that median.

    ``shape`` is (n_head, n_kv_head, n_embd, n_expanded_embd). The per-layer sum is ``len(LAYER_OPS) * ms``.
    """
    ops = ("emb", *LAYER_OPS)
    stats = [f"time_stats.{op}.{s}" for op in ops for s in ("min", "max", "mean", "median", "std")]
    header = [*stats, "n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp"]
    header += ["num_tokens", "num_tensor_parallel_workers"]
    lines = [",".join(header)]
    for tp, n, ms in rows:
        vals = [str(ms)] * len(stats)
        lines.append(",".join([*vals, *map(str, shape), "128256", "True", str(n), str(tp)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
