"""Kubernetes discovery and the scale actuator (``gateway/k8s.py``) against the official client's own request
layer: the ``kubernetes`` client builds every request and parses every response; only its urllib3 pool is
replaced by one that records what was sent and answers with stored API-server responses (``k8s_recorded/``,
objects in the API's wire format). Each test asserts the exact method, path, query and body sent."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from polyserve.core.errors import ConfigError
from polyserve.gateway.backend import Backend
from polyserve.gateway.config import config_from_dict
from polyserve.gateway.k8s import (
    KubeActuator,
    build_actuator,
    mark_for_deletion,
    patch_replicas,
    read_pods,
    read_replicas,
    settings_from_dict,
    slot_backends,
)
from polyserve.serving.upstream import UpstreamFailure

k8s = pytest.importorskip("kubernetes", reason="the k8s extra is not installed (pip install 'polyserve[k8s]')")
import urllib3  # noqa: E402  (a dependency of the kubernetes client)

RECORDED = Path(__file__).parent / "k8s_recorded"
PODS = json.loads((RECORDED / "pods_two_ready.json").read_text())
SCALE = json.loads((RECORDED / "scale_t20.json").read_text())
NS = "polyserve"
SELECTOR = "app.kubernetes.io/name=polyserve-engine"


class RecordingPool:
    """Stands in for the client's ``urllib3.PoolManager``: records each request, answers from ``routes``
    ((method, path) -> a JSON document, or a callable of the sent body returning one)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.routes: dict[tuple[str, str], object] = {}

    def request(self, method, url, body=None, headers=None, **kw):  # the signature the client calls
        u = urllib3.util.parse_url(url)
        sent = {"method": method, "path": u.path, "query": u.query,
                "body": json.loads(body) if body else None, "content_type": (headers or {}).get("Content-Type")}
        self.sent.append(sent)
        doc = self.routes.get((method, u.path))
        if doc is None:
            return urllib3.HTTPResponse(body=b'{"kind":"Status","code":404}', status=404, reason="Not Found",
                                        headers={"Content-Type": "application/json"}, preload_content=True)
        if callable(doc):
            doc = doc(sent["body"])
        return urllib3.HTTPResponse(body=json.dumps(doc).encode(), status=200, reason="OK",
                                    headers={"Content-Type": "application/json"}, preload_content=True)


@pytest.fixture
def api():
    cfg = k8s.client.Configuration()
    cfg.host = "https://k8s.test:6443"
    client = k8s.client.ApiClient(cfg)
    pool = RecordingPool()
    client.rest_client.pool_manager = pool
    return pool, k8s.client.CoreV1Api(client), k8s.client.AppsV1Api(client)


def test_discovery_lists_pods_by_label_selector_and_reads_ip_tier_role_and_readiness(api):
    pool, core, _ = api
    pool.routes[("GET", f"/api/v1/namespaces/{NS}/pods")] = PODS
    pods = read_pods(core, NS, SELECTOR)
    assert pool.sent == [{"method": "GET", "path": "/api/v1/namespaces/polyserve/pods",
                          "query": "labelSelector=app.kubernetes.io/name%3Dpolyserve-engine", "body": None,
                          "content_type": None}]
    got = [(p.name, p.ip, p.tier, p.role, p.ready) for p in pods]
    assert got == [
        ("polyserve-engine-t100-5d8f7c6b9-q8r2t", None, "t100", "mixed", False),  # pending: no IP, not ready
        ("polyserve-engine-t20-7c9d6b5f4-2xkqp", "10.244.1.17", "t20", "mixed", True),
        ("polyserve-engine-t20-7c9d6b5f4-9wz4m", "10.244.2.9", "t20", "mixed", True),
    ]
    assert pods[1].url(8000) == "http://10.244.1.17:8000"


