"""Options and helpers every ``polyserve`` subcommand shares (one definition, so flags read alike)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperCommand

from polyserve.core.errors import PolyServeError

# a pipe or a file gets wide tables (rich would otherwise squash them to 80 columns)
console = Console() if sys.stdout.isatty() else Console(width=200)
err = Console(stderr=True)

# ---- shared options ----------------------------------------------------------------------------------------
Trace = Annotated[Path | None, typer.Option("--trace", help="Request trace (Azure, Vidur, BurstGPT CSV or Mooncake JSONL). Default: the shipped Azure 2023 conversation trace.", dir_okay=False)]
TraceFormat = Annotated[str | None, typer.Option("--trace-format", help="azure|vidur|burstgpt|mooncake|lengths (default: detect from the first line)")]
Tiers = Annotated[Path | None, typer.Option("--tiers", help="Tier file (TOML). Default: the shipped t20/t30/t50/t100 tiers.", dir_okay=False)]
TierWeights = Annotated[str | None, typer.Option("--tier-weights", help="Mix weights, e.g. 't20=1,t30=1,t50=2,t100=0' (overrides the file and a trace's tier column)")]
Instances = Annotated[int, typer.Option("--instances", "-n", help="Instances (servers) in the fleet", min=1)]
Mode = Annotated[str, typer.Option("--mode", help="colocated (chunked prefill) or disaggregated (prefill/decode pools)")]
PrefillFraction = Annotated[float, typer.Option("--prefill-fraction", help="Disaggregated: share of instances in the prefill pool")]
KvLink = Annotated[float, typer.Option("--kv-link-gbps", help="Disaggregated: KV transfer bandwidth, Gbit/s")]
ColdStart = Annotated[float, typer.Option("--cold-start", help="Seconds from scale-up to a server taking work")]
Model = Annotated[str, typer.Option("--model", help="llama-3.1-8b | llama-3.1-70b | qwen2.5-7b")]
Gpu = Annotated[str, typer.Option("--gpu", help="h100 | h200 | a100")]
Tp = Annotated[int, typer.Option("--tp", help="Tensor parallelism: 1, 2, 4 or 8")]
LatModel = Annotated[str, typer.Option("--latency-model", help="auto | linear | roofline | table")]
LatCoef = Annotated[Path | None, typer.Option("--latency-coefficients", help="Coefficients file from `polyserve profile fit` (linear)", dir_okay=False)]
LatProfile = Annotated[Path | None, typer.Option("--latency-profile", help="Vidur mlp.csv profile (table)", dir_okay=False)]
Policy = Annotated[str, typer.Option("--policy", help="Router (see `polyserve policies`)")]
PolicyOption = Annotated[list[str] | None, typer.Option("--policy-option", help="Router option KEY=VALUE, repeatable (e.g. promotion=false; `polyserve policies` names the routers)")]
Overload = Annotated[str, typer.Option("--overload", help="A request whose TTFT can no longer be met, for every policy alike: serve (late, after attainable ones) | shed (dropped with the reason)")]
DecodeSeatTimeout = Annotated[float, typer.Option("--decode-seat-timeout", help="Disaggregated: seconds a request that has streamed its first token may wait for a decode seat before it ends with an error (status timed_out), as the gateway's timeouts.idle_s; 0 = unbounded (it completes late)")]
Scheduler = Annotated[str | None, typer.Option("--scheduler", help="Per-instance scheduler: fcfs | edf | ... (default: the policy's)")]
Autoscaler = Annotated[str | None, typer.Option("--autoscaler", help="Autoscaler name (default: none, fixed fleet)")]
Rate = Annotated[float | None, typer.Option("--rate", help="req/s: re-times the trace, or drives synthetic arrivals")]
Duration = Annotated[float | None, typer.Option("--duration", help="Seconds of arrivals to keep (cut)")]
Tile = Annotated[bool, typer.Option("--tile/--no-tile", help="Repeat the trace to fill --duration")]
Arrival = Annotated[str, typer.Option("--arrival", help="trace (replay timestamps) | poisson | gamma")]
NumRequests = Annotated[int | None, typer.Option("--num-requests", help="Synthetic: number of requests; replay: cap on rows")]
InputLen = Annotated[str | None, typer.Option("--input-len", help="fixed:N | uniform:A:B | zipf:A:MAX | trace (default: the trace's, else fixed:1024)")]
OutputLen = Annotated[str | None, typer.Option("--output-len", help="as --input-len (default: the trace's, else fixed:128)")]
Burstiness = Annotated[float, typer.Option("--burstiness", help="Gamma shape for --arrival gamma (1 = Poisson)")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random draw")]
Out = Annotated[Path | None, typer.Option("--out", help="Output directory (created; may exist)", file_okay=False)]
MaxSeqs = Annotated[int, typer.Option("--max-num-seqs", help="vLLM max_num_seqs")]
MaxTokens = Annotated[int | None, typer.Option("--max-num-batched-tokens", help="vLLM token budget (default: 8192, 2048 on A100)")]
GpuMemUtil = Annotated[float, typer.Option("--gpu-memory-utilization", help="vLLM gpu_memory_utilization")]
Step = Annotated[bool, typer.Option("--step", help="Simulate iteration by iteration (no fast path; same results, slower)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table")]


def fail(e: Exception) -> None:
    """One line on stderr, exit 2. Input-file errors are exactly ``FILE:LINE: FIELD: what is wrong``."""
    from polyserve.core.errors import InputError

    msg = str(e) if isinstance(e, InputError) else f"error: {e}"
    sys.stderr.write(msg.replace("\n", " ") + "\n")
    raise typer.Exit(2)


def parse_policy_options(items: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` pairs: true/false become booleans, numbers numbers, anything else stays a string."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise PolyServeError(f"--policy-option: expected KEY=VALUE, got {item!r}")
        v: object = val.strip()
        low = val.strip().lower()
        if low in ("true", "false"):
            v = low == "true"
        else:
            for conv in (int, float):
                try:
                    v = conv(val)
                    break
                except ValueError:
                    continue
        out[key.strip()] = v
    return out


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PolyServeError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PolyServeError(f"{flag}: expected comma-separated integers, got {text!r}") from None


# ---- --ray [ADDRESS]: an option whose value may be left out ----------------------------------------------------
RAY_LOCAL = "local"  # what a bare --ray means: start a local Ray instance
Ray = Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Run the simulations as Ray tasks: bare --ray starts a local Ray (--jobs CPUs, 0 = every core); an ADDRESS joins that cluster (auto, HOST:PORT, ray://HOST:10001). Needs the ray extra. Same results as without it")]


def bare_to_default(args: list[str], option: str, default: str) -> list[str]:
    """``option`` given with no value (last, or followed by another option) gets ``default`` as its value,
    so ``--ray`` alone and ``--ray ADDRESS`` both parse (the CLI parser knows only options with values)."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a == option and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(default)
    return out


class OptionalRayCommand(TyperCommand):
    """A command whose ``--ray`` may be given without an address (``bare_to_default``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
        return super().parse_args(ctx, bare_to_default(list(args), "--ray", RAY_LOCAL))
