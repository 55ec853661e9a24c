"""Tiny configs for bench tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

TWO_TIERS = """
[[tier]]
name = "fast"
tpot_ms = 10
ttft_ms = 100
weight = 1

[[tier]]
name = "slow"
tpot_ms = 50
ttft_ms = 400
weight = 1
"""


def two_tiers(tmp_path: Path) -> str:
    p = tmp_path / "tiers.toml"
    p.write_text(TWO_TIERS, encoding="utf-8")
    return str(p)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
