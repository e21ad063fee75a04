"""worker.kube: reading API objects, error wording, and every Cluster call against the sandbox.

The pure part checks how objects are read (rollout readiness as `kubectl rollout status`
judges it, the default route as the seed reads it) and how API errors are worded. The
sandbox part drives a real `kubernetes` client over HTTP: server-side apply, watch-based
rollout waits, exec with exit codes, deletes, ingress discovery, and the retry policy
under injected 500s, 409s and 429s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Sandbox, start_sandbox, stop_sandbox
from kubernetes.client.exceptions import ApiException

from worker.colors import Color
from worker.kube import (
    Cluster,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeTimeout,
    KubeUnavailable,
    default_route_subset,
    default_traffic_subsets,
    deployment_info,
    resource_path,
    translate,
)


def deployment(*, replicas: int = 1, ready: int = 1, updated: int = 1, available: int = 1,
               total: int = 1, generation: int = 2, observed: int = 2,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "myapp-green", "generation": generation,
                     "labels": labels if labels is not None
                     else {"app": "myapp", "color": "green", "release": "r-1"}},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"image": "myapp:v2.0"}]}}},
        "status": {"replicas": total, "readyReplicas": ready, "updatedReplicas": updated,
                   "availableReplicas": available, "observedGeneration": observed},
    }


def test_deployment_info_reads_labels_image_and_counts() -> None:
    info = deployment_info(deployment())
    assert (info.name, info.color, info.release_id, info.image) == (
        "myapp-green", Color.GREEN, "r-1", "myapp:v2.0")
    assert info.is_ready


@pytest.mark.parametrize("change", [
    {"ready": 0}, {"updated": 0}, {"available": 0}, {"observed": 1}, {"replicas": 2},
    {"total": 2},  # an old pod still terminating: kubectl says "1 old replicas are pending"
])
def test_rollout_is_not_complete_until_every_count_matches(change: dict[str, int]) -> None:
    assert not deployment_info(deployment(**change)).is_ready


def test_deployment_without_status_or_colour_label() -> None:
    obj = deployment(labels={"app": "myapp"})
    del obj["status"]
    info = deployment_info(obj)
    assert (info.color, info.release_id, info.ready_replicas, info.is_ready) == (
        None, None, 0, False)


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"http": list(routes)}}


TEST_ROUTE = {"name": "myapp-test",
              "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(test=true)(;.*)?$"}}}],
              "route": [{"destination": {"host": "myapp", "subset": "green"}}]}
DEFAULT_ROUTE = {"name": "myapp-default",
                 "route": [{"destination": {"host": "myapp", "subset": "blue"}}]}


def test_default_route_is_the_last_http_route() -> None:
    assert default_route_subset(vs(TEST_ROUTE, DEFAULT_ROUTE)) == "blue"
    assert default_route_subset(vs(DEFAULT_ROUTE)) == "blue"


def test_a_test_only_virtual_service_has_no_default_route() -> None:
    assert default_route_subset(vs(TEST_ROUTE)) is None
    assert default_route_subset(vs()) is None
    assert default_route_subset({}) is None


def split(*weights: tuple[str, int | None]) -> dict[str, Any]:
    """A default route to several subsets, each with its weight (None: none given)."""
    return {"name": "myapp-default", "route": [
        {"destination": {"host": "myapp", "subset": subset},
         **({} if weight is None else {"weight": weight})} for subset, weight in weights]}


@pytest.mark.parametrize(("route", "taking"), [
    (DEFAULT_ROUTE, {"blue"}),
    (split(("blue", 0)), {"blue"}),  # a lone destination takes everything, whatever its weight
    (split(("blue", 90), ("green", 10)), {"blue", "green"}),
    (split(("blue", 100), ("green", 0)), {"blue"}),
    (split(("blue", 0), ("green", 100)), {"green"}),
    (split(("blue", None), ("green", None)), {"blue", "green"}),
    (TEST_ROUTE, set()),
])
def test_every_subset_with_a_share_of_default_traffic_is_taking_it(
        route: dict[str, Any], taking: set[str]) -> None:
    assert default_traffic_subsets(vs(route)) == taking
    assert default_traffic_subsets({}) == frozenset()
    # the live colour (the first destination taking traffic) is one of them
    live = default_route_subset(vs(route))
    assert live in taking if taking else live is None


def test_resource_paths() -> None:
    assert resource_path("apps/v1", "Deployment", "default", "myapp-blue") == (
        "/apis/apps/v1/namespaces/default/deployments/myapp-blue")
    assert resource_path("v1", "Service", "default") == "/api/v1/namespaces/default/services"
    assert resource_path("networking.istio.io/v1", "VirtualService", "ns", "x") == (
        "/apis/networking.istio.io/v1/namespaces/ns/virtualservices/x")
    assert resource_path("networking.istio.io/v1", "Gateway", "ns") == (
        "/apis/networking.istio.io/v1/namespaces/ns/gateways")
    assert resource_path("networking.k8s.io/v1", "Ingress", "ns").endswith("/ingresses")
    assert resource_path("networking.k8s.io/v1", "NetworkPolicy", "ns").endswith(
        "/networkpolicies")


def api_error(status: int, message: str = "boom") -> ApiException:
    e = ApiException(status=status, reason="Reason")
    e.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    return e


@pytest.mark.parametrize(("status", "kind", "words"), [
    (404, KubeNotFound, "not found (404)"),
    (409, KubeConflict, "conflict (409)"),
    (422, KubeError, "refused the change (422)"),
    (403, KubeError, "denied access (403)"),
    (500, KubeUnavailable, "unavailable (500)"),
    (429, KubeUnavailable, "unavailable (429)"),
    (0, KubeUnavailable, "unavailable (no answer)"),
    (418, KubeError, "answered 418"),
])
def test_api_errors_become_our_errors_with_the_status_message(
        status: int, kind: type[KubeError], words: str) -> None:
    error = translate("Deployment default/myapp-green", api_error(status, "spec.template: bad"),
                      attempts=3)
    assert type(error) is kind
    assert str(error).startswith("Deployment default/myapp-green: ")
    assert words in str(error)
    assert "spec.template: bad" in str(error)


# -- against the sandbox ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for this module: each test uses objects of its own names."""
    sb = start_sandbox(tmp_path_factory.mktemp("kube"))
    yield sb
    stop_sandbox(sb)


