"""Fit linear latency coefficients to measured iterations, report the fit, and save or load the result.

Why: the linear model is only as good as its coefficients, and BLIS fitted few deployments. Measuring a real
engine (``polyserve profile``) and fitting here gives any deployment a measured model; the saved file is what
``--latency-model linear --latency-coefficients FILE`` reads.

Input: a CSV whose header has ``num_prefill_tokens,num_decode_tokens,iteration_time_ms`` and optionally
``kv_tokens`` (other columns are ignored), one measured engine iteration per row.

The fit: ``iteration_time = b0 + b1 * prefill + b2 * decode [+ b3 * kv]`` by least squares with every
coefficient >= 0 (a negative cost would let the simulator buy time by adding work). It is solved with the
Lawson-Hanson active-set NNLS algorithm (Lawson & Hanson, *Solving Least Squares Problems*, 1974, ch. 23;
the algorithm behind ``scipy.optimize.nnls``), written here in numpy so that SciPy is not a dependency.
Columns are scaled to unit norm first, because token counts and KV counts differ by orders of magnitude.
Without a ``kv_tokens`` column, ``b3 = 0``.

Failure modes (all ``InputError``, ``FILE:LINE: FIELD: message``): a missing column, a non-integer or negative
token count, a time that is not a positive finite number, an idle row (no prefill and no decode tokens), a
row with the wrong number of fields, no rows at all, or a column whose coefficient cannot be identified
(constant over all rows, or a linear combination of the others, e.g. ``kv_tokens`` always 1,200 per decode
sequence): then measure iterations that vary it, or drop the ``kv_tokens`` column.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from polyserve.core.errors import ConfigError, InputError
from polyserve.latency.base import LatencyModel
from polyserve.latency.hardware import Deployment
from polyserve.latency.linear import LinearLatencyModel

PREFILL_COL = "num_prefill_tokens"
DECODE_COL = "num_decode_tokens"
KV_COL = "kv_tokens"
TIME_COL = "iteration_time_ms"
REQUIRED_COLUMNS = (PREFILL_COL, DECODE_COL, TIME_COL)
COEFFICIENTS_FORMAT = "polyserve-linear-latency/1"
# Coefficient file keys, in microseconds, and the LinearLatencyModel field each one sets.
COEFFICIENT_KEYS: dict[str, str] = {
    "b0_us": "b0",
    "b1_us_per_prefill_token": "b1",
    "b2_us_per_decode_token": "b2",
    "b3_us_per_kv_token": "b3",
}


@dataclass(frozen=True)
class Iterations:
    """Measured iterations, one array element per CSV row. ``kv`` is None when the CSV has no kv column."""

    path: str
    prefill: np.ndarray  # int64
    decode: np.ndarray  # int64
    kv: np.ndarray | None  # int64
    time_ms: np.ndarray  # float64
    lines: np.ndarray  # CSV line of each row, for error messages

    def __len__(self) -> int:
        return len(self.time_ms)


@dataclass(frozen=True)
class FitReport:
    """How well a latency model reproduces measured iterations (times in ms).

    ``r2`` is NaN when every measured time is the same (no variance to explain).
    """

    n_rows: int
    r2: float
    rmse_ms: float
    max_abs_error_ms: float
    model: str

    def as_dict(self) -> dict[str, object]:
        return {
            "n_rows": self.n_rows,
            "r2": self.r2,
            "rmse_ms": self.rmse_ms,
            "max_abs_error_ms": self.max_abs_error_ms,
            "model": self.model,
        }


def _count(path: str, line: int, col: str, raw: str) -> int:
    s = raw.strip()
    if not (s.isascii() and s.isdigit()):  # rejects '', '-1', '1.5', '1e3'
        raise InputError(path, line, col, f"must be an integer >= 0, got {raw!r}")
    return int(s)


def read_iterations(csv_path: str | Path) -> Iterations:
    """Parse and validate a measured-iterations CSV (see the module docstring for the layout)."""
    p = str(csv_path)
    try:
        f = open(csv_path, encoding="utf-8", newline="")  # noqa: SIM115 - closed below, errors need the handle
    except OSError as e:
        raise InputError(p, None, "file", f"cannot read measurements: {e.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError(
                p, 1, "header", f"empty file; expected a header with {','.join(REQUIRED_COLUMNS)}"
            )
        header = [h.strip() for h in header]
        for col in REQUIRED_COLUMNS:
            if col not in header:
                raise InputError(
                    p,
                    1,
                    col,
                    f"missing column; the header needs {','.join(REQUIRED_COLUMNS)} (optionally {KV_COL})",
                )
        ip, idc, it = header.index(PREFILL_COL), header.index(DECODE_COL), header.index(TIME_COL)
        ik = header.index(KV_COL) if KV_COL in header else None
        prefill: list[int] = []
        decode: list[int] = []
        kv: list[int] = []
        times: list[float] = []
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(p, line, "row", f"has {len(row)} fields, the header has {len(header)}")
            pf = _count(p, line, PREFILL_COL, row[ip])
            dc = _count(p, line, DECODE_COL, row[idc])
            if ik is not None:
                kv.append(_count(p, line, KV_COL, row[ik]))
            raw = row[it]
            try:
                t = float(raw)
            except ValueError:
                t = math.nan
            if not (math.isfinite(t) and t > 0):
                raise InputError(p, line, TIME_COL, f"must be a number > 0, got {raw!r}")
            if pf == 0 and dc == 0:
                raise InputError(
                    p, line, DECODE_COL, "an iteration without prefill or decode tokens is idle; drop the row"
                )
            prefill.append(pf)
            decode.append(dc)
            times.append(t)
            lines.append(line)
    if not times:
        raise InputError(p, None, "rows", "no measured iterations; the file has only a header")
    return Iterations(
        path=p,
        prefill=np.asarray(prefill, dtype=np.int64),
        decode=np.asarray(decode, dtype=np.int64),
        kv=np.asarray(kv, dtype=np.int64) if ik is not None else None,
        time_ms=np.asarray(times, dtype=np.float64),
        lines=np.asarray(lines, dtype=np.int64),
    )


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Lawson-Hanson NNLS: ``argmin ||a x - b||`` subject to ``x >= 0``.

    Exact for the small systems used here (a handful of columns). ``a`` should be well scaled; callers
    normalise columns. Raises ``ValueError`` if it fails to converge in ``max_iter`` outer steps (default
    ``3 * columns``), which does not happen for full-rank input.
    """
    m, n = a.shape
    max_iter = 3 * n if max_iter is None else max_iter
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    tol = 10 * np.finfo(float).eps * np.linalg.norm(a, 1) * max(m, n)
    w = a.T @ (b - a @ x)
    for _ in range(max_iter):
        if passive.all() or not (w[~passive] > tol).any():
            return x
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            # Step back towards x until the first passive coefficient reaches zero, then drop it.
            neg = passive & (z <= tol)
            alpha = float(np.min(x[neg] / (x[neg] - z[neg])))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    if passive.all() or not (w[~passive] > tol).any():
        return x
    raise ValueError(f"NNLS did not converge in {max_iter} iterations")


