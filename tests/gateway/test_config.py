"""Gateway config files: YAML and TOML read the same; every mistake names the file, the field, what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyserve.core.errors import ConfigError
from polyserve.gateway.config import config_from_dict, load_config

YAML = """
model: m
backends:
  - url: http://127.0.0.1:8001/
    priority: true
  - http://127.0.0.1:8002
default_tier: t30
shedding: true
max_pending: 50
api_keys:
  - {key: sk-a, tiers: [t50, t100]}
timeouts: {connect_s: 1, first_token_s: 9, idle_s: 3}
engine: {gpu: h200, time_scale: 10}
"""

TOML = """
model = "m"
default_tier = "t30"
shedding = true
max_pending = 50
[[backends]]
url = "http://127.0.0.1:8001/"
priority = true
[[backends]]
url = "http://127.0.0.1:8002"
[[api_keys]]
key = "sk-a"
tiers = ["t50", "t100"]
[timeouts]
connect_s = 1
first_token_s = 9
idle_s = 3
[engine]
gpu = "h200"
time_scale = 10
"""


def test_yaml_and_toml_configs_give_the_same_settings(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(YAML)
    (tmp_path / "g.toml").write_text(TOML)
    a = load_config(tmp_path / "g.yaml")
    b = load_config(tmp_path / "g.toml")
    for c in (a, b):
        assert [x.url for x in c.backends] == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
        assert [x.priority for x in c.backends] == [True, False]
        assert c.default_tier == "t30" and c.shedding and c.max_pending == 50
        assert c.api_keys[0].tiers == ("t50", "t100")
        assert (c.timeouts.connect_s, c.timeouts.first_token_s, c.timeouts.idle_s) == (1, 9, 3)
        assert c.engine.gpu == "h200" and c.engine.time_scale == 10
        assert c.policy == "polyserve"


def test_a_relative_tiers_path_is_read_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text('[[tier]]\nname = "gold"\ntpot_ms = 25\nttft_ms = 300\n')
    (tmp_path / "g.yaml").write_text("model: m\nbackends: [http://a]\ntiers: t.toml\ndefault_tier: gold\n")
    c = load_config(tmp_path / "g.yaml")
    assert c.load_tiers().names == ["gold"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"backends": ["http://a"]}, "model: missing"),
        ({"model": "m", "backends": []}, "backends: must be a non-empty list"),
        ({"model": "m", "backends": ["ftp://a"]}, "backends[0].url: must start with http://"),
        ({"model": "m", "backends": ["http://a", "http://a/"]}, "backends[1].url: http://a is listed twice"),
        (
            {"model": "m", "backends": [{"url": "http://a", "prio": True}]},
            "backends[0].prio: unknown key; allowed: deadlines, priority, role, url",
        ),
        ({"model": "m", "backends": ["http://a"], "polcy": "x"}, "polcy: unknown key"),
        ({"model": "m", "backends": ["http://a"], "policy": "nope"}, "policy: unknown router 'nope'; known:"),
        (
            {"model": "m", "backends": ["http://a"], "default_tier": "gold"},
            "default_tier: unknown tier 'gold'; known: t20",
        ),
        ({"model": "m", "backends": ["http://a"], "shedding": "yes"}, "shedding: must be true or false"),
        ({"model": "m", "backends": ["http://a"], "retries": -1}, "retries: must be an integer >= 0"),
        (
            {"model": "m", "backends": ["http://a"], "deadline_margin_ms": -5},
            "deadline_margin_ms: must be a finite number >= 0",
        ),
        ({"model": "m", "backends": ["http://a"], "timeouts": {"idle": 1}}, "timeouts.idle: unknown key"),
        (
            {"model": "m", "backends": ["http://a"], "timeouts": {"idle_s": 0}},
            "timeouts.idle_s: must be a finite number",
        ),
        (
            {"model": "m", "backends": ["http://a"], "api_keys": [{"key": "k", "tiers": ["gold"]}]},
            "api_keys[0].tiers: unknown tier 'gold'",
        ),
        ({"model": "m", "backends": ["http://a"], "api_keys": [{"key": "k"}]}, "api_keys[0]: needs both key and tiers"),
        ({"model": "m", "backends": ["http://a"], "engine": {"gpus": "h100"}}, "engine.gpus: unknown key"),
    ],
)
def test_config_errors_name_the_file_and_the_field(doc: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict(doc, "gw.yaml")
    assert str(e.value).startswith("gw.yaml: ")
    assert expected in str(e.value)


def test_unreadable_or_unknown_format_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "g.ini").write_text("x")
    with pytest.raises(ConfigError, match=r"name it \.yaml, \.yml or \.toml"):
        load_config(tmp_path / "g.ini")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
