"""build_latency_model: every kind, the auto rule, and loud errors."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError, RegistryError
from polyserve.data import PROFILES
from polyserve.latency import (
    LATENCY_MODELS,
    LinearLatencyModel,
    RooflineLatencyModel,
    TableLatencyModel,
    build_latency_model,
    choose_auto,
    get_deployment,
)


def test_kinds_are_registered() -> None:
    assert LATENCY_MODELS.names() == ["auto", "linear", "roofline", "table"]


def test_unknown_kind_lists_the_known_ones(h100_8b) -> None:
    with pytest.raises(RegistryError) as e:
        build_latency_model("vidur", h100_8b)
    assert str(e.value) == "unknown latency model 'vidur'; known: auto, linear, roofline, table"


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "kind"),
    [
        ("llama-3.1-8b", "h100", 1, "linear"),  # BLIS v0.11 fit
        ("llama-3.1-8b", "a100", 1, "linear"),
        ("llama-3.1-8b", "h100", 4, "roofline"),  # BLIS fit exists but b0 + b2 = 48 us < 1.2 ms weight read
        ("llama-3.1-8b", "h200", 1, "roofline"),  # no BLIS fit
        ("llama-3.1-70b", "h100", 4, "roofline"),
    ],
)
def test_auto_choice(model: str, gpu: str, tp: int, kind: str) -> None:
    dep = get_deployment(model, gpu, tp)
    choice = choose_auto(dep)
    assert choice.kind == kind
    assert build_latency_model("auto", dep).name == kind


def test_auto_explains_an_implausible_fit() -> None:
    reason = choose_auto(get_deployment("llama-3.1-8b", "h100", 4)).reason
    assert "predicts a 0.048 ms batch-1 decode step, below the 1.199 ms to read the weights" in reason


def test_each_kind_builds_its_model(h100_8b) -> None:
    assert isinstance(build_latency_model("linear", h100_8b), LinearLatencyModel)
    assert isinstance(build_latency_model("roofline", h100_8b), RooflineLatencyModel)
    a100 = get_deployment("llama-3.1-8b", "a100", 2)
    table = build_latency_model("table", a100)
    assert isinstance(table, TableLatencyModel)
    assert table.describe()["profile"] == str(PROFILES / "a100" / "meta-llama-3-8b" / "mlp.csv")


def test_table_with_explicit_profile_and_mismatch(h100_8b) -> None:
    path = str(PROFILES / "h100" / "llama-2-7b" / "mlp.csv")
    with pytest.raises(ConfigError, match="measured on another model"):
        build_latency_model("table", h100_8b, profile_path=path)
    assert (
        build_latency_model("table", h100_8b, profile_path=path, allow_profile_mismatch=True).name == "table"
    )
    with pytest.raises(ConfigError, match=r"were measured on models of another shape than llama-3\.1-8b"):
        build_latency_model("table", h100_8b)


def test_auto_follows_a_given_file(h100_8b) -> None:
    path = str(PROFILES / "h100" / "llama-2-7b" / "mlp.csv")
    assert (
        build_latency_model("auto", h100_8b, profile_path=path, allow_profile_mismatch=True).name == "table"
    )
    with pytest.raises(ConfigError, match="not both"):
        build_latency_model("auto", h100_8b, profile_path=path, coefficients_path="c.yaml")


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        (
            "roofline",
            {"coefficients_path": "c.yaml"},
            "--latency-coefficients is read only by --latency-model linear",
        ),
        (
            "table",
            {"coefficients_path": "c.yaml"},
            "--latency-coefficients is read only by --latency-model linear",
        ),
        ("linear", {"profile_path": "mlp.csv"}, "--latency-profile is read only by --latency-model table"),
    ],
)
def test_files_for_the_wrong_kind_are_refused(
    h100_8b, kind: str, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_latency_model(kind, h100_8b, **kwargs)


def test_linear_without_blis_fit_fails_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="use --latency-model roofline"):
        build_latency_model("linear", get_deployment("llama-3.1-70b", "h200", 8))
