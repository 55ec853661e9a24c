"""Package boundaries the layout promises (README "Architecture"): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m for m in out.split() if m.startswith("polyserve")}


def test_the_gateway_imports_neither_the_engine_nor_the_simulator():
    mods = loaded_after("import polyserve.gateway.app, polyserve.gateway.cli, polyserve.gateway.dispatcher")
    assert not {m for m in mods if m.startswith(("polyserve.engine", "polyserve.sim", "polyserve.experiments"))}


@pytest.mark.parametrize("face", ["polyserve.policy", "polyserve.control", "polyserve.core"])
def test_the_policy_core_and_the_driver_import_no_face(face):
    mods = loaded_after(f"import {face}")
    faces = ("polyserve.engine", "polyserve.gateway", "polyserve.sim", "polyserve.bench", "polyserve.cli",
             "polyserve.experiments", "polyserve.serving")
    assert not {m for m in mods if m.startswith(faces)}


def test_the_ray_and_kubernetes_extras_load_only_when_a_command_uses_them():
    """Every face, the experiments and the gateway's Kubernetes and Ray modules import neither package."""
    code = ("import sys, polyserve.cli, polyserve.experiments.compare, polyserve.experiments.executor, "
            "polyserve.experiments.ray_executor, polyserve.gateway.k8s, polyserve.gateway.ray_actuator, "
            "polyserve.engine.ray_actor, polyserve.up; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'kubernetes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_benchmark_client_imports_no_other_face():
    """``polyserve bench`` measures any OpenAI server: it shares the client side with the gateway through
    ``serving`` (``upstream``, ``wire``), never by importing the gateway, the engine or the simulator."""
    mods = loaded_after("import polyserve.bench.runner, polyserve.bench.cli, polyserve.bench.api")
    assert not {m for m in mods if m.startswith(("polyserve.gateway", "polyserve.engine", "polyserve.sim",
                                                 "polyserve.experiments"))}
    assert "polyserve.serving.wire" in mods