@pytest.fixture
def cluster(sandbox_cluster: Sandbox) -> Iterator[Cluster]:
    c = Cluster(kubeconfig=sandbox_cluster.kubeconfig, user_agent="bluegreen/test-kube",
                backoff=0.05)
    yield c
    requests.delete(f"{sandbox_cluster.api}/sandbox/faults", timeout=5)
    c.close()


def fault(sb: Sandbox, **rule: Any) -> None:
    requests.post(f"{sb.api}/sandbox/faults", json=rule, timeout=5).raise_for_status()


def logged(sb: Sandbox, since: int = 0) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = requests.get(f"{sb.api}/sandbox/requests",
                                                params={"since": since}, timeout=5).json()
    return answer


def manifest(name: str, image: str, *, release: str = "r-1") -> dict[str, Any]:
    labels = {"app": name, "color": "green", "release": release}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name, "color": "green"}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "app", "image": image,
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 3000}}}]}}},
    }


def routes(default: str | None, test: str | None = None) -> list[dict[str, Any]]:
    http = []
    if test:
        http.append({**TEST_ROUTE, "route": [{"destination": {"host": "web", "subset": test}}]})
    if default:
        http.append({"name": "default",
                     "route": [{"destination": {"host": "web", "subset": default}}]})
    meta = {"name": "web-blue-green", "namespace": "default"}
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
         "spec": {"host": "web", "subsets": [{"name": c, "labels": {"color": c}}
                                             for c in ("blue", "green")]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta,
         "spec": {"hosts": ["*"], "gateways": ["web-gateway"], "http": http}},
    ]


