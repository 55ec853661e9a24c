"""The gateway's added latency and CPU per request, next to vllm-router, in front of the same emulated engines.

Processes: the emulated engine(s) (``launch_engine``), the PolyServe gateway (``polyserve gateway``), and
``vllm-router --policy round_robin`` (if it can be found and started), each in its own process; the load
generator is this process. For each concurrency N (default 10 and 100) the load generator keeps N streams
busy (closed loop: each stream sends its next request when the previous one ends, after a random think time
of up to ``--think-ms`` so arrivals do not lock to the engine's iteration phase) against each target in turn:
the engines directly (round robin over them), the gateway, vllm-router. Per target it reports TTFT p50/p99
(send to first token chunk, as the client sees it), the figure minus the direct one ("added"), and the target
process's CPU per request (utime + stime from ``/proc/<pid>/stat``, all threads).

    .venv/bin/python benchmarks/bench_gateway.py [--streams 10,100] [--engines 1] [--rounds 3] [--vllm-router PATH]

``--rounds R`` splits each target's requests into R rounds and runs the targets in turn within each round
(direct, gateway, vllm-router, direct, ...), so a change of the machine's load during the run falls on every
target alike (on a shared machine it moves the figures by more than what is measured); the table pools the
rounds, and a line per concurrency gives each round's added p50 and CPU ratio, and their medians.

``--baseline-src DIR`` adds a second gateway, run from another source tree (``DIR`` is its ``src/``; make one
with ``git worktree add /tmp/base <commit>`` and pass ``/tmp/base/src``), as target ``gateway@base`` in the
same rounds: a change to the gateway measured against the code before it, side by side, with a per-round
difference (on a noisy machine the rounds move together, their difference much less).

vllm-router is not a project dependency (a Rust binary on PyPI): install it beside the project with
``python3 -m venv /tmp/vr-venv && /tmp/vr-venv/bin/pip install vllm-router==0.1.17``; the script finds it on
``PATH``, at ``/tmp/vr-venv/bin/vllm-router``, or at ``--vllm-router PATH``, and says so plainly when it cannot.

What to expect: the direct TTFT is the engine's own (its prefill iteration plus the wait for the iteration in
flight); a router adds its request parsing, its routing decision, one extra loopback hop each way and the
relay of the first chunk. Noise: the engine's iteration phase (up to one iteration, ~7-40 ms at time scale
1) is random per request, so the median needs a few hundred requests to resolve a millisecond.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from polyserve.engine import EngineConfig, launch_engine
from polyserve.gateway.process import launch_gateway

MODEL = "llama-3.1-8b"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    urls: list[str]  # requests go round robin over these
    pid: int | None  # the process whose CPU is counted (None: direct)


async def one_run(
    client: httpx.AsyncClient, target: Target, streams: int, requests: int, args: argparse.Namespace
) -> list[float]:
    """TTFTs (s) of ``requests`` requests, ``streams`` at a time."""
    body = {
        "model": MODEL,
        "prompt": " ".join(["w"] * args.input_len),
        "max_tokens": args.output_len,
        "stream": True,
    }
    ttfts: list[float] = []
    counter = iter(range(requests))
    rng = random.Random(streams)

    async def worker() -> None:
        for k in counter:
            url = target.urls[k % len(target.urls)] + "/v1/completions"
            await asyncio.sleep(rng.uniform(0, args.think_ms / 1e3))
            t0 = time.perf_counter()
            first = None
            async with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"{target.name}: HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                async for chunk in r.aiter_raw():
                    if first is None and b'"text":"' in chunk:
                        first = time.perf_counter() - t0
            if first is None:
                raise RuntimeError(f"{target.name}: a stream ended without a token")
            ttfts.append(first)

    await asyncio.gather(*(worker() for _ in range(streams)))
    return ttfts


async def measure(t: Target, n: int, requests: int, args: argparse.Namespace) -> tuple[list[float], float | None]:
    """Warm up (open the N keep-alive connections, 2N requests), then the measured run on the same client, so
    connection set-up is not in the figures. CPU: the target process's, over the measured run only."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=n * 2, keepalive_expiry=300)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await one_run(client, t, n, 2 * n, args)
        c0 = cpu_seconds(t.pid) if t.pid else 0.0
        ttfts = await one_run(client, t, n, requests, args)
        return ttfts, (cpu_seconds(t.pid) - c0) if t.pid else None


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def start_vllm_router(path: str | None, workers: list[str]) -> tuple[subprocess.Popen[bytes] | None, str, str]:
    """(process, url, why-not). Prints nothing; the caller reports."""
    exe = (
        path
        or shutil.which("vllm-router")
        or ("/tmp/vr-venv/bin/vllm-router" if Path("/tmp/vr-venv/bin/vllm-router").exists() else None)
    )
    if exe is None:
        return None, "", "vllm-router not found (pip install vllm-router==0.1.17, or pass --vllm-router PATH)"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fd, log = tempfile.mkstemp(prefix="vllm-router-", suffix=".log")
    os.close(fd)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers, "--policy", "round_robin",
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None, "", f"vllm-router exited with code {proc.returncode}: {Path(log).read_text()[-500:]}"
            try:
                r = c.post(url + "/v1/completions", json={"model": MODEL, "prompt": "w", "max_tokens": 1})
                if r.status_code == 200:
                    return proc, url, ""
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    proc.kill()
    return None, "", f"vllm-router did not answer within 60 s: {Path(log).read_text()[-500:]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="10,100")
    ap.add_argument("--engines", type=int, default=1)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--requests", type=int, default=0, help="requests per run (default: max(300, 10 per stream))")
    ap.add_argument("--think-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleave the targets in this many rounds")
    ap.add_argument("--policy", default="polyserve")
    ap.add_argument("--vllm-router", default=None, help="path of the vllm-router binary")
    ap.add_argument("--baseline-src", default=None, metavar="DIR",
                    help="also measure a gateway run from this source tree (its src/ directory, e.g. a "
                         "`git worktree` of the commit before a change), as target gateway@base in the same rounds")
    args = ap.parse_args()
    if args.baseline_src is not None and not (Path(args.baseline_src) / "polyserve" / "__init__.py").is_file():
        ap.error(f"--baseline-src {args.baseline_src}: no polyserve package there (give the tree's src/ directory)")
    engines = [launch_engine(EngineConfig(time_scale=args.time_scale)) for _ in range(args.engines)]
    urls = [e.url for e in engines]
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"model: {MODEL}\nbackends: [{', '.join(urls)}]\npolicy: {args.policy}\n"
        f"engine: {{time_scale: {args.time_scale}}}\n"
    )
    gw = launch_gateway(["gateway", "--config", str(cfg), "--port", "0"])
    base = None
    if args.baseline_src is not None:
        old_path = os.environ.get("PYTHONPATH")
        # the child imports polyserve from there first (ahead of this tree's, whatever else the path holds)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(args.baseline_src).resolve()), *filter(None, [old_path])])
        try:
            base = launch_gateway(["gateway", "--config", str(cfg), "--port", "0"])
        finally:
            if old_path is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = old_path
    router, router_url, why = start_vllm_router(args.vllm_router, urls)
    print(
        f"engines: {args.engines} (time scale {args.time_scale:g}), prompt {args.input_len} words, "
        f"{args.output_len} output tokens, think time <= {args.think_ms:g} ms; gateway policy {args.policy}"
    )
    if router is None:
        print(f"vllm-router: NOT MEASURED: {why}")
    else:
        print(f"vllm-router: {router_url} (--policy round_robin)")
    targets = [Target("direct", urls, None), Target("gateway", [gw.url], gw.proc.pid)]
    if base is not None:
        print(f"gateway@base: the gateway of {args.baseline_src}")
        targets.append(Target("gateway@base", [base.url], base.proc.pid))
    if router is not None:
        targets.append(Target("vllm-router", [router_url], router.pid))
    print(f"{'streams':>7} {'target':<12} {'requests':>8} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} "
          f"{'added p50 ms':>13} {'added p99 ms':>13} {'CPU ms/req':>11}")  # fmt: skip
    try:
        for n in (int(x) for x in args.streams.split(",")):
            requests = args.requests or max(300, 10 * n)
            rounds = max(1, args.rounds)
            per = max(1, requests // rounds)
            ttfts: dict[str, list[float]] = {t.name: [] for t in targets}
            cpus: dict[str, float] = {t.name: 0.0 for t in targets}
            added: list[float] = []
            base_added: list[float] = []
            ratios: list[float] = []
            for _ in range(rounds):
                got: dict[str, tuple[list[float], float | None]] = {}
                for t in targets:
                    got[t.name] = asyncio.run(measure(t, n, per, args))
                    ttfts[t.name] += got[t.name][0]
                    cpus[t.name] += got[t.name][1] or 0.0
                added.append((pct(got["gateway"][0], 50) - pct(got["direct"][0], 50)) * 1e3)
                if "gateway@base" in got:
                    base_added.append((pct(got["gateway@base"][0], 50) - pct(got["direct"][0], 50)) * 1e3)
                if "vllm-router" in got and got["vllm-router"][1]:
                    ratios.append((got["gateway"][1] or 0.0) / got["vllm-router"][1])
            direct = ttfts["direct"]
            for t in targets:
                xs = ttfts[t.name]
                p50, p99 = pct(xs, 50), pct(xs, 99)
                extra = (
                    ""
                    if t.name == "direct"
                    else f"{(p50 - pct(direct, 50)) * 1e3:>13.2f} {(p99 - pct(direct, 99)) * 1e3:>13.2f}"
                )
                cpu_s = "" if t.pid is None else f"{cpus[t.name] / len(xs) * 1e3:>11.3f}"
                print(f"{n:>7} {t.name:<12} {len(xs):>8} {p50 * 1e3:>12.2f} {p99 * 1e3:>12.2f} "
                      f"{extra or ' ' * 27:>27} {cpu_s}", flush=True)  # fmt: skip
            line = f"{n:>7} per round: gateway added p50 ms " + " ".join(f"{a:.2f}" for a in added)
            line += f" (median {pct(added, 50):.2f})"
            if ratios:
                line += "; CPU gateway/vllm-router " + " ".join(f"{r:.2f}" for r in ratios)
                line += f" (median {pct(ratios, 50):.2f}; pooled {cpus['gateway'] / cpus['vllm-router']:.2f})"
            print(line, flush=True)
            if base_added:
                print(f"{n:>7} per round: gateway@base added p50 ms " + " ".join(f"{a:.2f}" for a in base_added)
                      + f" (median {pct(base_added, 50):.2f}); gateway minus gateway@base "
                      + " ".join(f"{a - b:+.2f}" for a, b in zip(added, base_added, strict=True))
                      + f" (median {pct([a - b for a, b in zip(added, base_added, strict=True)], 50):+.2f})",
                      flush=True)
    finally:
        gw.stop()
        if base is not None:
            base.stop()
        if router is not None:
            router.terminate()
            router.wait(10)
        for e in engines:
            e.stop()


if __name__ == "__main__":
    sys.exit(main())