def test_the_actuator_reads_and_patches_the_deployment_scale_subresource(api):
    pool, core, apps = api
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/polyserve-engine-t20/scale"
    pool.routes[("GET", path)] = SCALE
    pool.routes[("PATCH", path)] = lambda body: {**SCALE, "spec": {"replicas": body["spec"]["replicas"]}}
    assert read_replicas(apps, NS, "polyserve-engine-t20") == 3
    assert patch_replicas(apps, NS, "polyserve-engine-t20", 5) == 5
    assert pool.sent[0] == {"method": "GET", "path": path, "query": None, "body": None, "content_type": None}
    assert pool.sent[1] == {"method": "PATCH", "path": path, "query": None, "body": {"spec": {"replicas": 5}},
                            "content_type": "application/strategic-merge-patch+json"}
    pool.routes[("PATCH", f"/api/v1/namespaces/{NS}/pods/p0")] = PODS["items"][0]
    mark_for_deletion(core, NS, "p0")
    assert pool.sent[2]["path"] == f"/api/v1/namespaces/{NS}/pods/p0"
    cost = {"controller.kubernetes.io/pod-deletion-cost": "-1000"}
    assert pool.sent[2]["body"] == {"metadata": {"annotations": cost}}


SETTINGS = {"namespace": NS, "selector": SELECTOR, "port": 8000, "poll_s": 0.01, "ready_timeout_s": 5,
            "stop_idle": True,
            "pools": [{"deployment": "polyserve-engine-t20", "tier": "t20", "max_replicas": 3, "deadlines": True},
                      {"deployment": "polyserve-engine-t100", "tier": "t100", "max_replicas": 1}]}


def _pod(name: str, uid: str, ip: str, tier: str = "t20") -> dict:
    p = copy.deepcopy(PODS["items"][1])
    p["metadata"].update(name=name, uid=uid)
    p["metadata"]["labels"]["polyserve.io/tier"] = tier
    p["status"]["podIP"] = ip
    return p


def test_pods_fill_slots_activation_scales_up_and_a_deleted_pod_is_replaced(api):
    pool, core, apps = api
    settings = settings_from_dict(SETTINGS, "gw.yaml")
    backends = [Backend(i, b["url"]) for i, b in enumerate(slot_backends(settings))]
    listing = copy.deepcopy(PODS)
    pods_path = f"/api/v1/namespaces/{NS}/pods"
    t20 = f"/apis/apps/v1/namespaces/{NS}/deployments/polyserve-engine-t20/scale"
    pool.routes[("GET", pods_path)] = lambda _: listing
    pool.routes[("PATCH", t20)] = lambda body: {**SCALE, "spec": body["spec"]}
    act = build_actuator(settings, backends, lambda: (core, apps))
    assert [b.url for b in backends] == ["http://10.244.1.17:8000", "http://10.244.2.9:8000",
                                         "http://polyserve-engine-t20.slot-2.unbound",
                                         "http://polyserve-engine-t100.slot-0.unbound"]
    assert act.is_ready(0) and act.is_ready(1) and not act.is_ready(2) and not act.expects_up(3)

    async def scenario() -> None:
        act.activate(2)  # the policy wants a third t20 server: the t20 Deployment goes to 3 replicas
        waiter = asyncio.ensure_future(act.wait_ready(2))
        await asyncio.sleep(0.05)
        assert [s for s in pool.sent if s["method"] == "PATCH"] == [
            {"method": "PATCH", "path": t20, "query": None, "body": {"spec": {"replicas": 3}},
             "content_type": "application/strategic-merge-patch+json"}]
        assert not waiter.done(), "requests wait for the new pod"
        listing["items"].append(_pod("polyserve-engine-t20-7c9d6b5f4-new01", "uid-new01", "10.244.3.4"))
        await act.poll_once()
        await asyncio.wait_for(waiter, 1)
        assert backends[2].url == "http://10.244.3.4:8000" and act.replaced == 0

        del listing["items"][0]  # the pod of server 0 is gone (node lost, OOM, kubectl delete)
        await act.poll_once()
        assert not act.is_ready(0) and not act.expects_up(0)
        listing["items"].append(_pod("polyserve-engine-t20-7c9d6b5f4-new02", "uid-new02", "10.244.1.30"))
        await act.poll_once()  # its Deployment re-created it: bound to server 0, on the new pod's IP
        assert act.is_ready(0) and backends[0].url == "http://10.244.1.30:8000"
        assert act.replaced == 1 and act.supervise() == [0] and act.supervise() == []

        sent = len(pool.sent)
        pool.routes[("PATCH", f"{pods_path}/polyserve-engine-t20-7c9d6b5f4-new01")] = lambda _: PODS["items"][0]
        act.deactivate(2)  # released to the idle pool (stop_idle): its own pod is deleted, replicas 3 -> 2
        await asyncio.sleep(0.05)
        assert [(s["method"], s["path"], s["body"]) for s in pool.sent[sent:] if s["method"] == "PATCH"] == [
            ("PATCH", f"{pods_path}/polyserve-engine-t20-7c9d6b5f4-new01",
             {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}}}),
            ("PATCH", t20, {"spec": {"replicas": 2}})]
        await act.poll_once()  # the released pod is still listed (terminating soon): not bound again
        assert not act.is_ready(2)
        with pytest.raises(UpstreamFailure, match="no engine pod"):
            await act.wait_ready(2)
        await act.aclose()

    asyncio.run(scenario())


