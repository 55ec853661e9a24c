"""``polyserve gateway`` / ``polyserve up`` on the command line: bad settings exit 2 with one line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from polyserve.cli import app as cli_app


def test_bad_gateway_config_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("model: m\nbackends: [http://a]\nshedding: maybe\n")
    result = CliRunner().invoke(cli_app, ["gateway", "--config", str(cfg), "--port", "0"])
    assert result.exit_code == 2
    assert f"{cfg}: shedding: must be true or false" in result.output


def test_gateway_and_up_are_registered_commands() -> None:
    out = CliRunner().invoke(cli_app, ["--help"]).output
    assert "gateway" in out and "up" in out
    bad = CliRunner().invoke(cli_app, ["up", "--engines", "0"])
    assert bad.exit_code != 0
