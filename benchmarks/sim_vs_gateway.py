"""Does the live gateway deliver what the simulator predicts? The same requests through both, per tier.

For each policy (default PolyServe and Minimal) this script
1. simulates the workload (``polyserve.experiments.runner.run_workload``: the shipped Azure conversation
   trace re-timed to ``--rate``, ``--duration`` seconds, ``--engines`` servers, seed ``--seed``, overload ``serve``);
2. starts ``polyserve up`` with as many emulated engines, the same policy and its engine scheduler (PolyServe:
   ``--scheduling-policy deadline`` with each request's deadlines forwarded; Minimal: vLLM's FCFS), no
   shedding (as ``serve``), and runs ``polyserve bench`` against it with the same trace, rate, duration, seed
   and tiers, so the very same requests (lengths, tiers, arrival times) are sent;
3. prints per tier the simulated and the measured attainment and their difference in points.

Scaled clock: one 2-core machine cannot pace 32 engines plus a gateway and a client in real time, so
``--time-scale S`` (< 1) runs every engine S times *slower* than the model; the script divides every SLO and
the request rate by S and multiplies the duration by 1/S, so the experiment is the same one stretched in
time (the gateway's latency model is scaled alike, ``ScaledModel``). What does not stretch is the gateway's
and client's own overhead (it shrinks relative to the SLOs) and the machine's noise (event-loop lag delays
tokens: with S = 0.25 a 10 ms stall is 2.5 model-ms).

    .venv/bin/python benchmarks/sim_vs_gateway.py [--engines 4] [--time-scale 0.25] [--rate 40] \
        [--duration 60] [--policies polyserve,minimal] [--out docs/results/sim_vs_gateway.json]

``--prefill-engines K``: disaggregated, K prefill engines and the rest decode, in both faces (the KV hand-off
emulated over a 400 Gbit/s link). ``--policy-option K=V`` (repeatable): a router option for every policy, in
both faces. ``--sim-only``: the simulator's prediction alone, in seconds, no gateway started (to compare
policy options on the very requests a gateway run used).

Everything with a time in it is stretched alike (``--stretch-timers``, on by default): the router's ``*_s``
options and the gateway's hard first-token and idle timeouts are multiplied by 1/S, and the gateway's
re-route of a request that waited 2x its TTFT SLO is off (the simulator's ``serve`` contract serves it late
where it waits). Measured without it (32 engines, S = 0.05, 320 req/s for 30 s): a 120 s first-token
timeout was 6 s of model time, PolyServe's gateway failed 710 of 7,967 requests and attained 53.5% against
88.4% simulated (Minimal, with no time constants, 62.3% against 63.1%, none failed); with it, 68.5%, none
failed (docs/results/sim_vs_gateway_32.json).

Attainment counts every request sent (a failed one is missed), over requests arriving in [--warmup,
--duration) of model time, in both faces.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaled_tiers(tiers, scale: float, path: Path) -> None:
    """The tiers with every SLO divided by ``scale`` (the engines run ``scale`` times the model's speed)."""
    lines = []
    for t in tiers:
        lines += ["[[tier]]", f'name = "{t.name}"', f"tpot_ms = {t.tpot_ms / scale!r}",
                  f"ttft_ms = {t.ttft_ms / scale!r}",
                  f"ttft_ms_per_input_token = {t.ttft_ms_per_input_token / scale!r}",
                  f"weight = {t.weight!r}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def simulate(policy: str, args) -> dict[str, object]:
    from polyserve.core.tiers import TierSet
    from polyserve.data import AZURE_CONV, DEFAULT_TIERS
    from polyserve.experiments.runner import PolicySpec, run_workload
    from polyserve.latency.build import FleetSpec, build_model
    from polyserve.metrics.records import ATTAINED
    from polyserve.sim.config import SimConfig
    from polyserve.workload import WorkloadSpec, build_workload

    tiers = TierSet.from_toml(DEFAULT_TIERS)
    wl = build_workload(WorkloadSpec(trace=str(AZURE_CONV), rate=args.rate, duration_s=args.duration), tiers,
                        args.seed)
    extra = {}
    if args.prefill_engines:
        extra = {"mode": "disaggregated", "prefill_fraction": args.prefill_engines / args.engines}
    from polyserve.cli.options import parse_policy_options

    opts = parse_policy_options(args.policy_option)
    res = run_workload(wl, build_model(FleetSpec()), PolicySpec(router=policy, router_options=opts),
                       SimConfig(instances=args.engines, overload="serve", **extra), args.seed)
    ok = res.records.status == ATTAINED
    keep = wl.arrival_s >= args.warmup
    out: dict[str, object] = {"overall": float(ok[keep].mean()), "n": int(keep.sum())}
    for i, t in enumerate(tiers):
        m = keep & (wl.tier == i)
        out[t.name] = float(ok[m].mean()) if m.any() else None
    return out


def stretched_policy_options(policy: str, scale: float) -> list[str]:
    """``--policy-option`` flags that stretch the router's own time constants (its ``*_s`` options: PolyServe's
    scale-down period and hysteresis, demand window, reservation) by 1/``scale``, as the SLOs and the arrival
    rate are; without this a 1 s scale-down hysteresis on a 20x-slowed clock is 0.05 s of model time."""
    import dataclasses
    import random

    from polyserve.policy import make_router

    opts = getattr(make_router(policy, random.Random(0)), "o", None)  # a router's options dataclass, if any
    if opts is None or not dataclasses.is_dataclass(opts):
        return []
    flags = []
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        if f.name.endswith("_s") and isinstance(v, int | float) and not isinstance(v, bool):
            flags += ["--policy-option", f"{f.name}={v / scale!r}"]
    return flags


def gateway_config(scale: float, path: Path, margin_ms: float = 0.0) -> None:
    """The gateway settings that make it behave as the simulator's ``serve`` contract on a stretched clock: no
    re-route of a request that waited 2x its TTFT SLO (the simulator serves it late, where it is), and the
    hard first-token and idle timeouts stretched by 1/``scale`` (120 s on a 20x-slowed clock is 6 s of model
    time: queued requests would time out, strike their backends and take them out of rotation)."""
    path.write_text(f"timeouts: {{first_token_s: {120.0 / scale!r}, idle_s: {30.0 / scale!r}, "
                    f"first_token_slo_factor: 0}}\ndeadline_margin_ms: {margin_ms!r}\n", encoding="utf-8")


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"polyserve up exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"polyserve up did not answer /health within {timeout_s:g} s")


def through_gateway(policy: str, args, tiers_path: Path, work: Path) -> dict[str, object]:
    from polyserve.data import AZURE_CONV

    s = args.time_scale
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra: list[str] = []
    if args.stretch_timers:
        gateway_config(s, work / "gateway_stretched.yaml", args.deadline_margin_ms)
        extra = ["--config", str(work / "gateway_stretched.yaml"), *stretched_policy_options(policy, s)]
    for kv in args.policy_option:  # after the stretched ones: the user's value wins
        extra += ["--policy-option", kv]
    with open(work / f"{policy}.up.log", "wb") as log:  # a file, not an unread pipe that could fill and block
        up = subprocess.Popen(
            [str(BIN / "polyserve"), "up", "--engines", str(args.engines), "--port", str(port), "--policy", policy,
             "--time-scale", repr(s), "--tiers", str(tiers_path), "--no-shedding",
             "--prefill-engines", str(args.prefill_engines), *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_ready(url, up)
        name = f"{policy}.json"
        r = subprocess.run(
            [str(BIN / "polyserve"), "bench", "--base-url", url, "--model", "llama-3.1-8b", "--dataset-name",
             "trace", "--dataset-path", str(AZURE_CONV), "--request-rate", repr(args.rate * s), "--duration",
             repr(args.duration / s), "--seed", str(args.seed), "--tiers", str(tiers_path), "--save-result",
             "--result-dir", str(work), "--result-filename", name, "--disable-tqdm",
             "--timeout", repr(max(120.0, 60.0 / s))],
            capture_output=True, text=True,
        )
        if r.returncode not in (0, 1):
            raise RuntimeError(f"polyserve bench failed ({r.returncode}): {r.stderr[-2000:]}")
        doc = json.loads((work / name).read_text())
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
    recs = doc["requests"]
    keep = [x for x in recs if x["scheduled_s"] * s >= args.warmup]
    out: dict[str, object] = {"overall": float(np.mean([x["attained"] for x in keep])), "n": len(keep),
                              "failed": sum(1 for x in keep if not x["ok"])}
    for name in doc["tiers"]:
        xs = [x["attained"] for x in keep if x["tier"] == name]
        out[name] = float(np.mean(xs)) if xs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--time-scale", type=float, default=0.25)
    ap.add_argument("--rate", type=float, default=40.0, help="req/s of model time (the simulator's rate)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of model time")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of model time not counted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default="polyserve,minimal")
    ap.add_argument("--prefill-engines", type=int, default=0,
                    help="> 0: disaggregated, this many prefill engines (the simulator's prefill pool alike)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument("--stretch-timers", action=argparse.BooleanOptionalAction, default=True,
                    help="stretch the router's time options and the gateway's timeouts by 1/--time-scale and turn "
                    "off the 2x-TTFT re-route, as the simulator's serve contract (default on)")
    ap.add_argument("--deadline-margin-ms", type=float, default=0.0,
                    help="the gateway's deadline_margin_ms (wall-clock ms, not stretched): deadlines reach the engines "
                    "this much earlier than the client's, room for the relay back (needs --stretch-timers)")
    ap.add_argument("--policy-option", action="append", default=[], metavar="K=V",
                    help="a router option for every policy, in both faces (repeatable), e.g. mixed_slack_share=1.0")
    ap.add_argument("--sim-only", action="store_true",
                    help="the simulator's prediction alone: no gateway is started")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep each policy's bench result JSON and polyserve up's output in this folder")
    args = ap.parse_args()
    from polyserve.core.tiers import TierSet
    from polyserve.data import DEFAULT_TIERS

    tiers = TierSet.from_toml(DEFAULT_TIERS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        tp = work / "tiers_scaled.toml"
        scaled_tiers(tiers, args.time_scale, tp)
        for p in (x.strip() for x in args.policies.split(",") if x.strip()):
            t0 = time.perf_counter()
            sim = simulate(p, args)
            if args.sim_only:
                rows.append({"policy": p, "simulator": sim, "gateway": None, "diff_points": None})
                continue
            gw = through_gateway(p, args, tp, work)
            rows.append({"policy": p, "simulator": sim, "gateway": gw,
                         "diff_points": {k: None if sim[k] is None or gw.get(k) is None else
                                         round(100 * (gw[k] - sim[k]), 2)  # type: ignore[operator]
                                         for k in ["overall", *tiers.names]}})
            print(f"{p}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    names = ["overall", *tiers.names]
    mode = f"disaggregated ({args.prefill_engines} prefill)" if args.prefill_engines else "co-located"
    print(f"{mode}, {args.engines} engines, {args.rate:g} req/s of model time for {args.duration:g} s (counted from "
          f"{args.warmup:g} s), time scale {args.time_scale:g}, seed {args.seed}")
    print(f"{'policy':<12}{'face':<11}" + "".join(f"{n:>9}" for n in names) + f"{'n':>7}")
    for r in rows:
        for face in ("simulator", "gateway"):
            d = r[face]
            if d is None:  # --sim-only
                continue
            print(f"{r['policy']:<12}{face:<11}" + "".join(
                f"{100 * d[n]:>8.1f}%" if d[n] is not None else f"{'-':>9}" for n in names) + f"{d['n']:>7}")
        if r["diff_points"] is None:
            continue
        print(f"{r['policy']:<12}{'diff (pt)':<11}" + "".join(
            f"{r['diff_points'][n]:>+9.1f}" if r["diff_points"][n] is not None else f"{'-':>9}" for n in names))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = vars(args) | {"out": str(args.out), "keep": args.keep and str(args.keep)}
        args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
