"""Data files shipped with the package (see NOTICE.md for sources and licences)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_TIERS = DATA_DIR / "tiers_default.toml"
AZURE_CONV = DATA_DIR / "traces" / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = DATA_DIR / "traces" / "AzureLLMInferenceTrace_code.csv"
ARXIV_LENGTHS = DATA_DIR / "traces" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
BLIS_COEFFICIENTS = DATA_DIR / "coefficients" / "defaults_938f8d88_per_model_blackbox.yaml"
HARDWARE_CONFIG = DATA_DIR / "coefficients" / "hardware_config.json"
MODEL_CONFIGS = DATA_DIR / "model_configs"
PROFILES = DATA_DIR / "profiles"