def _design(it: Iterations) -> tuple[np.ndarray, list[str]]:
    cols = [np.ones(len(it)), it.prefill.astype(float), it.decode.astype(float)]
    names = ["(intercept)", PREFILL_COL, DECODE_COL]
    if it.kv is not None:
        cols.append(it.kv.astype(float))
        names.append(KV_COL)
    return np.column_stack(cols), names


def _check_identifiable(it: Iterations, a: np.ndarray, names: list[str]) -> None:
    for j in range(1, a.shape[1]):
        if np.all(a[:, j] == a[0, j]):
            raise InputError(
                it.path,
                None,
                names[j],
                f"is {int(a[0, j])} on every row, so its cost cannot be told apart from the fixed cost; "
                "measure iterations that vary it",
            )
    scaled = a / np.linalg.norm(a, axis=0)
    if np.linalg.matrix_rank(scaled) < a.shape[1]:
        last = names[-1]
        raise InputError(
            it.path,
            None,
            last,
            f"is a linear combination of the other columns ({', '.join(names[1:-1])}), so the coefficients "
            "cannot be identified; vary it independently" + (" or drop the column" if last == KV_COL else ""),
        )


def fit_linear(
    csv_path: str | Path, deployment: Deployment, *, source: str | None = None
) -> LinearLatencyModel:
    """Non-negative least-squares fit of the linear model to the measured iterations in ``csv_path``."""
    it = read_iterations(csv_path)
    a, names = _design(it)
    _check_identifiable(it, a, names)
    norms = np.linalg.norm(a, axis=0)
    coef_ms = nnls(a / norms, it.time_ms) / norms
    b = [float(c) * 1e-3 for c in coef_ms] + [0.0] * (4 - len(coef_ms))
    src = source or f"fit of {len(it)} iterations in {it.path}" + (
        "" if it.kv is not None else " (no kv_tokens)"
    )
    return LinearLatencyModel(deployment, b0=b[0], b1=b[1], b2=b[2], b3=b[3], source=src)


