"""Turn a ``WorkloadSpec`` (or a trace and a rate) into a ``Workload``.

Randomness: every random choice comes from ``numpy.random.default_rng([seed, stream])`` with one stream per
purpose, so changing one choice never shifts another's draws (a new tier mix leaves arrivals and lengths
as they were; a new rate leaves lengths and tiers as they were):

====  ============================================================
0     arrival gaps
1     tier draws
2     trace rows drawn for resampling (lengths and tier column)
3     synthetic prompt lengths
4     synthetic output lengths
====  ============================================================

Same spec, tiers and seed -> identical arrays.
"""

from __future__ import annotations

import numpy as np

from polyserve.core.errors import ConfigError
from polyserve.core.tiers import TierSet
from polyserve.workload import transforms
from polyserve.workload.arrivals import arrival_times
from polyserve.workload.lengths import LengthSpec
from polyserve.workload.reader import read_trace
from polyserve.workload.spec import WorkloadSpec
from polyserve.workload.tiering import draw_tiers, slo_arrays
from polyserve.workload.trace import TraceData
from polyserve.workload.workload import Workload

STREAM_ARRIVALS, STREAM_TIERS, STREAM_ROWS, STREAM_INPUT, STREAM_OUTPUT = range(5)


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """The generator of one purpose (see the module docstring)."""
    return np.random.default_rng([seed, stream])


def build_workload(
    spec: WorkloadSpec, tiers: TierSet, seed: int, *, trace: TraceData | None = None
) -> Workload:
    """Build the workload ``spec`` describes (see ``polyserve.workload.spec`` for what each case means).

    ``trace`` may pass ``spec.trace`` already read (e.g. once for many runs); otherwise it is read here.
    Raises ``InputError`` for a bad trace file and ``ConfigError`` for a spec the trace cannot satisfy
    (replaying a lengths-only trace, re-timing or tiling a trace whose rows all arrive at one instant,
    an unknown tier name in ``tier_weights``, a replay window with no rows).
    """
    _check_seed(seed)
    mix = tiers.with_weights(spec.tier_weights) if spec.tier_weights is not None else tiers
    if spec.trace is None:
        if trace is not None:
            raise ConfigError("a trace was passed but the spec names none; set WorkloadSpec.trace")
        return _synthetic(spec, mix, seed)
    if trace is None:
        trace = read_trace(spec.trace, spec.trace_format, tiers)
    use_column = spec.tier_weights is None
    if spec.process == "trace":
        return _replay(spec, trace, mix, seed, use_column)
    assert spec.rate is not None
    return _resample(
        trace,
        spec.rate,
        spec.process,
        spec.burstiness,
        spec.num_requests,
        spec.duration_s,
        spec.input_lengths,
        spec.output_lengths,
        mix,
        seed,
        use_column,
    )


def poisson_lengths_workload(
    trace: TraceData, rate: float, duration_s: float, tiers: TierSet, seed: int, use_tier_column: bool = True
) -> Workload:
    """The goodput-bisection workload: Poisson arrivals at ``rate`` in ``[0, duration_s)``, each request
    taking the (prompt, output) pair, and tier if the trace has a tier column, of one trace row drawn
    uniformly with replacement; otherwise tiers are drawn from ``tiers``' weights.

    Common random numbers: with the same seed, request *i* has the same row and tier at every rate, and
    its arrival time scales as ``1 / rate``, so bisection compares rates on one sample path. Works with
    lengths-only traces (their timestamps are never used). ``use_tier_column=False`` ignores a tier column
    (an explicit ``--tier-weights`` wins over it, as in ``build_workload``).
    """
    _check_seed(seed)
    trace_len = LengthSpec.trace()
    return _resample(
        trace, rate, "poisson", 1.0, None, duration_s, trace_len, trace_len, tiers, seed, use_tier_column
    )


# Cases ---------------------------------------------------------------------------------------------------


def _synthetic(spec: WorkloadSpec, tiers: TierSet, seed: int) -> Workload:
    assert spec.rate is not None
    arrival = arrival_times(
        rng_for(seed, STREAM_ARRIVALS),
        spec.rate,
        spec.burstiness,
        num_requests=spec.num_requests,
        duration_s=spec.duration_s,
    )
    n = len(arrival)
    inp = spec.input_lengths.sample(rng_for(seed, STREAM_INPUT), n)
    out = spec.output_lengths.sample(rng_for(seed, STREAM_OUTPUT), n)
    tier = draw_tiers(rng_for(seed, STREAM_TIERS), tiers, n)
    description = {
        "source": "synthetic",
        "trace": None,
        "arrival": _arrival_desc(spec.process, spec.rate, spec.burstiness),
        "transforms": [],
        "lengths": {"input": str(spec.input_lengths), "output": str(spec.output_lengths)},
        "tiers": _mix_desc(tiers),
    }
    return _assemble(arrival, inp, out, tier, tiers, seed, spec.num_requests, spec.duration_s, description)


