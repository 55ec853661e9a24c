"""``--ray``: compare and goodput as Ray tasks give byte-identical outputs to the local run (one local Ray with
2 CPUs shared by every Ray test, see ``tests/conftest.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from polyserve.cli import app
from polyserve.data import AZURE_CONV

COMPARE = ["compare", "--instances", "2", "--duration", "20", "--warmup", "5", "--rel-tol", "0.1", "--quiet",
           "--autoscale-rate", "1", "--seeds", "0", "--policies", "polyserve,co-chunk", "--modes", "colocated",
           "--co-chunk-budgets", "512,4096", "--sensitivity-model", "none", "--rate-sweep", "1.0",
           "--fleet-sizes", ""]
GOODPUT = ["goodput", "--policy", "polyserve", "--instances", "2", "--duration", "30", "--warmup", "5", "--quiet"]
FILES = ("compare.json", "compare.csv", "compare_details.json")


def _invoke(args: list[str]) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output


def _short_trace(tmp_path) -> str:
    """The first 400 requests of the shipped trace: the autoscaled replay stays short."""
    p = tmp_path / "conv400.csv"
    p.write_text("".join(AZURE_CONV.read_text().splitlines(keepends=True)[:401]))
    return str(p)


def test_compare_on_ray_writes_the_same_bytes_as_the_local_run(tmp_path, ray_local):
    trace = ["--trace", _short_trace(tmp_path)]
    _invoke([*COMPARE, *trace, "--jobs", "1", "--out", str(tmp_path / "local")])
    _invoke([*COMPARE, *trace, "--ray", "--out", str(tmp_path / "ray")])  # bare --ray: the Ray this process runs
    for f in FILES:
        assert (tmp_path / "ray" / f).read_bytes() == (tmp_path / "local" / f).read_bytes(), f
    rows = json.loads((tmp_path / "ray" / "compare.json").read_text())
    assert rows[0]["probes"] > 0 and rows[0]["goodput_rps"] > 0


def test_goodput_on_ray_writes_the_same_goodput_json_as_the_local_run(tmp_path, ray_local):
    _invoke([*GOODPUT, "--out", str(tmp_path / "local")])
    _invoke([*GOODPUT, "--ray", "local", "--out", str(tmp_path / "ray")])
    assert (tmp_path / "ray" / "goodput.json").read_bytes() == (tmp_path / "local" / "goodput.json").read_bytes()


def test_goodput_joins_a_ray_cluster_by_address_and_gets_the_same_result(tmp_path, ray_local):
    """A second process joins the running Ray by its address (the package shipped to the workers with the
    job), as a user joins a cluster: the same goodput.json as the local run."""
    address = ray_local.get_runtime_context().gcs_address
    _invoke([*GOODPUT, "--out", str(tmp_path / "local")])
    r = subprocess.run([sys.executable, "-m", "polyserve", *GOODPUT, "--ray", address, "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "c" / "goodput.json").read_bytes() == (tmp_path / "local" / "goodput.json").read_bytes()
