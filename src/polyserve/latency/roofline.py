"""An analytical (roofline) latency model from a model's architecture and a GPU's spec.

Why: BLIS measured only a few (model, GPU, TP) triples. For every other deployment (Llama-3.1-70B, H200, most
TP degrees) the simulator still needs iteration times that respond correctly to batch size, prefill chunk,
KV-cache size and tensor parallelism. A roofline gives that from first principles; it is the fallback of
``build_latency_model("auto", ...)``.

The algorithm (per iteration, per GPU of a ``tp``-way tensor-parallel instance; ``D`` decode sequences,
``K`` KV tokens they hold, ``P`` prefill tokens, ``L`` layers, ``H`` query heads, ``d`` head dim):

=================  =================================================  ==================================
op                 FLOPs                                              bytes read or written in HBM
=================  =================================================  ==================================
layer GEMMs        ``2 * N_layers * (D + P) / tp``                    ``N_layers * dtype / tp`` (weights)
lm_head GEMM       ``2 * V * h * (D + [P > 0]) / tp``                 ``V * h * dtype / tp``
decode attention   ``4 * L * H * d * K / tp``                         ``(K + D) * kv_bytes / tp``
prefill attention  ``2 * L * H * d * P * (P + 1) / tp`` (causal)      ``2 * P * kv_bytes / tp``
=================  =================================================  ==================================

(``kv_bytes`` is ``ModelArch.kv_bytes_per_token``; ``V`` the vocabulary, ``h`` the hidden size.)

Each op takes ``max(compute, memory)`` with compute at ``peak * MFU`` (prefill FLOPs at ``mfu_prefill``,
decode FLOPs at ``mfu_decode``) and memory at ``HBM bandwidth * hbm_efficiency``. The ops are then **summed**,
plus the TP all-reduces and a fixed overhead:

    time = sum_op max(compute_op, memory_op) + 2 * L * allreduce(tokens * h * dtype) + overhead

Why a sum of per-op maxima rather than one max over the whole iteration: the kernels of one forward pass run
one after another on one CUDA stream, so compute and memory traffic overlap *within* a kernel, not across
kernels (the per-operator roofline of LLM-Viewer, Yuan et al., arXiv 2402.16363). Why the prefill and decode
tokens share one GEMM op: vLLM batches them into one forward pass, so the weights are read once per iteration
whatever the mix (chunked prefill's whole point). ``N_layers`` counts the QKV, output and gated-MLP matrices
of every layer; the input embedding is a lookup (no FLOPs, a few rows read). The lm_head runs only on tokens
that need logits: every decode token and, when a prefill chunk is present, one token (vLLM computes logits
only at each sequence's last position; a chunk that completes several prompts at once is undercounted by a
few GEMV rows). Prefill attention counts the chunk's causal attention over its own tokens only: the
interface does not say how much earlier context a chunk has, so this is a lower bound for later chunks.
Activations and elementwise kernels (norms, RoPE, SiLU, residual adds) are not modelled separately: in
prefill they are inside BLIS's whole-pass MFU, in decode they are launch-bound and inside the per-layer
overhead below.

Factors and their sources (none of them is fitted to the BLIS linear model):

- ``mfu_prefill``, ``mfu_decode``: ``GpuSpec`` values, i.e. BLIS ``hardware_config.json`` (H100 0.45/0.30,
  A100 0.38/0.18; H200 borrows H100's). They are BLIS's roofline calibrations (BLIS discussion #589).
- ``hbm_efficiency = 0.80``: the fraction of datasheet HBM bandwidth that weight-streaming GEMVs reach,
  measured from Vidur's kernel profiles (``mlp.csv``, num_tokens = 1, TP1: the four projection GEMMs' bytes
  over their median time): 0.77 (H100, Llama-2-7B), 0.86 (H100, Llama-2-70B), 0.77 (A100, Llama-3-8B),
  0.75 (A100, Llama-2-7B); mean 0.79. Vidur's A100 decode-attention profile reaches 0.76 at large
  ``batch * context``, so KV reads use the same factor.
- TP all-reduce: ring cost ``latency + 2 * (tp - 1) / tp * bytes / bus_bandwidth``, two per layer (after
  attention and after the MLP, Megatron-style). Latency and bus bandwidth are a least-squares fit to Vidur's
  measured NCCL all-reduce on an H100 DGX (``profiling/network/h100_dgx/all_reduce.csv``, 2 KB to 64 MB):
  TP2 24.0 us + 305 GB/s, TP4 27.9 us + 353 GB/s, TP8 34.7 us + 366 GB/s. Other GPUs scale the bandwidth by
  their NVLink rate over H100's 900 GB/s (datasheets: A100 SXM NVLink3 600 GB/s, H200 SXM 900 GB/s) and keep
  the latency. vLLM's custom all-reduce is faster than NCCL for small messages, so at small batches this
  term is pessimistic.
- Overhead per iteration: ``126.0 us + 32.1 us * L + 4.42 us * requests`` (requests = ``D`` plus one if a
  prefill chunk is present). These are BLIS's ``trained_physics_coefficients`` beta7 (per-step constant),
  beta5 (per-layer overhead) and beta6 (per-request scheduling), ``defaults.yaml`` @ f90a1e3: fitted by BLIS
  as the overheads of *its own roofline* against real vLLM step times, not derived from the per-model linear
  fits. For Llama-3.1-8B that is 1.15 ms per iteration. A pessimistic alternative is the 4 ms CPU bubble per
  decode step reported for vLLM v0.5 in vllm-project/vllm#6854 (before multi-step scheduling and V1's
  overlap); pass ``step_overhead_s=4e-3, layer_overhead_s=0`` to use it.

Caveats: no quantization (dtype from the config), no CUDA-graph padding, no speculative decoding, KV heads
replicated when ``tp`` exceeds them. Results are estimates: compare against the measured linear model where
one exists (``tests/latency`` prints the disagreement for Llama-3.1-8B on H100). Known gaps there: at batch 1
the two agree within 1%; the roofline's decode cost per sequence (63-115 us at 1,200 tokens of context) is a
third of BLIS's 304 us; and its prefill cost per token (about 34 us at BLIS's 0.45 prefill MFU) is 1.7x the
19.8 us BLIS measured, which implies an MFU near 0.77, as Vidur's large-GEMM kernel times also show. The
MFUs are kept as published rather than tuned to close that gap.

Failure modes: a non-positive efficiency or a negative overhead raises ``ConfigError`` at construction; a
model that does not fit was already refused by ``Deployment`` (``ModelDoesNotFitError``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from polyserve.core.errors import ConfigError
from polyserve.latency.hardware import Deployment

# Vidur h100_dgx all_reduce.csv, least-squares fit of median time = latency + 2(n-1)/n * bytes / busbw.
ALLREDUCE_H100_FIT: dict[int, tuple[float, float]] = {  # tp -> (latency s, bus bandwidth bytes/s)
    2: (24.0e-6, 305e9),
    4: (27.9e-6, 353e9),
    8: (34.7e-6, 366e9),
}
# NVLink per-GPU total bandwidth, GB/s (vendor datasheets); scales the measured H100 bus bandwidth.
NVLINK_GBPS: dict[str, float] = {"h100": 900.0, "h200": 900.0, "a100": 600.0}

HBM_EFFICIENCY = 0.80  # Vidur mlp.csv GEMV measurements, see the module docstring
STEP_OVERHEAD_S = 126.024825e-6  # BLIS trained_physics beta7, us/step
LAYER_OVERHEAD_S = 32.09546717e-6  # BLIS trained_physics beta5, us/layer
REQUEST_OVERHEAD_S = 4.41684444e-6  # BLIS trained_physics beta6, us/request
BREAKDOWN_TERMS = ("gemm", "lm_head", "decode_attention", "prefill_attention", "allreduce", "overhead")


@dataclass(frozen=True)
class RooflineLatencyModel:
    """Per-operator roofline iteration time; see the module docstring for formulas and sources.

    ``None`` for an MFU or an all-reduce parameter means "the documented default for this deployment".
    """

    deployment: Deployment
    hbm_efficiency: float = HBM_EFFICIENCY
    mfu_prefill: float | None = None
    mfu_decode: float | None = None
    step_overhead_s: float = STEP_OVERHEAD_S
    layer_overhead_s: float = LAYER_OVERHEAD_S
    request_overhead_s: float = REQUEST_OVERHEAD_S
    allreduce_latency_s: float | None = None
    allreduce_bus_bytes_per_s: float | None = None
    name: str = field(default="roofline", init=False)
    kv_independent: bool = field(default=False, init=False)
    # Precomputed per-GPU constants (seconds per unit); set in __post_init__ so iteration_time stays cheap.
    _c: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dep = self.deployment
        gpu, m, tp = dep.gpu, dep.model, dep.tp
        mfu_p = gpu.mfu_prefill if self.mfu_prefill is None else self.mfu_prefill
        mfu_d = gpu.mfu_decode if self.mfu_decode is None else self.mfu_decode
        for k, v in (("hbm_efficiency", self.hbm_efficiency), ("mfu_prefill", mfu_p), ("mfu_decode", mfu_d)):
            if not 0 < v <= 1:
                raise ConfigError(f"roofline latency model: {k} must be in (0, 1], got {v}")
        for k in ("step_overhead_s", "layer_overhead_s", "request_overhead_s"):
            v = getattr(self, k)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"roofline latency model: {k} must be a finite number >= 0, got {v}")
        lat, busbw = self._allreduce_params()
        if not (lat >= 0 and busbw > 0):
            raise ConfigError(
                f"roofline latency model: all-reduce latency must be >= 0 and bus bandwidth > 0, "
                f"got {lat} s and {busbw} bytes/s"
            )
        object.__setattr__(self, "mfu_prefill", mfu_p)
        object.__setattr__(self, "mfu_decode", mfu_d)

        h, hd, L = m.hidden_size, m.head_dim, m.num_layers
        attn = h * m.num_heads * hd + 2 * h * m.num_kv_heads * hd + m.num_heads * hd * h
        layer_params = L * (attn + 3 * h * m.intermediate_size)
        lm_params = m.vocab_size * h
        bw = gpu.hbm_bytes_per_s * self.hbm_efficiency
        peak_p = gpu.peak_flops * mfu_p
        peak_d = gpu.peak_flops * mfu_d
        kv_heads_gpu = max(1, math.ceil(m.num_kv_heads / tp))  # replicated when tp > kv heads
        kv_bytes_gpu = 2 * L * kv_heads_gpu * hd * m.dtype_bytes  # per token, per GPU
        attn_flops = 4 * L * m.num_heads * hd / tp  # per (query token x context token)
        ar_bytes = 2 * (tp - 1) / tp * h * m.dtype_bytes  # ring traffic per token per all-reduce
        c = (
            2 * layer_params / tp / peak_p,  # 0 layer GEMM compute, s per prefill token
            2 * layer_params / tp / peak_d,  # 1 layer GEMM compute, s per decode token
            layer_params * m.dtype_bytes / tp / bw,  # 2 layer weights read, s per iteration
            2 * lm_params / tp / peak_p,  # 3 lm_head compute, s per prefill logit token
            2 * lm_params / tp / peak_d,  # 4 lm_head compute, s per decode token
            lm_params * m.dtype_bytes / tp / bw,  # 5 lm_head weights read, s
            attn_flops / peak_d,  # 6 decode attention compute, s per KV token
            kv_bytes_gpu / bw,  # 7 KV bytes, s per token read or written
            attn_flops / 2 / peak_p,  # 8 prefill attention compute, s per unit of P * (P + 1)
            (2 * L * lat) if tp > 1 else 0.0,  # 9 all-reduce latency, s per iteration
            (2 * L * ar_bytes / busbw) if tp > 1 else 0.0,  # 10 all-reduce transfer, s per token
            self.step_overhead_s + L * self.layer_overhead_s,  # 11 fixed overhead, s per iteration
            self.request_overhead_s,  # 12 per-request overhead, s
        )
        object.__setattr__(self, "_c", c)

    def _allreduce_params(self) -> tuple[float, float]:
        """(latency s, bus bandwidth bytes/s) for this deployment's TP degree and GPU."""
        tp, gpu = self.deployment.tp, self.deployment.gpu.name
        fit_lat, fit_bw = ALLREDUCE_H100_FIT.get(tp, ALLREDUCE_H100_FIT[8])
        lat = fit_lat if self.allreduce_latency_s is None else self.allreduce_latency_s
        if self.allreduce_bus_bytes_per_s is not None:
            return lat, self.allreduce_bus_bytes_per_s
        return lat, fit_bw * NVLINK_GBPS.get(gpu, NVLINK_GBPS["h100"]) / NVLINK_GBPS["h100"]

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        if num_decode == 0 and prefill_tokens == 0:
            return 0.0
        c = self._c
        gemm = max(c[0] * prefill_tokens + c[1] * num_decode, c[2])
        return gemm + self._rest(num_decode, kv_tokens, prefill_tokens)

    def time_except_layer_gemms(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        """``iteration_time`` without the per-layer GEMM term: what a kernel profile of the layers lacks.

        ``TableLatencyModel`` adds it (lm_head, attention, all-reduces, overhead) to its measured layer times.
        """
        if num_decode == 0 and prefill_tokens == 0:
            return 0.0
        return self._rest(num_decode, kv_tokens, prefill_tokens)

    def _rest(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        c = self._c
        has_p = 1 if prefill_tokens > 0 else 0
        t = max(c[3] * has_p + c[4] * num_decode, c[5])
        if num_decode:
            t += max(c[6] * kv_tokens, c[7] * (kv_tokens + num_decode))
        if prefill_tokens:
            t += max(c[8] * prefill_tokens * (prefill_tokens + 1), c[7] * 2 * prefill_tokens)
        return t + c[9] + c[10] * (num_decode + prefill_tokens) + c[11] + c[12] * (num_decode + has_p)

    def breakdown(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> dict[str, float]:
        """Seconds per term; the terms sum to ``iteration_time``. For reports and ``TableLatencyModel``."""
        if num_decode == 0 and prefill_tokens == 0:
            return dict.fromkeys(BREAKDOWN_TERMS, 0.0)
        c = self._c
        has_p = 1 if prefill_tokens > 0 else 0
        return {
            "gemm": max(c[0] * prefill_tokens + c[1] * num_decode, c[2]),
            "lm_head": max(c[3] * has_p + c[4] * num_decode, c[5]),
            "decode_attention": max(c[6] * kv_tokens, c[7] * (kv_tokens + num_decode)) if num_decode else 0.0,
            "prefill_attention": (
                max(c[8] * prefill_tokens * (prefill_tokens + 1), c[7] * 2 * prefill_tokens)
                if prefill_tokens
                else 0.0
            ),
            "allreduce": c[9] + c[10] * (num_decode + prefill_tokens),
            "overhead": c[11] + c[12] * (num_decode + has_p),
        }

    def describe(self) -> dict[str, object]:
        lat, busbw = self._allreduce_params()
        gpu = self.deployment.gpu
        return {
            "name": self.name,
            "formula": (
                "sum over ops (layer GEMMs, lm_head, decode attention, prefill attention) of "
                "max(FLOPs / (peak * MFU), bytes / (HBM bandwidth * hbm_efficiency)) "
                "+ 2 * layers * allreduce + overhead"
            ),
            "peak_tflops": gpu.peak_tflops,
            "hbm_tbps": gpu.hbm_tbps,
            "mfu_prefill": self.mfu_prefill,
            "mfu_decode": self.mfu_decode,
            "mfu_source": gpu.source,
            "hbm_efficiency": self.hbm_efficiency,
            "hbm_efficiency_source": "Vidur mlp.csv GEMVs at num_tokens=1: 0.75-0.86 of peak, mean 0.79",
            "allreduce_latency_us": lat * 1e6 if self.deployment.tp > 1 else 0.0,
            "allreduce_bus_gbps": busbw / 1e9 if self.deployment.tp > 1 else 0.0,
            "allreduce_source": "Vidur h100_dgx all_reduce.csv fit, bandwidth scaled by NVLink rate",
            "step_overhead_us": self.step_overhead_s * 1e6,
            "layer_overhead_us": self.layer_overhead_s * 1e6,
            "request_overhead_us": self.request_overhead_s * 1e6,
            "overhead_source": "BLIS defaults.yaml@f90a1e3 trained_physics_coefficients beta7, beta5, beta6",
            **self.deployment.describe(),
        }
