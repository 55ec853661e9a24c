"""The ``polyserve`` command line: ``main`` (simulate, goodput, profile, policies, version), ``compare`` and
``demo``, ``up``, with the options they share (``options``); the engine, gateway and bench faces register
their own commands beside their code."""

from polyserve.cli.main import app, main

__all__ = ["app", "main"]
