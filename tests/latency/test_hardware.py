"""Deployments: weights, KV bytes per token and KV capacity, computed independently here."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError, ModelDoesNotFitError
from polyserve.latency import get_deployment, get_gpu, get_model

GIB = 1024**3


def test_llama_8b_shape_and_kv_bytes() -> None:
    m = get_model("llama-3.1-8b")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (32, 4096, 32, 8, 128)
    assert m.param_count == 8_030_261_248  # Meta's published 8.03B
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072


def test_llama_70b_param_count() -> None:
    assert get_model("llama-3.1-70b").param_count == 70_553_706_496
    assert get_model("llama-3.1-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "tokens"),
    [
        ("llama-3.1-8b", "h100", 1, (int(80 * GIB * 0.9) - 2 * 8_030_261_248) // 131_072),
        ("llama-3.1-8b", "h200", 1, (int(141e9 * 0.9) - 2 * 8_030_261_248) // 131_072),
        ("llama-3.1-70b", "h100", 2, (int(2 * 80 * GIB * 0.9) - 2 * 70_553_706_496) // 327_680),
        ("llama-3.1-70b", "h100", 8, (int(8 * 80 * GIB * 0.9) - 2 * 70_553_706_496) // 327_680),
    ],
)
def test_kv_capacity(model: str, gpu: str, tp: int, tokens: int) -> None:
    assert get_deployment(model, gpu, tp).kv_capacity_tokens == tokens


def test_kv_capacity_figures_in_words() -> None:
    # Round figures worth knowing: ~467k KV tokens for 8B on one H100, only ~41k for 70B on two.
    assert get_deployment("llama-3.1-8b", "h100", 1).kv_capacity_tokens == 467_291
    assert get_deployment("llama-3.1-70b", "h100", 2).kv_capacity_tokens == 41_233


@pytest.mark.parametrize("gpu", ["h100", "h200", "a100"])
def test_70b_on_one_gpu_does_not_fit(gpu: str) -> None:
    with pytest.raises(
        ModelDoesNotFitError, match=r"llama-3.1-70b \(141.1 GB of weights\) does not fit on 1 x"
    ):
        get_deployment("llama-3.1-70b", gpu, 1)


def test_heads_must_split_over_tp() -> None:
    with pytest.raises(ConfigError, match="28 query heads / 4 KV heads cannot be split over tp=8"):
        get_deployment("qwen2.5-7b", "h100", 8)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown GPU 'b200'; known: a100, h100, h200"):
        get_gpu("b200")
