"""How far the roofline and BLIS's measured linear model disagree for Llama-3.1-8B on one H100 (printed).

Run with ``-s`` to see the table. The assertions hold the claims the README makes about the two models.
"""

from __future__ import annotations

import math

from polyserve.latency import RooflineLatencyModel, blis_linear_model

KV_PER_SEQ = 1200  # a typical decode context (Azure conversation trace: mean prompt 1,155 tokens)
DECODES = [1, 8, 32, 64, 128, 256]
PREFILLS = [0, 512, 2048, 8192]


def test_print_disagreement_table(h100_8b, capsys) -> None:
    roof, lin = RooflineLatencyModel(h100_8b), blis_linear_model(h100_8b)
    lines = [
        "",
        f"roofline vs BLIS linear, llama-3.1-8b h100 tp1, kv = {KV_PER_SEQ} tokens/seq: ms (roofline/linear)",
        "decode " + "".join(f"| prefill {p:>5}          " for p in PREFILLS),
    ]
    for d in DECODES:
        cells = []
        for p in PREFILLS:
            r, li = roof.iteration_time(d, d * KV_PER_SEQ, p), lin.iteration_time(d, d * KV_PER_SEQ, p)
            assert math.isfinite(r) and r > 0 and math.isfinite(li) and li > 0
            cells.append(f"| {r * 1e3:7.2f} {li * 1e3:7.2f} ({r / li:4.2f}) ")
        lines.append(f"{d:>6} " + "".join(cells))
    slope_roof = (roof.iteration_time(256, 256 * KV_PER_SEQ, 0) - roof.iteration_time(1, KV_PER_SEQ, 0)) / 255
    slope_pre = (roof.iteration_time(1, KV_PER_SEQ, 8192) - roof.iteration_time(1, KV_PER_SEQ, 0)) / 8192
    cap = {
        t: max(b for b in range(1, 4096) if roof.iteration_time(b, b * KV_PER_SEQ, 0) <= t)
        for t in (0.02, 0.05)
    }
    lines += [
        f"decode slope, batch 1..256: roofline {slope_roof * 1e6:.1f}, linear {lin.b2 * 1e6:.1f} us/seq",
        f"prefill slope: roofline {slope_pre * 1e6:.1f} us/token, linear {lin.b1 * 1e6:.1f} us/token",
        f"batch under 20 / 50 ms TPOT: roofline {cap[0.02]} / {cap[0.05]}, linear 44 / 143",
    ]
    with capsys.disabled():
        print("\n".join(lines))

    # The claims: at batch 1 both models agree within 25% (both are dominated by reading the weights);
    # the roofline's decode slope is far below the linear model's (under half), so it admits far larger
    # batches under the same TPOT; its prefill slope is steeper (BLIS's prefill MFU 0.45 is conservative).
    one = roof.iteration_time(1, KV_PER_SEQ, 0) / lin.iteration_time(1, KV_PER_SEQ, 0)
    assert 0.75 < one < 1.25
    assert slope_roof < 0.5 * lin.b2
    assert cap[0.02] > 2 * 44 and cap[0.05] > 2 * 143
    assert slope_pre > lin.b1
