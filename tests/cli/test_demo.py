"""``make demo`` is ``python -m polyserve.cli.demo``: its command line must stay a valid ``polyserve compare``."""

from __future__ import annotations

from polyserve.cli.demo import DEMO_ARGS, main
from polyserve.cli.main import app


def test_the_demo_refuses_unknown_arguments_with_its_usage():
    assert main(["--bogus"]) == 2


def test_the_demo_arguments_are_a_valid_compare_command_line():
    """Every flag the demo passes exists (typer would exit 2 on an unknown one, before any simulation)."""
    import click

    cmd = click.Group.get_command(typer_group(), None, "compare")
    names = {opt for p in cmd.params for opt in p.opts}
    flags = [a for a in DEMO_ARGS[1:] if a.startswith("--")]
    assert set(flags) <= names, set(flags) - names


def typer_group():
    import typer.main

    return typer.main.get_command(app)
