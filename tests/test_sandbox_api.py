"""The sandbox's Kubernetes API server, driven by the official `kubernetes` client: CRUD.

Most tests run the API server in-process (`sandbox_client.served_api`); the last ones
go through `python -m sandbox serve` (the `sandbox` fixture) with kubelet and ingress.
Covered: CRUD and status codes for Deployments, Services and Istio objects,
conflicts, generation and the status subresource, 422 Invalid naming each field for
what validation refuses (names, labels, pod specs, Deployment selectors and
strategies, Services), dry runs, fault injection and the request log, and the serve
command's seed objects and shutdown. Writes of other shapes (decoding, patches,
server-side apply, cascades) are `test_sandbox_writes`; reads (selectors, paged lists,
watches, discovery) `test_sandbox_lists`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import Sandbox
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from sandbox_client import DEPLOYMENTS_URL, MERGE, Api, deployment, served_api, status_of


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with served_api(tmp_path) as served:
        yield served


# ---- CRUD, status codes, metadata ---------------------------------------------------------------

def test_deployment_lifecycle_through_the_typed_client(api: Api) -> None:
    created, code, _ = api.apps.create_namespaced_deployment_with_http_info("default",
                                                                            deployment())
    assert code == 201
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.namespace == "default"
    assert meta.generation == 1 and int(meta.resource_version) > 0

    got = api.apps.read_namespaced_deployment("web", "default")
    assert got.spec.template.spec.containers[0].image == "app:v1"
    assert got.spec.replicas == 1 and got.spec.strategy.type == "RollingUpdate"  # defaulted

    listed = requests.get(f"{api.url}/apis/apps/v1/namespaces/default/deployments").json()
    assert listed["kind"] == "DeploymentList" and listed["apiVersion"] == "apps/v1"
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta.resource_version)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]

    got.spec.replicas = 3
    replaced = api.apps.replace_namespaced_deployment("web", "default", got)
    assert replaced.spec.replicas == 3 and replaced.metadata.generation == 2

    api.apps.delete_namespaced_deployment("web", "default")
    with pytest.raises(ApiException) as e:
        api.apps.read_namespaced_deployment("web", "default")
    assert e.value.status == 404
    assert status_of(e.value)["message"] == 'deployments.apps "web" not found'
    assert status_of(e.value)["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_duplicate_create_is_409_already_exists(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    with pytest.raises(ApiException) as e:
        api.apps.create_namespaced_deployment("default", deployment())
    body = status_of(e.value)
    assert (e.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'deployments.apps "web" already exists'


def test_stale_resource_version_is_409_conflict(api: Api) -> None:
    first = api.apps.create_namespaced_deployment("default", deployment())
    api.apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    first.spec.replicas = 5
    with pytest.raises(ApiException) as e:
        api.apps.replace_namespaced_deployment("web", "default", first)
    body = status_of(e.value)
    assert (e.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert api.apps.read_namespaced_deployment("web", "default").spec.replicas == 2


def test_create_in_an_unknown_namespace_is_404(api: Api) -> None:
    with pytest.raises(ApiException) as e:
        api.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    assert e.value.status == 404
    assert status_of(e.value)["message"] == 'namespaces "nowhere" not found'


def test_generate_name_and_bad_requests(api: Api) -> None:
    made = api.core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
    assert made.metadata.name.startswith("cfg-") and len(made.metadata.name) == 9
    url = f"{api.url}/api/v1/namespaces/default/configmaps"
    bad = requests.post(url, data="{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"
    not_allowed = requests.put(url, json={"metadata": {"name": "x"}})
    assert not_allowed.status_code == 405 and not_allowed.json()["reason"] == "MethodNotAllowed"
    invalid = requests.post(url, json={"metadata": {"name": "Not_Valid"}})
    assert invalid.status_code == 422 and invalid.json()["reason"] == "Invalid"


def test_generation_bumps_when_the_spec_or_annotations_change(api: Api) -> None:
    made = api.apps.create_namespaced_deployment("default", deployment())
    labelled = api.apps.patch_namespaced_deployment("web", "default",
                                                    {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    with_status = api.apps.patch_namespaced_deployment_status(
        "web", "default", {"status": {"replicas": 1, "readyReplicas": 1}})
    assert with_status.metadata.generation == 1 and with_status.status.ready_replicas == 1
    scaled = api.apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2
    again = api.apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert again.metadata.resource_version == scaled.metadata.resource_version, "no-op write"
    assert int(scaled.metadata.resource_version) > int(made.metadata.resource_version)
    # A Deployment's annotations are copied to its ReplicaSets: they count as its spec.
    annotated = api.apps.patch_namespaced_deployment("web", "default",
                                                     {"metadata": {"annotations": {"a": "1"}}})
    assert annotated.metadata.generation == 3
    noted = api.apps.patch_namespaced_deployment_status(
        "web", "default", {"metadata": {"annotations": {"deployment.kubernetes.io/revision":
                                                        "1"}}})
    assert noted.metadata.annotations == {"a": "1", "deployment.kubernetes.io/revision": "1"}
    assert noted.metadata.generation == 3, "the controller's status write bumps nothing"


def test_null_means_unset_and_rolling_update_fences_are_validated(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
    body = deployment()
    body["spec"]["replicas"] = None
    body["metadata"]["labels"] = None
    body["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": 1}}
    made = requests.post(url, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["spec"]["replicas"] == 1 and "labels" not in made.json()["metadata"]
    assert made.json()["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}

    unavailable = "spec.strategy.rollingUpdate.maxUnavailable"
    fences = [({"maxUnavailable": "abc"}, unavailable,
               'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"abc"}: a valid '
               "percent string must be a numeric string followed by an ending '%' (e.g. '1%',  "
               "or '93%', regex used for validation is '[0-9]+%')"),
              ({"maxSurge": -1}, "spec.strategy.rollingUpdate.maxSurge",
               "Invalid value: -1: must be greater than or equal to 0"),
              ({"maxSurge": 0, "maxUnavailable": "0%"}, unavailable,
               'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"0%"}: '
               "may not be 0 when `maxSurge` is 0"),
              ({"maxUnavailable": "101%"}, unavailable,
               'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"101%"}: '
               "must not be greater than 100%")]
    for rolling, field, message in fences:
        body = deployment("fenced")
        body["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": rolling}
        answer = requests.post(url, json=body)
        assert answer.status_code == 422, answer.text
        status = answer.json()
        assert status["reason"] == "Invalid"
        assert status["details"]["causes"] == [
            {"reason": "FieldValueInvalid", "message": message, "field": field}]
        assert status["message"] == f'Deployment.apps "fenced" is invalid: {field}: {message}'
    assert api.store.get("apps/v1/deployments", "default", "fenced") is None


DNS_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
             "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
             "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def with_spec(**changes: Any) -> dict[str, Any]:
    body = deployment()
    body["spec"].update(changes)
    return body


def with_container(**changes: Any) -> dict[str, Any]:
    body = deployment()
    container = body["spec"]["template"]["spec"]["containers"][0]
    container.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del container[key]
    return body


INVALID_WRITES = [  # (method, path, body, content type, kind, field, message)
    ("POST", DEPLOYMENTS_URL, with_spec(replicas=-1), None, "Deployment", "spec.replicas",
     "Invalid value: -1: must be greater than or equal to 0"),
    ("POST", DEPLOYMENTS_URL, with_container(name="Web_1"), None, "Deployment",
     "spec.template.spec.containers[0].name", f'Invalid value: "Web_1": {DNS_LABEL}'),
    ("POST", DEPLOYMENTS_URL, with_container(image=None), None, "Deployment",
     "spec.template.spec.containers[0].image", "Required value"),
    ("POST", DEPLOYMENTS_URL, with_spec(strategy={"type": "Recreate",
                                                  "rollingUpdate": {"maxSurge": 1}}),
     None, "Deployment", "spec.strategy.rollingUpdate",
     "Forbidden: may not be specified when strategy `type` is 'Recreate'"),
    ("POST", DEPLOYMENTS_URL, with_spec(selector={"matchLabels": {"app": "other"}}), None,
     "Deployment", "spec.template.metadata.labels", 'Invalid value: map[string]string{"app":'
     '"web"}: `selector` does not match template `labels`'),
    ("PATCH", f"{DEPLOYMENTS_URL}/web", {"spec": {
        "selector": {"matchLabels": {"app": "web", "tier": "x"}},
        "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}}}}, MERGE,
     "Deployment", "spec.selector", 'Invalid value: &v1.LabelSelector{MatchLabels:map[string]'
     'string{"app":"web", "tier":"x"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
     "field is immutable"),
    ("PATCH", f"{DEPLOYMENTS_URL}/web", {"metadata": {"labels": {"bad key": "x"}}}, MERGE,
     "Deployment", "metadata.labels", 'Invalid value: "bad key": name part must consist of '
     "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
     "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
     "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    ("PATCH", f"{DEPLOYMENTS_URL}/web", {"metadata": {"labels": {"tier": "-x"}}},
     "application/strategic-merge-patch+json", "Deployment", "metadata.labels",
     'Invalid value: "-x": a valid label must be an empty string or consist of alphanumeric '
     "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
     "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
     "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
    ("POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}, "spec": {}}, None,
     "Pod", "spec.containers", "Required value"),
    ("POST", "/api/v1/namespaces/default/services", {
        "metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}}, None, "Service",
     "metadata.name", 'Invalid value: "1svc": a DNS-1035 label must consist of lower case '
     "alphanumeric characters or '-', start with an alphabetic character, and end with an "
     "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
     "'[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("POST", "/api/v1/namespaces/default/services", {"metadata": {"name": "svc"}, "spec": {}},
     None, "Service", "spec.ports", "Required value"),
    ("POST", "/api/v1/namespaces", {"metadata": {"name": "my.ns"}}, None, "Namespace",
     "metadata.name", f'Invalid value: "my.ns": {DNS_LABEL}'),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type", "kind", "field", "message"),
                         INVALID_WRITES, ids=[f"{w[4]}-{w[5]}" for w in INVALID_WRITES])
def test_invalid_writes_are_422_naming_the_field(api: Api, method: str, path: str,
                                                 body: dict[str, Any], content_type: str | None,
                                                 kind: str, field: str, message: str) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    before = api.store.resource_version
    answer = requests.request(method, api.url + path, json=body,
                              headers={"Content-Type": content_type or "application/json"})
    assert answer.status_code == 422, answer.text
    status = answer.json()
    name = body.get("metadata", {}).get("name") or "web"
    group = ".apps" if kind == "Deployment" else ""
    assert status["message"] == f'{kind}{group} "{name}" is invalid: {field}: {message}'
    assert status["reason"] == "Invalid" and status["details"]["kind"] == kind
    assert [(c["field"], c["message"]) for c in status["details"]["causes"]] == [(field, message)]
    assert api.store.resource_version == before, "nothing was written"


def test_valid_edge_cases_are_accepted(api: Api) -> None:
    headless = api.core.create_namespaced_service("default", {
        "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}})
    assert headless.spec.cluster_ip == "None"
    external = api.core.create_namespaced_service("default", {
        "metadata": {"name": "ext"}, "spec": {"type": "ExternalName",
                                              "externalName": "db.example.com"}})
    assert external.spec.external_name == "db.example.com"
    made = api.apps.create_namespaced_deployment("default", deployment())
    same = api.apps.patch_namespaced_deployment("web", "default", {
        "spec": {"selector": {"matchLabels": {"app": "web"}}}})
    assert same.metadata.resource_version == made.metadata.resource_version


def test_null_labels_are_absent_labels_through_every_verb(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/default/configmaps"
    made = requests.post(url, json={"metadata": {"name": "cfg", "labels": None}})
    assert made.status_code == 201 and "labels" not in made.json()["metadata"]
    body = {**made.json(), "metadata": {**made.json()["metadata"], "labels": None}}
    replaced = requests.put(f"{url}/cfg", json=body)
    assert replaced.status_code == 200 and "labels" not in replaced.json()["metadata"]
    patched = requests.patch(f"{url}/cfg", json=[
        {"op": "add", "path": "/metadata/labels", "value": None}],
        headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and "labels" not in patched.json()["metadata"]


def test_status_subresource_writes_only_status_and_main_writes_keep_it(api: Api) -> None:
    made = api.apps.create_namespaced_deployment("default", deployment())
    made.spec.replicas = 9
    made.status = client.V1DeploymentStatus(replicas=1, observed_generation=1)
    after = api.apps.replace_namespaced_deployment_status("web", "default", made)
    assert after.spec.replicas == 1 and after.status.observed_generation == 1
    after.status.observed_generation = 42
    kept = api.apps.replace_namespaced_deployment("web", "default", after)
    assert kept.status.observed_generation == 1 and kept.spec.replicas == 1

def test_dry_run_changes_nothing(api: Api) -> None:
    dry = api.apps.create_namespaced_deployment("default", deployment(), dry_run="All")
    assert dry.metadata.name == "web"
    assert api.apps.list_namespaced_deployment("default").items == []


def test_dry_run_takes_only_all_on_every_verb(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/default/configmaps"
    refused = requests.post(url, params={"dryRun": "Bogus"}, json={"metadata": {"name": "c"}})
    problem = 'Unsupported value: []string{"Bogus"}: supported values: "All"'
    assert (refused.status_code, refused.json()["message"]) == (
        422, f'CreateOptions.meta.k8s.io "" is invalid: dryRun: {problem}')
    assert refused.json()["details"] == {"group": "meta.k8s.io", "kind": "CreateOptions",
                                         "causes": [{"reason": "FieldValueNotSupported",
                                                     "message": problem, "field": "dryRun"}]}
    both = requests.post(url, params={"dryRun": ["All", "x"], "fieldValidation": "Loose"},
                         json={"metadata": {"name": "c"}})
    assert both.json()["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: [dryRun: Unsupported value: '
        '[]string{"All", "x"}: supported values: "All", fieldValidation: Unsupported value: '
        '"Loose": supported values: "", "Ignore", "Strict", "Warn"]')
    assert api.core.list_namespaced_config_map("default").items == []

    api.core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    bogus = {"dryRun": "Bogus"}
    attempts = [  # (options kind, the request)
        ("UpdateOptions", lambda: requests.put(f"{url}/c", params=bogus, json={
            "metadata": {"name": "c"}, "data": {"k": "v"}})),
        ("PatchOptions", lambda: requests.patch(f"{url}/c", params=bogus, json={
            "data": {"k": "v"}}, headers={"Content-Type": MERGE})),
        ("DeleteOptions", lambda: requests.delete(f"{url}/c", params=bogus)),
        ("DeleteOptions", lambda: requests.delete(f"{url}/c", json={"dryRun": ["Bogus"]})),
        ("DeleteOptions", lambda: requests.delete(url, params=bogus))]
    for kind, attempt in attempts:
        answer = attempt()
        assert (answer.status_code, answer.json()["details"]["kind"]) == (422, kind)
    assert api.core.read_namespaced_config_map("c", "default").data is None, "nothing changed"
    assert requests.delete(f"{url}/c", params={"dryRun": "All"}).status_code == 200
    assert requests.get(f"{url}/c").status_code == 200

# ---- fault injection and the request log --------------------------------------------------------

def test_injected_fault_is_seen_by_the_client_then_requests_succeed(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    since = requests.get(f"{api.url}/sandbox/requests").json()[-1]["seq"]
    fault = {"path": "/deployments/web$", "method": "PATCH", "status": 500, "count": 1}
    assert requests.post(f"{api.url}/sandbox/faults", json=fault).status_code == 201
    with pytest.raises(ApiException) as e:
        api.apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert e.value.status == 500 and status_of(e.value)["reason"] == "InternalError"
    assert api.apps.read_namespaced_deployment("web", "default").spec.replicas == 1
    api.apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})

    log = requests.get(f"{api.url}/sandbox/requests", params={"since": since}).json()
    assert [(r["method"], r["status"]) for r in log] == [("PATCH", 500), ("GET", 200),
                                                         ("PATCH", 200)]
    assert log[0]["path"] == "/apis/apps/v1/namespaces/default/deployments/web"
    assert log[0]["user_agent"].startswith("OpenAPI-Generator/")


def test_throttling_latency_refusal_and_clearing_faults(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/default/configmaps"
    requests.post(f"{api.url}/sandbox/faults", json={"path": "configmaps", "status": 429,
                                                     "count": 1})
    throttled = requests.get(url)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert throttled.json()["reason"] == "TooManyRequests"
    requests.post(f"{api.url}/sandbox/faults", json={"path": "configmaps", "latency": 0.5,
                                                     "count": 1})
    started = time.monotonic()
    assert requests.get(url).status_code == 200
    assert time.monotonic() - started >= 0.5
    requests.post(f"{api.url}/sandbox/faults", json={"path": "configmaps", "refuse": True})
    with pytest.raises(requests.ConnectionError):
        requests.get(url)
    requests.delete(f"{api.url}/sandbox/faults")
    assert requests.get(url).status_code == 200


# ---- through `python -m sandbox serve` ----------------------------------------------------------

def test_serve_writes_a_kubeconfig_and_seeds_the_cluster(sandbox: Sandbox) -> None:
    config.load_kube_config(config_file=sandbox.kubeconfig)
    core = client.CoreV1Api()
    assert {"default", "kube-system", "istio-system"} <= {
        n.metadata.name for n in core.list_namespace().items}
    gateway = core.read_namespaced_service("istio-ingressgateway", "istio-system")
    http2 = next(p for p in gateway.spec.ports if p.name == "http2")
    assert sandbox.ingress == f"http://127.0.0.1:{http2.port}"
    assert gateway.spec.type == "LoadBalancer"
    assert gateway.status.load_balancer.ingress[0].ip == "127.0.0.1"
    assert yaml.safe_load(Path(sandbox.kubeconfig).read_text())["current-context"] == "sandbox"


def test_serve_watch_sees_the_kubelet_make_a_deployment_ready(sandbox: Sandbox) -> None:
    apps = client.AppsV1Api(config.new_client_from_config(config_file=sandbox.kubeconfig))
    made = apps.create_namespaced_deployment("default", deployment(image="myapp:v1.0"))
    ready = None
    for event in watch.Watch().stream(apps.list_namespaced_deployment, "default",
                                      resource_version=made.metadata.resource_version,
                                      timeout_seconds=20):
        status = event["object"].status
        if status and status.ready_replicas == 1 and status.observed_generation == 1:
            ready = event
            break
    assert ready is not None and ready["type"] == "MODIFIED"


def test_serve_stops_every_pod_process_and_exits_zero(sandbox: Sandbox) -> None:
    api_client = config.new_client_from_config(config_file=sandbox.kubeconfig)
    client.AppsV1Api(api_client).create_namespaced_deployment("default",
                                                              deployment(image="myapp:v1.0"))
    core = client.CoreV1Api(api_client)
    pid = None
    deadline = time.monotonic() + 20
    while pid is None and time.monotonic() < deadline:
        for pod in core.list_namespaced_pod("default", label_selector="app=web").items:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].container_id and statuses[0].ready:
                pid = int(statuses[0].container_id.rsplit("/", 1)[-1])
        time.sleep(0.2)
    assert pid is not None, "the kubelet never ran the pod"
    os.kill(pid, 0)  # the pod's process is alive
    sandbox.proc.send_signal(signal.SIGTERM)
    assert sandbox.proc.wait(15) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
