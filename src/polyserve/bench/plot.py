"""``polyserve bench plot RESULT.json``: TTFT and TPOT CDFs per tier, and DSLO attainment over time (PNG).

Reads only the result file's ``requests`` records and ``tier_definitions``, so any saved result can be
plotted later. Attainment over time bins requests by send time (about 20 bins over the run; a failed request
counts as missed). Uses matplotlib's Agg backend (no display needed). A result with no requests raises
``ConfigError``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from polyserve.core.errors import ConfigError, InputError


def _load(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(str(path), None, "file", f"cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise InputError(str(path), None, "json", f"not a JSON result file: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("requests"), list):
        raise InputError(
            str(path), None, "requests", "no per-request records; was it written by polyserve bench?"
        )
    return doc


def _tier_order(doc: dict) -> list[str]:
    names = [t["name"] for t in doc.get("tier_definitions", []) if isinstance(t, dict) and "name" in t]
    seen = {r.get("tier") for r in doc["requests"]}
    return [n for n in names if n in seen] + sorted(str(n) for n in seen - set(names))


def _cdf(ax, values: list[float], label: str) -> None:
    v = np.sort(np.asarray(values, dtype=np.float64))
    ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{label} (n={v.size})")


def plot_result(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<stem>-ttft-cdf.png``, ``<stem>-tpot-cdf.png``, ``<stem>-attainment.png``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    doc = _load(path)
    reqs = doc["requests"]
    if not reqs:
        raise ConfigError(f"{path}: the result has no requests to plot")
    out = Path(out_dir) if out_dir is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    tiers = _tier_order(doc)
    tpot_slo = {t["name"]: t.get("tpot_ms") for t in doc.get("tier_definitions", []) if isinstance(t, dict)}
    title = f"{doc.get('model_id', '?')} @ {doc.get('request_rate', '?')} req/s"
    written: list[Path] = []

    for metric, label in (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, tier in enumerate(tiers):
            vals = [
                r[metric] for r in reqs if r.get("tier") == tier and r.get("ok") and r.get(metric) is not None
            ]
            if vals:
                _cdf(ax, vals, tier)
                if metric == "tpot_ms" and tpot_slo.get(tier):
                    ax.axvline(tpot_slo[tier], color=f"C{i}", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label + (" (dashed: tier SLO)" if metric == "tpot_ms" else ""))
        ax.set_ylabel("fraction of completed requests")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{label.split()[0]} CDF per tier: {title}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        p = out / f"{path.stem}-{metric.split('_')[0]}-cdf.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    send = np.array([float(r.get("send_s", 0.0)) for r in reqs])
    att = np.array([bool(r.get("attained")) for r in reqs])
    tier_of = np.array([str(r.get("tier")) for r in reqs])
    span = float(send.max()) if send.size else 0.0
    nbins = max(1, min(20, len(reqs) // 5))
    edges = np.linspace(0.0, span if span > 0 else 1.0, nbins + 1)
    idx = np.clip(np.searchsorted(edges, send, side="right") - 1, 0, nbins - 1)
    mids = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, mask in [("all", np.ones(len(reqs), bool))] + [(t, tier_of == t) for t in tiers]:
        n = np.bincount(idx[mask], minlength=nbins)
        a = np.bincount(idx[mask], weights=att[mask].astype(float), minlength=nbins)
        keep = n > 0
        style = {"color": "black", "linewidth": 2} if name == "all" else {}
        ax.plot(mids[keep], a[keep] / n[keep], marker="o", markersize=3, label=name, **style)
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("DSLO attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"attainment over time: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    p = out / f"{path.stem}-attainment.png"
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written
