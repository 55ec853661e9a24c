"""The fitted linear latency model and the BLIS coefficient loader.

``step = b0 + b1 * prefill_tokens + b2 * num_decode + b3 * kv_tokens``

Why this is the default for Llama-3.1-8B on H100: its coefficients were fitted by the BLIS project
(inference-sim) against real vLLM v0.11 runs, so nobody here can tune them toward a result. For that entry
b0 = 6.47 ms, b1 = 19.8 us per prefill token, b2 = 304 us per decode token and b3 = 0.

Caveats (also in the README): BLIS fits no KV term, so long contexts cost the same as short ones; and its
decode slope (304 us per sequence) is far above the roofline's (about 60 us per sequence at 1,200 tokens of
context on H100 while the GEMMs are bandwidth-bound, about 110 us once they turn compute-bound near batch 120;
most of it is reading the sequence's KV cache), so under this model batching mostly amortises ``b0`` and a
20 ms TPOT admits a batch of only about 44 (the roofline admits about 165).

Failure modes: asking for a (model, GPU, TP) that BLIS did not fit raises ``ConfigError`` naming the pairs
that exist; use the roofline model for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import yaml

from polyserve.core.errors import ConfigError
from polyserve.data import BLIS_COEFFICIENTS
from polyserve.latency.hardware import GPUS, Deployment


@dataclass(frozen=True)
class LinearLatencyModel:
    """Affine iteration time in prefill tokens, decode sequences and KV tokens. Coefficients in seconds."""

    deployment: Deployment
    b0: float  # fixed cost per iteration, s
    b1: float  # per prefill token, s
    b2: float  # per decode sequence, s
    b3: float = 0.0  # per KV token held by decode sequences, s
    source: str = "user"
    name: str = field(default="linear", init=False)

    def __post_init__(self) -> None:
        for k in ("b0", "b1", "b2", "b3"):
            v = getattr(self, k)
            if not v >= 0:
                raise ConfigError(f"linear latency model: {k} must be >= 0, got {v}")

    @property
    def kv_independent(self) -> bool:  # type: ignore[override]
        return self.b3 == 0.0

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        if num_decode == 0 and prefill_tokens == 0:
            return 0.0
        return self.b0 + self.b1 * prefill_tokens + self.b2 * num_decode + self.b3 * kv_tokens

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "formula": "b0 + b1*prefill_tokens + b2*decode_tokens + b3*kv_tokens",
            "b0_us": self.b0 * 1e6,
            "b1_us_per_prefill_token": self.b1 * 1e6,
            "b2_us_per_decode_token": self.b2 * 1e6,
            "b3_us_per_kv_token": self.b3 * 1e6,
            "source": self.source,
            **self.deployment.describe(),
        }


@dataclass(frozen=True, slots=True)
class BlisEntry:
    model_id: str
    gpu: str  # BLIS GPU key: H100, A100-80
    tp: int
    vllm_version: str
    alpha: tuple[float, ...]
    beta: tuple[float, ...]  # b0 us, b1 us/prefill token, b2 us/decode token

    @property
    def vllm_semver(self) -> tuple[int, ...]:
        m = re.search(r"v(\d+(?:\.\d+)*)", self.vllm_version)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


@cache
def blis_entries() -> tuple[BlisEntry, ...]:
    """Every per-model entry of the shipped BLIS ``defaults.yaml`` snapshot."""
    with open(BLIS_COEFFICIENTS, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out = []
    for m in doc.get("models", []):
        out.append(
            BlisEntry(
                model_id=str(m["id"]).lower(),
                gpu=str(m["GPU"]),
                tp=int(m["tensor_parallelism"]),
                vllm_version=str(m["vllm_version"]),
                alpha=tuple(float(x) for x in m["alpha_coeffs"]),
                beta=tuple(float(x) for x in m["beta_coeffs"]),
            )
        )
    return tuple(out)


def find_blis_entry(deployment: Deployment) -> BlisEntry | None:
    """The BLIS fit for this deployment, newest vLLM version first; None if BLIS has none."""
    gpu_key = GPUS.get(deployment.gpu.name)
    cands = [
        e
        for e in blis_entries()
        if e.model_id == deployment.model.hf_id and e.gpu == gpu_key and e.tp == deployment.tp
    ]
    if not cands:
        return None
    return max(cands, key=lambda e: e.vllm_semver)


def blis_linear_model(deployment: Deployment) -> LinearLatencyModel:
    """The linear model with BLIS's coefficients for ``deployment``; ``ConfigError`` if none exist."""
    e = find_blis_entry(deployment)
    if e is None:
        have = sorted(
            {f"{x.model_id} on {x.gpu} tp={x.tp}" for x in blis_entries() if "llama-3" in x.model_id}
        )
        raise ConfigError(
            f"no fitted linear coefficients for {deployment.model.name} on {deployment.gpu.name} "
            f"tp={deployment.tp}; use --latency-model roofline (Llama fits available: {'; '.join(have)})"
        )
    b0, b1, b2 = (x * 1e-6 for x in e.beta[:3])
    return LinearLatencyModel(
        deployment,
        b0=b0,
        b1=b1,
        b2=b2,
        b3=0.0,
        source=f"BLIS defaults.yaml@938f8d88: {e.model_id} {e.gpu} tp{e.tp} {e.vllm_version}",
    )