def test_apply_creates_then_changes_nothing_when_applied_again(cluster: Cluster) -> None:
    first = cluster.apply(manifest=manifest("apply-twice", "sandbox.local/a:never-ready"))
    again = cluster.apply(manifest=manifest("apply-twice", "sandbox.local/a:never-ready"))
    assert again["metadata"]["generation"] == first["metadata"]["generation"]
    info = cluster.get_deployment(namespace="default", name="apply-twice")
    assert info is not None and info.release_id == "r-1" and info.color is Color.GREEN
    assert cluster.get_deployment(namespace="default", name="no-such-thing") is None
    assert [d.name for d in cluster.list_deployments(namespace="default",
                                                      selector="app=apply-twice")] == [
        "apply-twice"]


def test_wait_ready_follows_a_rollout_by_watch(cluster: Cluster) -> None:
    cluster.apply(manifest=manifest("rollout", "sandbox.local/r:v1"))
    info = cluster.wait_ready(namespace="default", name="rollout", timeout=30)
    assert info.is_ready and info.image == "sandbox.local/r:v1"
    cluster.apply(manifest=manifest("rollout", "sandbox.local/r:v2-slow-ready", release="r-2"))
    info = cluster.wait_ready(namespace="default", name="rollout", timeout=30)
    assert info.is_ready and (info.image, info.release_id) == ("sandbox.local/r:v2-slow-ready",
                                                               "r-2")


def test_wait_ready_times_out_with_the_rollout_status(cluster: Cluster) -> None:
    cluster.apply(manifest=manifest("stuck", "sandbox.local/s:never-ready"))
    with pytest.raises(KubeTimeout) as caught:
        cluster.wait_ready(namespace="default", name="stuck", timeout=2)
    assert "Deployment default/stuck: not ready after 2s (0/1 ready" in str(caught.value)