def _replay(spec: WorkloadSpec, trace: TraceData, tiers: TierSet, seed: int, use_column: bool) -> Workload:
    if trace.arrival_s is None:
        raise ConfigError(f"{trace.path} has no timestamps; use --arrival poisson|gamma with --rate")
    t = trace.arrival_s
    steps: list[dict] = []
    first = 0
    if spec.start_s:
        t, first = transforms.window(t, spec.start_s)
        steps.append({"op": "window", "start_s": spec.start_s, "rows_dropped": first})
        if len(t) == 0:
            raise ConfigError(
                f"start_s={spec.start_s} is past the last arrival of {trace.path} ({trace.span_s:.3f} s)"
            )
    if spec.num_requests is not None and spec.num_requests < len(t):
        t = t[: spec.num_requests]
        steps.append({"op": "first_rows", "rows": spec.num_requests})
    rows = np.arange(first, first + len(t), dtype=np.int64)
    if spec.rate is not None:
        before = transforms.mean_rate(t)
        t, factor = transforms.retime(t, spec.rate)
        steps.append(
            {"op": "retime", "from_rate_req_s": before, "to_rate_req_s": spec.rate, "time_factor": factor}
        )
    if spec.tile:
        assert spec.duration_s is not None
        t, picked, copies, period = transforms.tile(t, spec.duration_s)
        rows = rows[picked]
        steps.append({"op": "tile", "duration_s": spec.duration_s, "copies": copies, "period_s": period})
    elif spec.duration_s is not None:
        keep = transforms.cut(t, spec.duration_s)
        steps.append({"op": "cut", "duration_s": spec.duration_s, "rows_dropped": len(t) - keep})
        t, rows = t[:keep], rows[:keep]
    if len(t) == 0:
        raise ConfigError(f"no requests of {trace.path} are left after: {steps}")
    n = len(t)
    arrival = np.array(t, dtype=np.float64)  # own copy: never a view the caller's TraceData could change
    inp = _lengths(spec.input_lengths, trace.input_tokens, rows, rng_for(seed, STREAM_INPUT), n)
    out = _lengths(spec.output_lengths, trace.output_tokens, rows, rng_for(seed, STREAM_OUTPUT), n)
    tier, tier_desc = _tiers(trace, rows, tiers, seed, use_column, n)
    description = {
        "source": "replay",
        "trace": trace.describe(),
        "arrival": _arrival_desc("trace", spec.rate, 1.0),
        "transforms": steps,
        "lengths": _lengths_desc(spec.input_lengths, spec.output_lengths),
        "tiers": tier_desc,
    }
    return _assemble(arrival, inp, out, tier, tiers, seed, spec.num_requests, spec.duration_s, description)


def _resample(
    trace: TraceData,
    rate: float,
    process: str,
    burstiness: float,
    num_requests: int | None,
    duration_s: float | None,
    input_len: LengthSpec,
    output_len: LengthSpec,
    tiers: TierSet,
    seed: int,
    use_column: bool,
) -> Workload:
    arrival = arrival_times(
        rng_for(seed, STREAM_ARRIVALS), rate, burstiness, num_requests=num_requests, duration_s=duration_s
    )
    n = len(arrival)
    # One row per request, shared by every field taken from the trace: prompt and output lengths stay a
    # real recorded pair (their correlation is part of the workload), and so does the row's tier.
    rows = rng_for(seed, STREAM_ROWS).integers(0, len(trace), size=n, dtype=np.int64)
    inp = _lengths(input_len, trace.input_tokens, rows, rng_for(seed, STREAM_INPUT), n)
    out = _lengths(output_len, trace.output_tokens, rows, rng_for(seed, STREAM_OUTPUT), n)
    tier, tier_desc = _tiers(trace, rows, tiers, seed, use_column, n)
    description = {
        "source": "resample",
        "trace": trace.describe(),
        "arrival": _arrival_desc(process, rate, burstiness),
        "transforms": [],
        "lengths": _lengths_desc(input_len, output_len),
        "tiers": tier_desc,
    }
    return _assemble(arrival, inp, out, tier, tiers, seed, num_requests, duration_s, description)


# Pieces --------------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")


def _lengths(
    spec: LengthSpec, column: np.ndarray, rows: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    if spec.kind == "trace":
        return column[rows]
    return spec.sample(rng, n)


def _tiers(
    trace: TraceData, rows: np.ndarray, tiers: TierSet, seed: int, use_column: bool, n: int
) -> tuple[np.ndarray, dict]:
    if use_column and trace.tier is not None:
        return trace.tier[rows].astype(np.int16), {"source": "trace column"}
    desc = _mix_desc(tiers)
    if trace.tier is not None:
        desc["overrides_trace_column"] = True
    return draw_tiers(rng_for(seed, STREAM_TIERS), tiers, n), desc


def _mix_desc(tiers: TierSet) -> dict:
    return {"source": "mix", "weights": dict(zip(tiers.names, tiers.weights(), strict=True))}


def _arrival_desc(process: str, rate: float | None, burstiness: float) -> dict:
    desc: dict = {"process": process, "rate_req_s": rate}
    if process == "gamma":
        desc["burstiness"] = burstiness
    return desc


def _lengths_desc(input_len: LengthSpec, output_len: LengthSpec) -> dict:
    return {"input": str(input_len), "output": str(output_len)}


def _assemble(
    arrival: np.ndarray,
    inp: np.ndarray,
    out: np.ndarray,
    tier: np.ndarray,
    tiers: TierSet,
    seed: int,
    num_requests: int | None,
    duration_s: float | None,
    description: dict,
) -> Workload:
    ttft, tpot = slo_arrays(tiers, tier, inp)
    n = len(arrival)
    description = {
        **description,
        "seed": int(seed),
        "num_requests_asked": num_requests,
        "duration_s": duration_s,
        "num_requests": n,
        "last_arrival_s": float(arrival[-1]) if n else None,
        "achieved_rate_req_s": transforms.mean_rate(arrival),
        "mean_input_tokens": float(inp.mean()) if n else None,
        "mean_output_tokens": float(out.mean()) if n else None,
    }
    return Workload(
        arrival_s=arrival,
        input_tokens=np.asarray(inp, dtype=np.int64),
        output_tokens=np.asarray(out, dtype=np.int64),
        tier=np.asarray(tier, dtype=np.int16),
        ttft_ms=ttft,
        tpot_ms=tpot,
        tiers=tiers,
        description=description,
    )
