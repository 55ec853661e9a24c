"""GPU specs, model architectures and deployments (model x GPU x tensor parallelism).

Why a separate module: every latency model needs the same facts (weights size, KV bytes per token, KV capacity
of an instance), and the roofline model additionally needs peak FLOP/s and bandwidth. Keeping them here means
all models agree on what fits in memory.

Sources: GPU specs for ``h100`` and ``a100`` come from BLIS's ``hardware_config.json`` (shipped in
``polyserve/data/coefficients``); ``h200`` is not in that file and uses the vendor figures (989 TFLOP/s dense
BF16, 4.8 TB/s, 141 GB) with H100's MFU calibrations (same compute die). Architectures come from the models'
HF ``config.json`` files in ``polyserve/data/model_configs``.

KV capacity of an instance = ``tp * GPU memory * gpu_memory_utilization - weights``, in tokens (vLLM also
reserves activation memory found by its profile run; we do not model that, so capacity is slightly
optimistic).
A model whose weights do not fit raises ``ModelDoesNotFitError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from polyserve.core.errors import ConfigError, ModelDoesNotFitError
from polyserve.data import HARDWARE_CONFIG, MODEL_CONFIGS

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator. FLOP/s are dense BF16; MFUs are BLIS calibrations, not vendor numbers."""

    name: str
    peak_tflops: float  # dense bf16 TFLOP/s
    hbm_tbps: float  # HBM bandwidth, TB/s (1e12 bytes/s)
    memory_bytes: int
    mfu_prefill: float  # fraction of peak FLOP/s reached by prefill (compute-bound) work
    mfu_decode: float  # fraction of peak reached by decode GEMMs
    source: str

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_tbps * 1e12