def fit_report(model: LatencyModel, csv_path: str | Path) -> FitReport:
    """R^2, RMSE and worst error of ``model`` against measured iterations; any latency model can be scored.

    Rows without a ``kv_tokens`` column are evaluated with ``kv_tokens = 0``.
    """
    it = read_iterations(csv_path)
    kv = it.kv if it.kv is not None else np.zeros(len(it), dtype=np.int64)
    pred = np.array(
        [
            model.iteration_time(int(d), int(k), int(p)) * 1e3
            for d, k, p in zip(it.decode, kv, it.prefill, strict=True)
        ]
    )
    err = pred - it.time_ms
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((it.time_ms - it.time_ms.mean()) ** 2))
    return FitReport(
        n_rows=len(it),
        r2=1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        rmse_ms=math.sqrt(ss_res / len(it)),
        max_abs_error_ms=float(np.max(np.abs(err))),
        model=model.name,
    )


def save_linear_coefficients(
    model: LinearLatencyModel, path: str | Path, *, report: FitReport | None = None
) -> None:
    """Write ``model``'s coefficients (microseconds) to ``path``: JSON if it ends in ``.json``, else YAML.

    The file names the deployment it was fitted for; ``load_linear_coefficients`` refuses another one.
    """
    dep = model.deployment
    doc: dict[str, object] = {
        "format": COEFFICIENTS_FORMAT,
        "model": dep.model.name,
        "gpu": dep.gpu.name,
        "tp": dep.tp,
        **{key: getattr(model, attr) * 1e6 for key, attr in COEFFICIENT_KEYS.items()},
        "source": model.source,
    }
    if report is not None:
        doc["fit"] = report.as_dict()
    p = Path(path)
    if p.suffix.lower() == ".json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = (
            "# PolyServe linear latency coefficients (microseconds):\n"
            "# step = b0 + b1 * prefill_tokens + b2 * decode_tokens + b3 * kv_tokens\n"
            + yaml.safe_dump(doc, sort_keys=False)
        )
    p.write_text(text, encoding="utf-8")


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key, for error messages; empty if the text is not a YAML mapping."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def load_linear_coefficients(path: str | Path, deployment: Deployment) -> LinearLatencyModel:
    """Read a coefficients file written by ``save_linear_coefficients`` (YAML or JSON) for ``deployment``.

    Errors: an unreadable or malformed file, a missing ``b0_us``/``b1_...``/``b2_...`` key or a value that is
    not a number >= 0 raise ``InputError``; a file fitted for another model, GPU or TP raises ``ConfigError``.
    ``b3_us_per_kv_token`` is optional (0).
    """
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(p, None, "file", f"cannot read coefficients: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(p, mark.line + 1 if mark else None, "yaml", "not valid YAML or JSON") from None
    if not isinstance(doc, dict):
        raise InputError(p, None, "document", "expected a mapping of coefficient names to values")
    lines = _key_lines(text)
    fmt = doc.get("format", COEFFICIENTS_FORMAT)
    if fmt != COEFFICIENTS_FORMAT:
        raise InputError(p, lines.get("format"), "format", f"expected {COEFFICIENTS_FORMAT!r}, got {fmt!r}")
    values: dict[str, float] = {}
    for key, attr in COEFFICIENT_KEYS.items():
        if key not in doc:
            if attr == "b3":
                values[attr] = 0.0
                continue
            raise InputError(
                p,
                None,
                key,
                "missing; a coefficients file needs b0_us, b1_us_per_prefill_token and "
                "b2_us_per_decode_token",
            )
        v = doc[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 0):
            raise InputError(p, lines.get(key), key, f"must be a number >= 0 (microseconds), got {v!r}")
        values[attr] = float(v) * 1e-6
    for key, want in (("model", deployment.model.name), ("gpu", deployment.gpu.name), ("tp", deployment.tp)):
        if key in doc and str(doc[key]).lower() != str(want).lower():
            raise ConfigError(
                f"coefficients in {p} were fitted for {key}={doc[key]}, but the deployment has {key}={want}; "
                "fit coefficients for this deployment (polyserve profile fit) or use another latency model"
            )
    source = str(doc.get("source", "")) or "coefficients file"
    return LinearLatencyModel(deployment, **values, source=f"{source} [{p}]")
