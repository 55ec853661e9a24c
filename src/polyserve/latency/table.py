"""A latency model interpolated from a measured kernel profile (Vidur's ``mlp.csv`` layout).

Why: a roofline guesses kernel efficiency; a profile measured it. Vidur (Agrawal et al., MLSys'24) ships
per-operator kernel times for the non-attention part of one transformer layer at many token counts and TP
degrees; this model replays them.

The algorithm:
1. Read the CSV. Times are **milliseconds per layer per operator** (Vidur's CUDA timer records ms). Keep the
   rows whose ``num_tensor_parallel_workers`` is the deployment's TP.
2. Per row, sum the ``time_stats.<op>.median`` of the layer's ops: ``input_layernorm``, ``attn_pre_proj``,
   ``attn_rope``, ``attn_post_proj``, ``post_attention_layernorm``, ``mlp_up_proj``, ``mlp_act``,
   ``mlp_down_proj``, ``add`` (the set Vidur's ``ExecutionTime`` sums per block; ``emb`` is per model, not per
   layer, and Vidur leaves it out too). Rows with the same ``num_tokens`` are averaged (the shipped profiles
   repeat the largest sizes).
3. Take the running maximum over ``num_tokens`` (``monotone=True``, the default). Measured kernel times dip
   at tile-aligned sizes and with timing noise (H100 Llama-2-7B TP1: 0.228 ms per layer at 104 tokens,
   0.200 ms at 128); the simulator's admission logic assumes more work never takes less time, so the model
   uses the upper envelope. Where the profile already rises, the envelope is the profile.
4. Layer time at ``n = num_decode + prefill_tokens`` tokens: linear interpolation between profile points
   (``np.interp`` semantics), the first point's value below the first point, and linear extrapolation with
   the last two points' slope beyond the last point. Times ``num_layers`` of the deployment.
5. What ``mlp.csv`` does not hold comes from the roofline model (``RooflineLatencyModel.
   time_except_layer_gemms``): the lm_head, decode and prefill attention (including KV reads and writes),
   the TP all-reduces, and the per-step and per-request overheads. The roofline's per-layer overhead is
   set to zero here because the profile measured the layer's small kernels (norms, RoPE, SiLU, add) itself.

Failure modes: a malformed CSV raises ``InputError`` as ``FILE:LINE: FIELD: message``; a profile without rows
for the TP degree raises ``InputError`` naming the degrees it has; a profile of another architecture
(``n_embd``, ``n_head``, ``n_kv_head``, ``n_expanded_embd`` differ from the deployment's model) raises
``ConfigError`` unless ``allow_mismatch=True``. The CSV does not name its GPU, so nothing checks that the
profile was measured on the deployment's GPU: pass the right file.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from polyserve.core.errors import ConfigError, InputError
from polyserve.data import PROFILES
from polyserve.latency.hardware import Deployment
from polyserve.latency.roofline import RooflineLatencyModel

LAYER_OPS: tuple[str, ...] = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
# Profile shape columns -> the ModelArch attribute they must equal.
SHAPE_COLUMNS: dict[str, str] = {
    "n_embd": "hidden_size",
    "n_head": "num_heads",
    "n_kv_head": "num_kv_heads",
    "n_expanded_embd": "intermediate_size",
}
TOKENS_COL = "num_tokens"
TP_COL = "num_tensor_parallel_workers"


@dataclass(frozen=True, slots=True)
class LayerProfile:
    """Non-attention time of one layer (ms) at each profiled token count, for one TP degree."""

    num_tokens: tuple[int, ...]  # ascending, unique
    layer_ms: tuple[float, ...]  # summed per-op medians, averaged over duplicate rows
    shape: dict[str, int]  # n_embd, n_head, n_kv_head, n_expanded_embd of the profiled model
    tp: int
    source: str  # the CSV path


def _number(path: str, line: int, col: str, raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise InputError(path, line, col, f"not a number: {raw!r}") from None
    if not math.isfinite(v):
        raise InputError(path, line, col, f"must be finite, got {raw!r}")
    return v


def _positive_int(path: str, line: int, col: str, raw: str) -> int:
    v = _number(path, line, col, raw)
    if v != int(v) or v < 1:
        raise InputError(path, line, col, f"must be an integer >= 1, got {raw!r}")
    return int(v)


def read_layer_profile(path: str | Path, tp: int) -> LayerProfile:
    """Parse a Vidur ``mlp.csv`` and reduce the rows of TP degree ``tp`` to per-layer times (steps 1-2 above).

    Every row is validated, not only the selected ones, so a damaged file is reported wherever it is damaged.
    """
    p = str(path)
    try:
        f = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed below, errors need the handle
    except OSError as e:
        raise InputError(p, None, "file", f"cannot read profile: {e.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError(p, 1, "header", "empty file; expected a Vidur mlp.csv header")
        header = [h.strip() for h in header]
        time_cols = [f"time_stats.{op}.median" for op in LAYER_OPS]
        needed = [TOKENS_COL, TP_COL, *SHAPE_COLUMNS, *time_cols]
        idx: dict[str, int] = {}
        for col in needed:
            if col not in header:
                raise InputError(p, 1, col, "missing column; expected Vidur's mlp.csv layout")
            idx[col] = header.index(col)
        sums: dict[int, list[float]] = {}
        shape: dict[str, int] | None = None
        shape_line = 0
        tps: set[int] = set()
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(p, line, "row", f"has {len(row)} fields, the header has {len(header)}")
            row_tp = _positive_int(p, line, TP_COL, row[idx[TP_COL]])
            n = _positive_int(p, line, TOKENS_COL, row[idx[TOKENS_COL]])
            row_shape = {c: _positive_int(p, line, c, row[idx[c]]) for c in SHAPE_COLUMNS}
            total = 0.0
            for col in time_cols:
                v = _number(p, line, col, row[idx[col]])
                if v < 0:
                    raise InputError(p, line, col, f"must be a time >= 0 ms, got {row[idx[col]]!r}")
                total += v
            tps.add(row_tp)
            if row_tp != tp:
                continue
            if shape is None:
                shape, shape_line = row_shape, line
            elif row_shape != shape:
                col = next(c for c in SHAPE_COLUMNS if row_shape[c] != shape[c])
                raise InputError(
                    p,
                    line,
                    col,
                    f"{row_shape[col]} differs from {shape[col]} on line {shape_line}: "
                    "one profile must describe one model",
                )
            sums.setdefault(n, []).append(total)
    if not sums or shape is None:
        have = ", ".join(str(t) for t in sorted(tps)) or "none"
        raise InputError(p, None, TP_COL, f"no rows for tp={tp}; the profile has tp {have}")
    xs = tuple(sorted(sums))
    ys = tuple(sum(sums[x]) / len(sums[x]) for x in xs)
    return LayerProfile(num_tokens=xs, layer_ms=ys, shape=shape, tp=tp, source=p)


def shape_mismatch(profile: LayerProfile, deployment: Deployment) -> list[str]:
    """Human-readable differences between the profiled model's shape and the deployment's; empty if none."""
    m = deployment.model
    return [
        f"{col}={profile.shape[col]} (profile) vs {getattr(m, attr)} ({m.name})"
        for col, attr in SHAPE_COLUMNS.items()
        if profile.shape[col] != getattr(m, attr)
    ]


@dataclass(frozen=True)
class TableLatencyModel:
    """Iteration time = profiled layer time x layers + the roofline's non-layer terms (module docstring)."""

    deployment: Deployment
    profile: LayerProfile
    monotone: bool = True
    roofline: RooflineLatencyModel | None = None  # None: the documented roofline without per-layer overhead
    name: str = field(default="table", init=False)
    kv_independent: bool = field(default=False, init=False)
    _rf: RooflineLatencyModel = field(init=False, repr=False, compare=False)
    _xs: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _ys: tuple[float, ...] = field(init=False, repr=False, compare=False)  # whole-model seconds
    _tail_slope: float = field(init=False, repr=False, compare=False)  # seconds per token past the last point

    def __post_init__(self) -> None:
        prof = self.profile
        if not prof.num_tokens or len(prof.num_tokens) != len(prof.layer_ms):
            raise ConfigError("table latency model: the profile needs one time per token count, at least one")
        if list(prof.num_tokens) != sorted(set(prof.num_tokens)):
            raise ConfigError("table latency model: profile token counts must be ascending and unique")
        rf = self.roofline or RooflineLatencyModel(self.deployment, layer_overhead_s=0.0)
        if rf.deployment != self.deployment:
            raise ConfigError("table latency model: the roofline must be built for the same deployment")
        object.__setattr__(self, "_rf", rf)
        layers = self.deployment.model.num_layers
        ys: list[float] = []
        for v in prof.layer_ms:
            t = v * 1e-3 * layers
            ys.append(max(t, ys[-1]) if self.monotone and ys else t)
        xs = tuple(float(x) for x in prof.num_tokens)
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
        object.__setattr__(self, "_xs", xs)
        object.__setattr__(self, "_ys", tuple(ys))
        object.__setattr__(self, "_tail_slope", max(0.0, slope) if self.monotone else slope)

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        deployment: Deployment,
        *,
        tp: int | None = None,
        allow_mismatch: bool = False,
        monotone: bool = True,
    ) -> TableLatencyModel:
        """Read ``path`` (Vidur ``mlp.csv``) for ``deployment``.

        ``tp`` selects the profile rows and defaults to ``deployment.tp``; a different value, or a profile of
        another model shape, raises ``ConfigError`` unless ``allow_mismatch`` (then the profile's kernel times
        are used as they are, with the deployment's layer count and roofline terms).
        """
        tp = deployment.tp if tp is None else tp
        if tp != deployment.tp and not allow_mismatch:
            raise ConfigError(
                f"profile rows for tp={tp} cannot model a tp={deployment.tp} deployment; "
                "omit tp, or pass allow_mismatch=True for a what-if"
            )
        prof = read_layer_profile(path, tp)
        diffs = shape_mismatch(prof, deployment)
        if diffs and not allow_mismatch:
            raise ConfigError(
                f"profile {path} was measured on another model: {'; '.join(diffs)}. Use a profile of "
                f"{deployment.model.name} (polyserve profile), or allow_mismatch=True to use it anyway"
            )
        return cls(deployment, prof, monotone=monotone)

    def layers_time(self, num_tokens: int) -> float:
        """Seconds of the profiled (non-attention) layer kernels for ``num_tokens`` tokens, all layers."""
        xs, ys = self._xs, self._ys
        if num_tokens <= xs[0]:
            return ys[0] if num_tokens > 0 else 0.0
        if num_tokens >= xs[-1]:
            return ys[-1] + self._tail_slope * (num_tokens - xs[-1])
        i = bisect_right(xs, num_tokens)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (num_tokens - x0) / (x1 - x0)

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        if num_decode == 0 and prefill_tokens == 0:
            return 0.0
        rest = self._rf.time_except_layer_gemms(num_decode, kv_tokens, prefill_tokens)
        return self.layers_time(num_decode + prefill_tokens) + rest

    def describe(self) -> dict[str, object]:
        prof = self.profile
        rf = self._rf.describe()
        return {
            "name": self.name,
            "formula": (
                "num_layers * interp(num_tokens, profile layer ms) + roofline(lm_head, attention, "
                "allreduce, step and request overhead)"
            ),
            "profile": prof.source,
            "profile_tp": prof.tp,
            "profile_shape": dict(prof.shape),
            "profile_points": len(prof.num_tokens),
            "profile_max_tokens": prof.num_tokens[-1],
            "shape_mismatch": shape_mismatch(prof, self.deployment),
            "monotone_envelope": self.monotone,
            "roofline_terms": {
                k: rf[k] for k in rf if k not in self.deployment.describe() and k not in ("name", "formula")
            },
            **self.deployment.describe(),
        }