@dataclass(frozen=True, slots=True)
class ModelArch:
    """A dense decoder-only transformer (Llama family shape)."""

    name: str
    hf_id: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int = 2
    tie_word_embeddings: bool = False

    @property
    def param_count(self) -> int:
        h, hd = self.hidden_size, self.head_dim
        attn = h * self.num_heads * hd + 2 * h * self.num_kv_heads * hd + self.num_heads * hd * h
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + h

    @property
    def weight_bytes(self) -> int:
        return self.param_count * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: 2 * layers * kv_heads * head_dim * dtype bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model served on ``tp`` GPUs of one kind: one *instance* in the fleet."""

    model: ModelArch
    gpu: GpuSpec
    tp: int = 1
    gpu_memory_utilization: float = 0.9

    def __post_init__(self) -> None:
        if self.tp not in (1, 2, 4, 8):
            raise ConfigError(f"--tp must be 1, 2, 4 or 8, got {self.tp}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        m, tp = self.model, self.tp
        # vLLM shards KV heads when tp <= kv heads (they must divide evenly) and replicates them otherwise
        # (tp must then be a multiple of the KV heads).
        kv_bad = m.num_kv_heads % tp if tp <= m.num_kv_heads else tp % m.num_kv_heads
        if m.num_heads % tp or kv_bad:
            raise ConfigError(
                f"{m.name}: {m.num_heads} query heads / {m.num_kv_heads} KV heads cannot be split over "
                f"tp={tp}; choose a --tp that divides the head counts"
            )
        if self.kv_capacity_bytes <= 0:
            usable = tp * self.gpu.memory_bytes * self.gpu_memory_utilization
            raise ModelDoesNotFitError(
                f"model {m.name} ({m.weight_bytes / 1e9:.1f} GB of weights) does not fit on "
                f"{tp} x {self.gpu.name} ({usable / 1e9:.1f} GB usable at gpu_memory_utilization="
                f"{self.gpu_memory_utilization}); use a larger --tp or a GPU with more memory"
            )

    @property
    def kv_capacity_bytes(self) -> int:
        usable = int(self.tp * self.gpu.memory_bytes * self.gpu_memory_utilization)
        return usable - self.model.weight_bytes

    @property
    def kv_capacity_tokens(self) -> int:
        return max(0, self.kv_capacity_bytes // self.model.kv_bytes_per_token)

    def describe(self) -> dict[str, object]:
        return {
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "weight_gb": round(self.model.weight_bytes / 1e9, 3),
            "kv_bytes_per_token": self.model.kv_bytes_per_token,
            "kv_capacity_tokens": self.kv_capacity_tokens,
        }


# Names used on the command line -> (HF config file, HF id)
MODELS: dict[str, tuple[str, str]] = {
    "llama-3.1-8b": ("llama-3.1-8b-instruct.json", "meta-llama/llama-3.1-8b-instruct"),
    "llama-3.1-70b": ("llama-3.1-70b-instruct.json", "meta-llama/llama-3.1-70b-instruct"),
    "qwen2.5-7b": ("qwen2.5-7b-instruct.json", "qwen/qwen2.5-7b-instruct"),
}

# Names used on the command line -> key in BLIS hardware_config.json (None = vendor figures below)
GPUS: dict[str, str | None] = {"h100": "H100", "a100": "A100-80", "h200": None}


@cache
def _hardware_json() -> dict[str, dict[str, object]]:
    with open(HARDWARE_CONFIG, encoding="utf-8") as f:
        return json.load(f)


def get_gpu(name: str) -> GpuSpec:
    """GPU spec by CLI name (``h100``, ``h200``, ``a100``)."""
    key = name.lower()
    if key not in GPUS:
        raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(sorted(GPUS))}")
    blis_key = GPUS[key]
    if blis_key is None:  # h200: vendor datasheet; MFUs borrowed from H100 (same GH100 compute die)
        h100 = _hardware_json()["H100"]
        return GpuSpec(
            name="h200",
            peak_tflops=989.0,
            hbm_tbps=4.8,
            memory_bytes=141 * 10**9,
            mfu_prefill=float(h100["mfuPrefill"]),  # type: ignore[arg-type]
            mfu_decode=float(h100["mfuDecode"]),  # type: ignore[arg-type]
            source="NVIDIA H200 SXM datasheet (989 TFLOP/s BF16 dense, 4.8 TB/s, 141 GB); MFUs of BLIS H100",
        )
    spec = _hardware_json()[blis_key]
    return GpuSpec(
        name=key,
        peak_tflops=float(spec["TFlopsPeak"]),  # type: ignore[arg-type]
        hbm_tbps=float(spec["BwPeakTBs"]),  # type: ignore[arg-type]
        memory_bytes=int(float(spec["MemoryGiB"]) * GIB),  # type: ignore[arg-type]
        mfu_prefill=float(spec["mfuPrefill"]),  # type: ignore[arg-type]
        mfu_decode=float(spec["mfuDecode"]),  # type: ignore[arg-type]
        source=f"BLIS hardware_config.json[{blis_key}]",
    )


def model_arch_from_hf_config(name: str, hf_id: str, cfg: dict[str, object]) -> ModelArch:
    """Build a ``ModelArch`` from an HF ``config.json`` dict; a missing key raises ``ConfigError``."""
    try:
        hidden = int(cfg["hidden_size"])  # type: ignore[arg-type]
        heads = int(cfg["num_attention_heads"])  # type: ignore[arg-type]
        dtype = str(cfg.get("torch_dtype", "bfloat16"))
        return ModelArch(
            name=name,
            hf_id=hf_id,
            num_layers=int(cfg["num_hidden_layers"]),  # type: ignore[arg-type]
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads", heads)),  # type: ignore[arg-type]
            head_dim=int(cfg.get("head_dim", hidden // heads)),  # type: ignore[arg-type]
            intermediate_size=int(cfg["intermediate_size"]),  # type: ignore[arg-type]
            vocab_size=int(cfg["vocab_size"]),  # type: ignore[arg-type]
            dtype_bytes=4 if dtype == "float32" else 2,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise ConfigError(f"model config for {name}: missing key {e.args[0]!r}") from None


@cache
def get_model(name: str) -> ModelArch:
    """Model architecture by CLI name (``llama-3.1-8b``, ``llama-3.1-70b``, ``qwen2.5-7b``)."""
    key = name.lower()
    if key not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    fname, hf_id = MODELS[key]
    with open(MODEL_CONFIGS / fname, encoding="utf-8") as f:
        cfg = json.load(f)
    return model_arch_from_hf_config(key, hf_id, cfg)


def get_deployment(model: str, gpu: str, tp: int = 1, gpu_memory_utilization: float = 0.9) -> Deployment:
    return Deployment(get_model(model), get_gpu(gpu), tp, gpu_memory_utilization)
