"""worker.kube: reading API objects, error wording, and every Cluster call against the sandbox.

The pure part checks how objects are read (rollout readiness as `kubectl rollout status`
judges it, the default route as the seed reads it) and how API errors are worded. The
sandbox part drives a real `kubernetes` client over HTTP: server-side apply, watch-based
rollout waits, exec with exit codes, deletes, ingress discovery, and the retry policy
under injected 500s, 409s and 429s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from worker.colors import Color
from worker.kube import (
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
    default_route_subset,
    deployment_info,
    resource_path,
    translate,
)


def deployment(*, replicas: int = 1, ready: int = 1, updated: int = 1, available: int = 1,
               generation: int = 2, observed: int = 2, labels: dict[str, str] | None = None,
               ) -> dict[str, Any]:
    return {
        "metadata": {"name": "myapp-green", "generation": generation,
                     "labels": labels if labels is not None
                     else {"app": "myapp", "color": "green", "release": "r-1"}},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"image": "myapp:v2.0"}]}}},
        "status": {"readyReplicas": ready, "updatedReplicas": updated,
                   "availableReplicas": available, "observedGeneration": observed},
    }


def test_deployment_info_reads_labels_image_and_counts() -> None:
    info = deployment_info(deployment())
    assert (info.name, info.color, info.release_id, info.image) == (
        "myapp-green", Color.GREEN, "r-1", "myapp:v2.0")
    assert info.is_ready


@pytest.mark.parametrize("change", [
    {"ready": 0}, {"updated": 0}, {"available": 0}, {"observed": 1}, {"replicas": 2},
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
