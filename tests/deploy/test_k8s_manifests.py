"""``deploy/k8s/``: every object of both variants is valid against the Kubernetes 1.32 JSON schemas (strict:
no unknown field), offline, and the objects agree with one another and with the gateway's own config parser.

How the variants are rendered here: a kustomization in ``deploy/k8s`` may only list ``resources`` (files or
directories with their own kustomization), which this test reads itself, so CI needs no kubectl; where kubectl
is installed its ``kubectl kustomize`` output must be the same objects. ``kubectl create --dry-run=client``
is not used: it asks an API server for the REST mappings even with ``--validate=false``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from polyserve.gateway.config import config_from_dict

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VARIANTS = ("emulated", "vllm")
K8S_VERSION = "1.32.0"


def render(d: Path) -> list[dict]:
    """The objects of the kustomization in ``d``: its ``resources`` in order (a directory is rendered in turn)."""
    k = yaml.safe_load((d / "kustomization.yaml").read_text())
    extra = set(k) - {"apiVersion", "kind", "resources"}
    assert not extra, f"{d}/kustomization.yaml uses {sorted(extra)}: this test renders only resources lists"
    out: list[dict] = []
    for r in k["resources"]:
        p = d / r
        out += render(p) if p.is_dir() else [doc for doc in yaml.safe_load_all(p.read_text()) if doc]
    return out


def by(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_valid_against_the_kubernetes_schemas(variant):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install "
                             "kubernetes-validate; the dev extra has it)")
    objs = render(DEPLOY / variant)
    assert len(objs) == 11  # namespace, sa, role, binding, gateway deployment + service, configmap, 4 engines
    for o in objs:
        try:
            kv.validate(o, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{variant}: {o['kind']} {o['metadata'].get('name')}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_objects_agree_with_each_other_and_with_the_gateway_config_parser(variant):
    objs = render(DEPLOY / variant)
    assert {o["metadata"].get("namespace", "polyserve") for o in objs} == {"polyserve"}
    cfg = config_from_dict(yaml.safe_load(by(objs, "ConfigMap")["polyserve-gateway"]["data"]["gateway.yaml"]),
                           f"{variant}/gateway-config.yaml")
    kube = cfg.kubernetes
    selector = dict(kv.split("=") for kv in kube.selector.split(","))
    deployments = by(objs, "Deployment")
    engines = {n: d for n, d in deployments.items() if n != "polyserve-gateway"}
    assert {p.deployment for p in kube.pools} == set(engines), "one pool per engine Deployment"
    for p in kube.pools:
        tmpl = engines[p.deployment]["spec"]["template"]
        labels = tmpl["metadata"]["labels"]
        assert selector.items() <= labels.items(), "the gateway's selector finds the engine pods"
        assert labels["polyserve.io/tier"] == p.tier and labels["polyserve.io/role"] == p.role
        assert engines[p.deployment]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        port = tmpl["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert port == kube.port
        assert (p.deadlines, p.priority) == ((True, False) if variant == "emulated" else (False, True))
    # the gateway: runs as the ServiceAccount the RoleBinding binds, mounts the ConfigMap, behind the Service
    gw = deployments["polyserve-gateway"]["spec"]["template"]
    sa = gw["spec"]["serviceAccountName"]
    binding = by(objs, "RoleBinding")["polyserve-gateway"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "polyserve"}]
    assert sa in by(objs, "ServiceAccount")
    assert gw["spec"]["volumes"][0]["configMap"]["name"] == "polyserve-gateway"
    assert "/etc/polyserve/gateway.yaml" in gw["spec"]["containers"][0]["command"]
    svc = by(objs, "Service")["polyserve-gateway"]
    assert svc["spec"]["selector"].items() <= gw["metadata"]["labels"].items()


def test_the_role_grants_what_the_actuator_calls_and_nothing_else():
    role = by(render(DEPLOY / "base"), "Role")["polyserve-gateway"]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("", "pods"): {"get", "list", "watch", "patch"},
                     ("apps", "deployments/scale"): {"get", "patch"}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubectl_kustomize_renders_the_same_objects(variant):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the variants were checked with this test's own renderer only")
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / variant)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(render(DEPLOY / variant), key=key)
