"""The sandbox Istio ingress in-process: real pod processes behind a Store.

Covers the seed's cookie test route end to end (blue and green Deployments),
round-robin, pass-through of method/path/headers/body on keep-alive connections,
retries past a dead endpoint, and Envoy's answers: 404 without a route, 503 for
an undefined subset, no ready pod, or a pod that refuses connections; then the
cookie route, 503 and 404 through `python -m sandbox serve` with objects applied
by the official client, as a release would.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from sandbox_objects import (
    ISTIO,
    deployment,
    destination_rule,
    gateway,
    pid_of,
    pods,
    rolled_out,
    route_test_vs,
    service,
    wait_for,
)

from sandbox.ingress import Ingress
from sandbox.kubelet import Kubelet
from sandbox.store import Store


class Mesh:
    def __init__(self, store: Store, url: str) -> None:
        self.store, self.url = store, url

    def get(self, path: str = "/", **headers: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def color(self, **headers: str) -> str:
        status, _, body = self.get(**headers)
        assert status == 200, body
        color: str = json.loads(body)["color"]
        return color


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    store = Store()
    store.create("v1/namespaces", None, {"metadata": {"name": "default"}})
    kubelet = Kubelet(store, tmp_path)
    kubelet.start()
    ingress = Ingress(store, 0)
    port = ingress.start()
    yield Mesh(store, f"http://127.0.0.1:{port}")
    ingress.stop()
    kubelet.stop()
    store.close()


def deploy_both(mesh: Mesh, blue_replicas: int = 1) -> None:
    store = mesh.store
    store.create("apps/v1/deployments", "default", deployment(
        "myapp-blue", "blue", "registry/acme/myapp:v1.0", replicas=blue_replicas))
    store.create("apps/v1/deployments", "default", deployment(
        "myapp-green", "green", "registry/acme/myapp:v2.0"))
    store.create("v1/services", "default", service())
    store.create(f"{ISTIO}/gateways", "default", gateway())
    store.create(f"{ISTIO}/destinationrules", "default", destination_rule())
    wait_for(lambda: rolled_out(store, "myapp-blue", blue_replicas)
             and rolled_out(store, "myapp-green"), what="both colours")


def test_cookie_routes_testers_to_the_test_colour(mesh: Mesh) -> None:
    deploy_both(mesh)
    mesh.store.create(f"{ISTIO}/virtualservices", "default", route_test_vs())
    assert mesh.color() == "blue"
    assert mesh.color(Cookie="test=true") == "green"
    assert mesh.color(Cookie="a=b;test=true") == "green"
    assert mesh.color(Cookie="test=false") == "blue"
    status, headers, body = mesh.get(Cookie="test=true")
    assert status == 200
    assert json.loads(body)["version"] == "v2.0"
    assert headers["x-sandbox-pod"].startswith("myapp-green-")
    assert headers["X-Sandbox-Color"] == "green"


def test_missing_subset_is_503_and_no_route_is_404(mesh: Mesh) -> None:
    deploy_both(mesh)
    assert mesh.get()[0] == 404  # no VirtualService yet
    mesh.store.create(f"{ISTIO}/virtualservices", "default", route_test_vs())
    dr = mesh.store.get(f"{ISTIO}/destinationrules", "default", "myapp-blue-green")
    assert dr is not None
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] == "blue"]
    mesh.store.update(f"{ISTIO}/destinationrules", "default", dr)
    status, _, body = mesh.get(Cookie="test=true")
    assert (status, body) == (503, b"no healthy upstream")
    assert mesh.color() == "blue"
    vs = mesh.store.get(f"{ISTIO}/virtualservices", "default", "myapp-blue-green")
    assert vs is not None
    vs["spec"]["http"] = vs["spec"]["http"][:1]  # only the cookie route
    mesh.store.update(f"{ISTIO}/virtualservices", "default", vs)
    assert mesh.get()[0] == 404


def test_requests_pass_through_on_a_keep_alive_connection(mesh: Mesh) -> None:
    deploy_both(mesh, blue_replicas=2)
    mesh.store.create(f"{ISTIO}/virtualservices", "default", route_test_vs())
    conn = http.client.HTTPConnection(mesh.url.removeprefix("http://"), timeout=10)
    seen = set()
    for i in range(4):
        conn.request("PUT", f"/echo/item?i={i}", body=b'{"n": %d}' % i,
                     headers={"X-Team": "qa", "Content-Type": "application/json"})
        resp = conn.getresponse()
        echoed = json.loads(resp.read())
        assert resp.status == 200
        assert (echoed["method"], echoed["path"], echoed["body"]) == (
            "PUT", f"/echo/item?i={i}", f'{{"n": {i}}}')
        assert echoed["headers"]["X-Team"] == "qa"
        assert echoed["headers"]["X-Forwarded-Proto"] == "http"
        seen.add(resp.getheader("x-sandbox-pod"))
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert (head.status, head.read()) == (200, b"")
    assert int(head.getheader("Content-Length")) > 0  # the GET's length, no body sent
    conn.request("GET", "/")  # the connection is still in step after the HEAD
    assert json.loads(conn.getresponse().read())["color"] == "blue"
    conn.close()
    assert len(seen) == 2  # round-robin over both blue pods


def test_a_dead_endpoint_is_retried_on_the_next_one(mesh: Mesh) -> None:
    deploy_both(mesh, blue_replicas=2)
    mesh.store.create(f"{ISTIO}/virtualservices", "default", route_test_vs())
    victim = next(p for p in pods(mesh.store) if p["metadata"]["labels"]["color"] == "blue")
    os.kill(pid_of(victim), signal.SIGKILL)
    assert [mesh.get()[0] for _ in range(4)] == [200] * 4


def test_unready_pods_get_no_traffic(mesh: Mesh) -> None:
    deploy_both(mesh)
    mesh.store.create("apps/v1/deployments", "default", deployment(
        "myapp-red", "red", "registry/acme/myapp:v9-never-ready"))
    dr = destination_rule(("blue", "green", "red"))
    mesh.store.delete(f"{ISTIO}/destinationrules", "default", "myapp-blue-green")
    mesh.store.create(f"{ISTIO}/destinationrules", "default", dr)
    mesh.store.create(f"{ISTIO}/virtualservices", "default", route_test_vs(test="red"))
    wait_for(lambda: any(p["metadata"]["labels"]["color"] == "red"
                         and p["status"].get("phase") == "Running" for p in pods(mesh.store)),
             what="red pod running")
    status, _, body = mesh.get(Cookie="test=true")
    assert (status, body) == (503, b"no healthy upstream")


def test_a_pod_refusing_connections_is_503(tmp_path: Path) -> None:
    store = Store()
    store.create("v1/namespaces", None, {"metadata": {"name": "default"}})
    for key, obj in ((f"{ISTIO}/gateways", gateway()), ("v1/services", service()),
                     (f"{ISTIO}/destinationrules", destination_rule()),
                     (f"{ISTIO}/virtualservices", route_test_vs())):
        store.create(key, "default", obj)
    store.create("v1/pods", "default", {  # Ready, but nothing listens on its port
        "metadata": {"name": "ghost", "labels": {"app": "myapp", "color": "blue"},
                     "annotations": {"sandbox.bluegreen.dev/port": "9"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}})
    store.mutate("v1/pods", "default", "ghost", lambda p: {
        **p, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")
    ingress = Ingress(store, 0)
    mesh = Mesh(store, f"http://127.0.0.1:{ingress.start()}")
    try:
        status, headers, body = mesh.get()
    finally:
        ingress.stop()
    assert status == 503
    assert body.startswith(b"upstream connect error")
    assert "ghost" in headers["x-sandbox-reason"]


def test_through_the_api_the_ingress_routes_like_istio(sandbox: Any) -> None:
    api_client = config.new_client_from_config(sandbox.kubeconfig)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    istio = client.CustomObjectsApi(api_client)
    apps.create_namespaced_deployment("default", deployment(
        "myapp-blue", "blue", "registry/acme/myapp:v1.0", strategy="Recreate"))
    apps.create_namespaced_deployment("default", deployment(
        "myapp-green", "green", "registry/acme/myapp:v2.0", strategy="Recreate"))
    core.create_namespaced_service("default", service())
    for plural, obj in (("gateways", gateway()), ("destinationrules", destination_rule(("blue",))),
                        ("virtualservices", route_test_vs())):
        kind = {"gateways": "Gateway", "destinationrules": "DestinationRule",
                "virtualservices": "VirtualService"}[plural]
        istio.create_namespaced_custom_object("networking.istio.io", "v1", "default", plural,
                                              {"apiVersion": "networking.istio.io/v1",
                                               "kind": kind, **obj})
    mesh = Mesh(Store(), sandbox.ingress)
    wait_for(lambda: mesh.get()[0] == 200 and mesh.get(Cookie="test=true")[0] == 503,
             what="blue ready behind the ingress")
    assert mesh.color() == "blue"
    assert mesh.get(Cookie="test=true")[2] == b"no healthy upstream"  # green: no subset yet
    istio.patch_namespaced_custom_object(
        "networking.istio.io", "v1", "default", "destinationrules", "myapp-blue-green",
        {"spec": destination_rule()["spec"]})
    wait_for(lambda: mesh.get(Cookie="test=true")[0] == 200, what="green behind the ingress")
    assert mesh.color(Cookie="test=true") == "green"
    assert mesh.color(Cookie="a=1;test=true;b=2") == "green"
    assert mesh.color(Cookie="a=1") == "blue"
    istio.delete_namespaced_custom_object("networking.istio.io", "v1", "default",
                                          "virtualservices", "myapp-blue-green")
    assert mesh.get()[0] == 404
    api_client.close()