def test_a_failed_scale_patch_fails_the_waiting_requests_over(api):
    pool, core, apps = api
    settings = settings_from_dict({**SETTINGS, "pools": SETTINGS["pools"][1:]}, "gw.yaml")
    backends = [Backend(0, slot_backends(settings)[0]["url"])]
    pool.routes[("GET", f"/api/v1/namespaces/{NS}/pods")] = {"kind": "PodList", "apiVersion": "v1",
                                                              "metadata": {}, "items": []}
    act = build_actuator(settings, backends, lambda: (core, apps))  # no route for the scale: the API says 404

    async def scenario() -> None:
        act.activate(0)
        with pytest.raises(UpstreamFailure, match="scaling deployment polyserve-engine-t100 to 1 replicas failed"):
            await act.wait_ready(0)
        await act.aclose()

    asyncio.run(scenario())
    assert isinstance(act, KubeActuator) and act.patches == 0


def test_a_kubernetes_section_replaces_backends_with_one_slot_per_replica():
    cfg = config_from_dict({"model": "m", "kubernetes": SETTINGS}, "gw.yaml")
    assert len(cfg.backends) == 4 and cfg.kubernetes.pools[0].deployment == "polyserve-engine-t20"
    assert cfg.backends[0].deadlines and not cfg.backends[3].deadlines
    with pytest.raises(ConfigError, match=r"gw\.yaml: backends: not with kubernetes"):
        config_from_dict({"model": "m", "backends": ["http://a"], "kubernetes": SETTINGS}, "gw.yaml")
    with pytest.raises(ConfigError, match=r"gw\.yaml: kubernetes\.pools\[0\].max_replicas: must be an integer >= 1"):
        config_from_dict({"model": "m", "kubernetes": {"pools": [{"deployment": "d", "tier": "t20",
                                                                   "max_replicas": 0}]}}, "gw.yaml")
    with pytest.raises(ConfigError, match=r"gw\.yaml: kubernetes\.namespaces: unknown key"):
        config_from_dict({"model": "m", "kubernetes": {**SETTINGS, "namespaces": "x"}}, "gw.yaml")


def test_an_activation_never_scales_away_a_pod_that_appeared_unasked(api):
    """An operator scaled the Deployment by hand: the extra pod joins the idle pool, and the next activation
    counts it (4 replicas, not 3: a lower figure would make the ReplicaSet delete a running pod)."""
    pool, core, apps = api
    settings = settings_from_dict({**SETTINGS, "pools": [{**SETTINGS["pools"][0], "max_replicas": 4}]}, "gw.yaml")
    backends = [Backend(i, b["url"]) for i, b in enumerate(slot_backends(settings))]
    listing = copy.deepcopy(PODS)
    pool.routes[("GET", f"/api/v1/namespaces/{NS}/pods")] = lambda _: listing
    t20 = f"/apis/apps/v1/namespaces/{NS}/deployments/polyserve-engine-t20/scale"
    pool.routes[("PATCH", t20)] = lambda body: {**SCALE, "spec": body["spec"]}
    act = build_actuator(settings, backends, lambda: (core, apps))

    async def scenario() -> None:
        listing["items"].append(_pod("polyserve-engine-t20-7c9d6b5f4-hand1", "uid-hand1", "10.244.4.4"))
        await act.poll_once()
        assert act.is_ready(2) and backends[2].url == "http://10.244.4.4:8000"
        act.activate(3)
        await asyncio.sleep(0.05)
        assert [s["body"] for s in pool.sent if s["method"] == "PATCH"] == [{"spec": {"replicas": 4}}]
        await act.aclose()

    asyncio.run(scenario())