def shipped_profiles(gpu: str) -> list[Path]:
    """Profiles shipped in ``polyserve/data/profiles/<gpu>/<model>/mlp.csv``, sorted by path."""
    return sorted((PROFILES / gpu.lower()).glob("*/mlp.csv"))


def default_profile(deployment: Deployment, *, allow_mismatch: bool = False) -> Path:
    """The shipped profile for the deployment's GPU whose model shape matches; ``ConfigError`` if none does.

    With ``allow_mismatch`` the first shipped profile of the GPU is returned even if its shape differs.
    """
    cands = shipped_profiles(deployment.gpu.name)
    if not cands:
        have = sorted(p.name for p in PROFILES.iterdir() if p.is_dir())
        raise ConfigError(
            f"no shipped profile for {deployment.gpu.name} (shipped: {', '.join(have)}); "
            "pass --latency-profile FILE or use --latency-model roofline"
        )
    for c in cands:
        if not shape_mismatch(read_layer_profile(c, deployment.tp), deployment):
            return c
    if allow_mismatch:
        return cands[0]
    names = ", ".join(f"{c.parent.name}" for c in cands)
    raise ConfigError(
        f"the shipped {deployment.gpu.name} profiles ({names}) were measured on models of another shape than "
        f"{deployment.model.name}; pass --latency-profile FILE, allow the mismatch, or use --latency-model "
        "roofline"
    )
