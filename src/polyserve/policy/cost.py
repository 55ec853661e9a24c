"""A linear cost model of an engine iteration, fitted once from any latency model.

Why: the router must predict a server in microseconds. A latency model may be a table or a roofline whose
call costs microseconds and which cannot be inverted ("the largest prefill chunk that fits in 12 ms?").
An affine surrogate ``b0 + b1*prefill + b2*decode + b3*kv`` answers both in a few flops. For the fitted
linear (BLIS) model it is exact; for others it is a least-squares fit over the operating range a router
cares about (batches of 1..max_num_seqs, contexts of a few hundred to a few thousand tokens per sequence,
prefill chunks up to the token budget), and ``max_rel_error`` says how good that fit is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from polyserve.core.fleet import IterationTimeModel


@dataclass(frozen=True, slots=True)
class LinearCost:
    b0: float  # s per iteration
    b1: float  # s per prefill token
    b2: float  # s per decode sequence
    b3: float  # s per KV token held by decode sequences
    max_rel_error: float = 0.0  # worst relative error of the fit on its grid (0 = exact)

    def decode(self, n: int, kv: float) -> float:
        """Decode-only iteration time with ``n`` sequences holding ``kv`` tokens."""
        return self.b0 + self.b2 * n + self.b3 * kv

    def iteration(self, n: int, kv: float, prefill: int) -> float:
        return self.b0 + self.b1 * prefill + self.b2 * n + self.b3 * kv

    def max_chunk(self, budget_s: float, n: int, kv: float) -> int:
        """Largest prefill chunk whose iteration (with ``n`` decodes) fits in ``budget_s``; 0 if none."""
        room = budget_s - self.decode(n, kv)
        if room <= 0 or self.b1 <= 0:
            return 0 if room <= 0 else 1 << 30
        return int(room / self.b1)

    def prefill_seconds(self, tokens: int, chunk: int) -> float:
        """Time to prefill ``tokens`` alone in chunks of ``chunk`` (a prefill-only server)."""
        if tokens <= 0:
            return 0.0
        iters = math.ceil(tokens / max(1, chunk))
        return iters * self.b0 + self.b1 * tokens


def fit_cost(model: IterationTimeModel, max_num_seqs: int = 256, max_chunk: int = 8192) -> LinearCost:
    """The surrogate for ``model``: exact for a linear model, else least squares on an operating grid."""
    coeffs = [getattr(model, k, None) for k in ("b0", "b1", "b2", "b3")]
    if all(isinstance(c, int | float) for c in coeffs):
        b0, b1, b2, b3 = (float(c) for c in coeffs)  # type: ignore[arg-type]
        return LinearCost(b0, b1, b2, b3, 0.0)
    rows: list[tuple[float, float, float, float]] = []
    ys: list[float] = []
    for n in (1, 2, 4, 8, 16, 32, 64, 128, max_num_seqs):
        for per_seq in (300, 1200, 3000):
            for p in (0, 256, 1024, max_chunk // 2, max_chunk):
                kv = n * per_seq
                rows.append((1.0, float(p), float(n), float(kv)))
                ys.append(model.iteration_time(n, kv, p))
    # normal equations on 4 unknowns (no numpy: policy/ stays dependency-free), with non-negativity by
    # dropping a negative coefficient and refitting
    active = [0, 1, 2, 3]
    sol = [0.0] * 4
    # relative least squares (each row weighted by 1/y): a 7 ms decode step matters as much as a 300 ms
    # prefill, because TPOT budgets are tens of milliseconds
    wrows = [[x / y for x in r] for r, y in zip(rows, ys, strict=True)]
    ones = [1.0] * len(ys)
    for _ in range(4):
        sol = _lstsq([[r[i] for i in active] for r in wrows], ones)
        full = [0.0] * 4
        for k, i in enumerate(active):
            full[i] = sol[k]
        neg = [i for i in active if full[i] < 0]
        if not neg:
            sol = full
            break
        active = [i for i in active if i not in neg]
        sol = full
    err = max(
        abs(sum(c * x for c, x in zip(sol, r, strict=True)) - y) / y for r, y in zip(rows, ys, strict=True) if y > 0
    )
    return LinearCost(max(sol[0], 0.0), max(sol[1], 0.0), max(sol[2], 0.0), max(sol[3], 0.0), err)


def fit_prefill_envelope(model: IterationTimeModel, max_chunk: int = 8192) -> LinearCost:
    """A prefill-only cost (``b2 = b3 = 0``) that is never below ``model`` on its grid of chunk sizes.

    Why: a test that packs a prefill server's queue up to its predicted end has no margin for the
    surrogate's error, and the least-squares fit of ``fit_cost`` underestimates a convex model's full chunk
    (roofline, Llama-3.1-8B on an H100: 256.1 ms predicted, 297.9 ms in the model, 14%). The envelope is the
    chord from a 1-token iteration to a full chunk, scaled up by the worst ratio of model to chord on the
    grid: a convex model (a weight-read floor, then compute and quadratic attention) stays under its chord,
    so the scale is 1 and the envelope is exact at both ends; for the linear model it is the model itself.
    ``max_rel_error`` is the envelope's worst overestimate on the grid (its price, not an error it misses).
    Failure mode: between grid points a non-convex model (a table) may exceed it.
    """
    chunk = max(2, max_chunk)
    grid = sorted({1, chunk, *(p for p in (16, 64, 256, 512, 1024, 2048, 4096, 6144, chunk // 2) if 1 < p < chunk)})
    ys = {p: model.iteration_time(0, 0, p) for p in grid}
    b1 = max(0.0, (ys[chunk] - ys[1]) / (chunk - 1))
    b0 = max(0.0, ys[1] - b1)
    scale = max([1.0] + [y / (b0 + b1 * p) for p, y in ys.items() if b0 + b1 * p > 0])
    b0, b1 = b0 * scale, b1 * scale
    over = max((b0 + b1 * p - y) / y for p, y in ys.items() if y > 0)
    return LinearCost(b0, b1, 0.0, 0.0, max(0.0, over))


def _lstsq(a: list[list[float]], y: list[float]) -> list[float]:
    """Least squares by normal equations with column scaling (tiny systems only)."""
    k = len(a[0])
    scale = [max(1e-30, math.sqrt(sum(r[j] ** 2 for r in a))) for j in range(k)]
    an = [[r[j] / scale[j] for j in range(k)] for r in a]
    ata = [[sum(r[i] * r[j] for r in an) for j in range(k)] for i in range(k)]
    aty = [sum(r[i] * yy for r, yy in zip(an, y, strict=True)) for i in range(k)]
    # Gaussian elimination with partial pivoting
    m = [[*row, aty[i]] for i, row in enumerate(ata)]
    for c in range(k):
        piv = max(range(c, k), key=lambda r: abs(m[r][c]))
        m[c], m[piv] = m[piv], m[c]
        if abs(m[c][c]) < 1e-18:
            continue
        for r in range(k):
            if r != c:
                f = m[r][c] / m[c][c]
                for j in range(c, k + 1):
                    m[r][j] -= f * m[c][j]
    return [(m[i][k] / m[i][i] if abs(m[i][i]) > 1e-18 else 0.0) / scale[i] for i in range(k)]