def test_wait_ready_survives_failing_list_and_watch_requests(
        cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    cluster.apply(manifest=manifest("flaky-watch", "sandbox.local/f:v1-slow-ready"))
    fault(sandbox_cluster, path="/deployments$", method="GET", status=500, count=4)
    assert cluster.wait_ready(namespace="default", name="flaky-watch", timeout=30).is_ready


def test_exec_returns_exit_code_and_output(cluster: Cluster) -> None:
    cluster.apply(manifest=manifest("exec", "sandbox.local/e:v1"))
    cluster.wait_ready(namespace="default", name="exec", timeout=30)
    result = cluster.exec_in_pod(namespace="default", selector="app=exec,release=r-1",
                                 command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                                 timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.pod.startswith("exec-")
    ok = cluster.exec_in_pod(namespace="default", selector="app=exec", command=["true"],
                             timeout=10)
    assert ok.exit_code == 0


def test_exec_needs_a_ready_pod(cluster: Cluster) -> None:
    cluster.apply(manifest=manifest("exec-unready", "sandbox.local/e:never-ready"))
    with pytest.raises(KubeNotFound, match="no ready pod in default matches 'app=exec-unready'"):
        cluster.exec_in_pod(namespace="default", selector="app=exec-unready", command=["true"],
                            timeout=5)


def test_live_colour_is_the_default_route(cluster: Cluster) -> None:
    assert cluster.live_color(namespace="default", name="web-blue-green") is None
    for obj in routes(default=None, test="green"):
        cluster.apply(manifest=obj)
    assert cluster.live_color(namespace="default", name="web-blue-green") is None
    for obj in routes(default="blue", test="green"):
        cluster.apply(manifest=obj)
    assert cluster.live_color(namespace="default", name="web-blue-green") is Color.BLUE
    vs = cluster.get_virtual_service(namespace="default", name="web-blue-green")
    assert vs is not None and len(vs["spec"]["http"]) == 2
    for obj in routes(default="green"):
        cluster.apply(manifest=obj)
    assert cluster.live_color(namespace="default", name="web-blue-green") is Color.GREEN
    rule = cluster.get_destination_rule(namespace="default", name="web-blue-green")
    assert rule is not None and len(rule["spec"]["subsets"]) == 2


def test_delete_says_whether_something_was_there(cluster: Cluster) -> None:
    cluster.apply(manifest=manifest("to-delete", "sandbox.local/d:never-ready"))
    assert cluster.delete_deployment(namespace="default", name="to-delete") is True
    assert cluster.delete_deployment(namespace="default", name="to-delete") is False
    assert cluster.get_deployment(namespace="default", name="to-delete") is None


def test_ingress_is_discovered_as_the_seed_does(cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    assert cluster.ingress_url() == sandbox_cluster.ingress


def test_requests_carry_our_user_agent(cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    since = logged(sandbox_cluster)[-1]["seq"]
    cluster.get_deployment(namespace="default", name="whose-request")
    mine = [r for r in logged(sandbox_cluster, since) if r["path"].endswith("/whose-request")]
    assert [r["user_agent"] for r in mine] == ["bluegreen/test-kube"]


def test_server_errors_are_retried(cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    since = logged(sandbox_cluster)[-1]["seq"]
    fault(sandbox_cluster, path="/deployments/retried$", status=500, count=3)
    cluster.apply(manifest=manifest("retried", "sandbox.local/x:never-ready"))
    statuses = [r["status"] for r in logged(sandbox_cluster, since)
                if r["path"].endswith("/retried")]
    assert statuses == [500, 500, 500, 201] or statuses == [500, 500, 500, 200]


def test_conflicts_on_apply_are_retried(cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    fault(sandbox_cluster, path="/deployments/conflicted$", method="PATCH", status=409, count=2)
    applied = cluster.apply(manifest=manifest("conflicted", "sandbox.local/x:never-ready"))
    assert applied["metadata"]["name"] == "conflicted"


def test_too_many_requests_waits_as_told(cluster: Cluster, sandbox_cluster: Sandbox) -> None:
    fault(sandbox_cluster, path="/deployments/throttled$", status=429, count=1)
    started = time.monotonic()
    assert cluster.get_deployment(namespace="default", name="throttled") is None
    assert time.monotonic() - started >= 0.9  # Retry-After: 1


def test_gives_up_with_a_clear_error(sandbox_cluster: Sandbox) -> None:
    fault(sandbox_cluster, path="/deployments/down$", status=503)
    quick = Cluster(kubeconfig=sandbox_cluster.kubeconfig, attempts=3, backoff=0.01)
    try:
        with pytest.raises(KubeUnavailable, match=r"Deployment default/down: the API server is "
                           r"unavailable \(503\) after 3 attempts"):
            quick.get_deployment(namespace="default", name="down")
    finally:
        requests.delete(f"{sandbox_cluster.api}/sandbox/faults", timeout=5)
        quick.close()


def test_invalid_objects_are_refused_with_the_servers_reason(cluster: Cluster) -> None:
    bad = manifest("bad-selector", "sandbox.local/x:v1")
    bad["spec"]["selector"] = {"matchLabels": {"app": "something-else"}}
    with pytest.raises(KubeError, match=r"Deployment default/bad-selector: the API server "
                       r"refused the change \(422\): .*selector"):
        cluster.apply(manifest=bad)


def test_unreachable_api_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "s", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}]}))
    dead = Cluster(kubeconfig=str(kubeconfig), attempts=2, backoff=0.01)
    with pytest.raises(KubeUnavailable, match=re.escape(
            "cannot reach the API server at http://127.0.0.1:9 after 2 attempts")):
        dead.live_color(namespace="default", name="myapp-blue-green")
