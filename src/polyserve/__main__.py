"""``python -m polyserve`` runs the CLI."""

from polyserve.cli import main

main()
