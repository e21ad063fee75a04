"""The sandbox's Kubernetes API server, driven by the official `kubernetes` client.

Most tests run the API server in-process on a Store with no kubelet (so nothing
else writes while they look) and a short watch history; the last ones go through
`python -m sandbox serve` (the `sandbox` fixture) with kubelet and ingress.
Covered: CRUD and status codes for Deployments, Services and Istio objects,
conflicts, 422/415 for custom resources, generation and the status subresource,
unknown fields under each `fieldValidation` and values of the wrong JSON type,
422 Invalid naming each field for what validation refuses (names, labels, pod
specs, Deployment selectors and strategies, Services), the patch formats,
server-side apply through the DynamicClient, selectors, paged lists, watches
(status change, timeout, 410), owner cascade, discovery, fault injection and the
request log, and the serve command's seed objects and shutdown.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import Sandbox
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

from sandbox.apiserver import ApiServer
from sandbox.cluster import kubeconfig, seed_namespaces
from sandbox.store import Store

ISTIO = ("networking.istio.io", "v1")


@dataclass
class Api:
    url: str
    store: Store
    client: client.ApiClient

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.client)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.client)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """An in-process API server (no kubelet, watch history of 20 events per resource)."""
    store = Store(history=20)
    seed_namespaces(store)
    server = ApiServer(store)
    server.start()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig(server.url)))
    api_client = config.new_client_from_config(config_file=str(path))
    yield Api(server.url, store, api_client)
    api_client.close()
    server.stop()
    store.close()


def deployment(name: str = "web", *, image: str = "app:v1", replicas: int = 1,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name, **(labels or {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "web", "image": image, "env": [{"name": "A", "value": "1"}],
                          "ports": [{"containerPort": 3000}]}]}}}}


def virtual_service(name: str = "myapp-blue-green", subset: str = "blue") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["*"], "gateways": ["myapp-gateway"],
                     "http": [{"route": [{"destination": {"host": "myapp", "subset": subset}}]}]}}


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == e.status
    return body


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


DEPLOYMENTS_URL = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"
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


# ---- decoding: unknown fields and wrong types ------------------------------------------------

def test_unknown_fields_follow_field_validation(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
    typo = deployment()
    typo["spec"]["replica"] = 2
    strict = requests.post(url, params={"fieldValidation": "Strict"}, json=typo)
    assert (strict.status_code, strict.json()["reason"]) == (400, "BadRequest")
    assert strict.json()["message"] == ('Deployment in version "v1" cannot be handled as a '
                                        'Deployment: strict decoding error: unknown field '
                                        '"spec.replica"')
    assert api.store.get("apps/v1/deployments", "default", "web") is None

    warned = requests.post(url, json=typo)  # no directive: Warn
    assert warned.status_code == 201
    assert warned.headers["Warning"] == '299 - "unknown field \\"spec.replica\\""'
    assert "replica" not in warned.json()["spec"]
    ignored = requests.post(url, params={"fieldValidation": "Ignore"}, json={
        **deployment("quiet"), "colour": "blue"})
    assert ignored.status_code == 201 and "Warning" not in ignored.headers
    assert "colour" not in ignored.json()

    patch = requests.patch(f"{url}/web", params={"fieldValidation": "Strict"},
                           json={"spec": {"template": {"spec": {"containers": [
                               {"name": "web", "imagePolicy": "Always"}]}}}},
                           headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert (patch.status_code, patch.json()["reason"]) == (422, "Invalid")
    [cause] = patch.json()["details"]["causes"]
    assert cause["field"] == "patch" and cause["message"].endswith(
        'strict decoding error: unknown field "spec.template.spec.containers[0].imagePolicy"')
    wrong = requests.post(url, params={"fieldValidation": "Sometimes"}, json=deployment("x"))
    assert wrong.status_code == 422 and wrong.json()["details"]["kind"] == "CreateOptions"


def test_values_of_the_wrong_json_type_are_refused(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
    quoted = deployment()
    quoted["spec"]["replicas"] = "2"
    numbered = deployment()
    numbered["metadata"]["labels"]["tier"] = 1
    for body, message in [
            (quoted, "json: cannot unmarshal string into Go struct field "
                     "DeploymentSpec.spec.replicas of type int32"),
            (numbered, "json: cannot unmarshal number into Go struct field "
                       "ObjectMeta.metadata.labels of type string")]:
        answer = requests.post(url, json=body)
        assert (answer.status_code, answer.json()["reason"]) == (400, "BadRequest")
        assert answer.json()["message"] == (
            f'Deployment in version "v1" cannot be handled as a Deployment: {message}')
    assert api.store.list("apps/v1/deployments")[0] == []

    service = requests.post(f"{api.url}/api/v1/namespaces/default/services", json={
        "metadata": {"name": "svc"}, "spec": {"ports": [{"port": "80"}]}})
    assert service.status_code == 400 and service.json()["message"].endswith(
        "json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of "
        "type int32")

    vs = virtual_service()
    vs["spec"]["hosts"] = "*"
    with pytest.raises(ApiException) as e:
        api.custom.create_namespaced_custom_object(*ISTIO, "default", "virtualservices", vs)
    body = status_of(e.value)
    assert (e.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [{
        "reason": "FieldValueTypeInvalid", "field": "spec.hosts",
        "message": 'Invalid value: "string": spec.hosts in body must be of type array: "string"'}]


def test_server_side_apply_refuses_fields_outside_the_schema(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments/web"
    typo = deployment()
    typo["spec"]["replica"] = 2
    answer = requests.patch(url, params={"fieldManager": "me"}, data=yaml.safe_dump(typo),
                            headers={"Content-Type": "application/apply-patch+yaml"})
    assert answer.status_code == 500 and "reason" not in answer.json()
    assert answer.json()["message"] == ("failed to create typed patch object (/web; apps/v1, "
                                        "Kind=Deployment): .spec.replica: field not declared "
                                        "in schema")
    assert api.store.get("apps/v1/deployments", "default", "web") is None


# ---- patch formats ------------------------------------------------------------------------------

def test_deployment_patches_strategic_merge_and_json_patch(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    merged = api.apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {
        "spec": {"containers": [{"name": "web", "image": "app:v2",
                                 "env": [{"name": "B", "value": "2"}]}]}}}})
    container = merged.spec.template.spec.containers[0]
    assert container.image == "app:v2"
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "2")]
    assert merged.metadata.generation == 2

    patched = api.apps.patch_namespaced_deployment(
        "web", "default", [{"op": "test", "path": "/spec/replicas", "value": 1},
                           {"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert patched.spec.replicas == 4
    with pytest.raises(ApiException) as e:
        api.apps.patch_namespaced_deployment(
            "web", "default", [{"op": "test", "path": "/spec/replicas", "value": 1}])
    assert e.value.status == 422 and status_of(e.value)["reason"] == "Invalid"


def test_merge_patch_replaces_lists_where_strategic_merge_would_merge(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "other", "image": "b:1"}]}}}}
    merged = api.apps.patch_namespaced_deployment(
        "web", "default", patch, _content_type="application/merge-patch+json")
    assert [c.name for c in merged.spec.template.spec.containers] == ["other"]
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments/web"
    unknown = requests.patch(url, data="{}", headers={"Content-Type": "text/plain"})
    assert unknown.status_code == 415


def test_service_lifecycle_and_ports_merged_by_port(api: Api) -> None:
    made = api.core.create_namespaced_service("default", {
        "metadata": {"name": "myapp", "labels": {"app": "myapp"}},
        "spec": {"selector": {"app": "myapp"}, "ports": [{"name": "http", "port": 3000}]}})
    assert made.spec.cluster_ip and made.spec.type == "ClusterIP"
    assert made.spec.ports[0].target_port == 3000 and made.spec.ports[0].protocol == "TCP"
    patched = api.core.patch_namespaced_service("myapp", "default", {"spec": {"ports": [
        {"port": 3000, "name": "web"}, {"port": 9090, "name": "metrics"}]}})
    assert [(p.port, p.name) for p in patched.spec.ports] == [(3000, "web"), (9090, "metrics")]
    assert patched.spec.cluster_ip == made.spec.cluster_ip
    current = api.core.read_namespaced_service("myapp", "default")
    current.metadata.labels["tier"] = "web"
    replaced = api.core.replace_namespaced_service("myapp", "default", current)
    assert replaced.metadata.labels == {"app": "myapp", "tier": "web"}
    api.core.delete_namespaced_service("myapp", "default")
    assert api.core.list_namespaced_service("default").items == []


def test_istio_objects_through_custom_objects_api(api: Api) -> None:
    made = api.custom.create_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                      virtual_service())
    assert made["metadata"]["generation"] == 1 and made["kind"] == "VirtualService"
    patched = api.custom.patch_namespaced_custom_object(
        *ISTIO, "default", "virtualservices", "myapp-blue-green", {"spec": {"hosts": ["a.b"]}})
    assert patched["spec"]["hosts"] == ["a.b"] and patched["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as e:
        api.custom.replace_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                    "myapp-blue-green", virtual_service())
    assert e.value.status == 422
    assert status_of(e.value)["message"] == (
        'virtualservices.networking.istio.io "myapp-blue-green" is invalid: '
        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
    body = virtual_service(subset="green")
    body["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"]
    replaced = api.custom.replace_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                           "myapp-blue-green", body)
    assert replaced["spec"]["http"][-1]["route"][0]["destination"]["subset"] == "green"

    beta = api.custom.get_namespaced_custom_object("networking.istio.io", "v1beta1", "default",
                                                   "virtualservices", "myapp-blue-green")
    assert beta["apiVersion"] == "networking.istio.io/v1beta1", "one object, several versions"
    listed = api.custom.list_namespaced_custom_object(*ISTIO, "default", "virtualservices")
    assert listed["kind"] == "VirtualServiceList" and len(listed["items"]) == 1
    api.custom.delete_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                               "myapp-blue-green")
    with pytest.raises(ApiException) as e:
        api.custom.get_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                "myapp-blue-green")
    assert e.value.status == 404


def test_strategic_merge_patch_on_a_custom_resource_is_415(api: Api) -> None:
    api.custom.create_namespaced_custom_object(*ISTIO, "default", "destinationrules", {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "dr"}, "spec": {"host": "myapp"}})
    answer = requests.patch(f"{api.url}/apis/networking.istio.io/v1/namespaces/default/"
                            "destinationrules/dr", data="{}",
                            headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert answer.status_code == 415
    assert answer.json()["reason"] == "UnsupportedMediaType"
    assert answer.json()["message"] == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


# ---- server-side apply --------------------------------------------------------------------------

def test_server_side_apply_through_the_dynamic_client(api: Api, tmp_path: Path) -> None:
    dyn = dynamic.DynamicClient(api.client, cache_file=str(tmp_path / "discovery.json"))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    first = deployments.server_side_apply(body=deployment(), field_manager="bluegreen",
                                          namespace="default")
    assert first.spec.replicas == 1
    assert [m.manager for m in first.metadata.managedFields] == ["bluegreen"]

    second = deployments.server_side_apply(body=deployment(image="app:v2"),
                                           field_manager="bluegreen", namespace="default")
    assert second.spec.template.spec.containers[0].image == "app:v2"
    assert second.metadata.generation == 2

    wanted = deployment(image="app:v2", replicas=3)
    with pytest.raises(ApiException) as e:
        deployments.server_side_apply(body=wanted, field_manager="someone-else",
                                      namespace="default")
    body = status_of(e.value)
    assert (e.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"] == ('Apply failed with 1 conflict: conflict with "bluegreen": '
                               ".spec.replicas")
    forced = deployments.server_side_apply(body=wanted, field_manager="someone-else",
                                           namespace="default", force_conflicts=True)
    assert forced.spec.replicas == 3

    services = dyn.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    vs = services.patch(body=virtual_service(), namespace="default", field_manager="bluegreen",
                        content_type="application/apply-patch+yaml")
    assert vs.spec.http[-1].route[0].destination.subset == "blue"


def test_apply_keeps_a_container_another_manager_still_owns_fields_in(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments/web"
    both = deployment()
    containers = both["spec"]["template"]["spec"]["containers"]
    containers.append({"name": "side", "image": "proxy:v1"})
    apply = {"Content-Type": "application/apply-patch+yaml"}
    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    assert requests.patch(url, params={"fieldManager": "mgr1"}, data=yaml.safe_dump(both),
                          headers=apply).status_code == 201
    patched = requests.patch(url, params={"fieldManager": "mgr2"}, headers=smp, json={
        "spec": {"template": {"spec": {"containers": [
            {"name": "side", "env": [{"name": "MODE", "value": "x"}]}]}}}})
    assert patched.status_code == 200

    alone = deployment()  # mgr1 stops sending `side`; mgr2 still owns its env, not its image
    refused = requests.patch(url, params={"fieldManager": "mgr1"}, data=yaml.safe_dump(alone),
                             headers=apply)
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == (
        'Deployment.apps "web" is invalid: spec.template.spec.containers[1].image: '
        "Required value")

    requests.patch(url, params={"fieldManager": "mgr2"}, headers=smp, json={
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "proxy:v2"}]}}}})
    kept = requests.patch(url, params={"fieldManager": "mgr1"}, data=yaml.safe_dump(alone),
                          headers=apply)
    assert kept.status_code == 200, kept.text
    assert kept.json()["spec"]["template"]["spec"]["containers"][1] == {
        "name": "side", "image": "proxy:v2", "env": [{"name": "MODE", "value": "x"}],
        "imagePullPolicy": "IfNotPresent", "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}


def test_apply_creates_with_201_and_needs_a_field_manager(api: Api) -> None:
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments/web"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    missing = requests.patch(url, data=yaml.safe_dump(deployment()), headers=headers)
    assert missing.status_code == 422
    assert "fieldManager: Required value: is required for apply patch" in missing.json()["message"]
    created = requests.patch(url, params={"fieldManager": "me"},
                             data=yaml.safe_dump(deployment()), headers=headers)
    assert created.status_code == 201
    updated = requests.patch(url, params={"fieldManager": "me"},
                             data=yaml.safe_dump(deployment(replicas=2)), headers=headers)
    assert updated.status_code == 200 and updated.json()["spec"]["replicas"] == 2


# ---- selectors ----------------------------------------------------------------------------------

def test_label_and_field_selectors(api: Api) -> None:
    for name, color in (("myapp-blue", "blue"), ("myapp-green", "green"), ("other", "blue")):
        api.apps.create_namespaced_deployment(
            "default", deployment(name, labels={"app": "myapp" if "myapp" in name else name,
                                                "color": color}))

    def names(**kwargs: str) -> list[str]:
        items = api.apps.list_namespaced_deployment("default", **kwargs).items
        return [d.metadata.name for d in items]

    assert names(label_selector="app=myapp") == ["myapp-blue", "myapp-green"]
    assert names(label_selector="app=myapp,color!=blue") == ["myapp-green"]
    assert names(label_selector="color in (blue),app notin (myapp)") == ["other"]
    assert names(label_selector="!color") == []
    assert names(field_selector="metadata.name=other") == ["other"]
    assert names(field_selector="metadata.name!=other,metadata.namespace=default") == [
        "myapp-blue", "myapp-green"]
    everywhere = api.apps.list_deployment_for_all_namespaces(label_selector="color=blue")
    assert sorted(d.metadata.name for d in everywhere.items) == ["myapp-blue", "other"]
    with pytest.raises(ApiException) as e:
        api.apps.list_namespaced_deployment("default", field_selector="spec.replicas=1")
    assert e.value.status == 400


# ---- watches ------------------------------------------------------------------------------------

def test_lists_page_with_limit_and_continue_over_one_snapshot(api: Api) -> None:
    for name in ("c1", "c2", "c3", "c4", "c5"):
        api.core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    first = api.core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["c1", "c2"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue

    api.core.delete_namespaced_config_map("c3", "default")  # after the snapshot: unseen
    api.core.create_namespaced_config_map("default", {"metadata": {"name": "c6"}})
    second = api.core.list_namespaced_config_map("default", limit=2,
                                                 _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["c3", "c4"]
    assert second.metadata.resource_version == first.metadata.resource_version
    last = api.core.list_namespaced_config_map("default", limit=2,
                                               _continue=second.metadata._continue)
    assert [c.metadata.name for c in last.items] == ["c5"]
    assert last.metadata._continue is None and last.metadata.remaining_item_count is None

    selected = requests.get(f"{api.url}/api/v1/configmaps",
                            params={"limit": "1", "fieldSelector": "metadata.namespace=default"})
    assert selected.json()["metadata"]["continue"]
    assert "remainingItemCount" not in selected.json()["metadata"], "unknown with a selector"


def test_lists_follow_etcd_key_order_and_a_page_ends_at_its_limit(api: Api) -> None:
    for namespace in ("a", "a-b"):  # keys a/..., a-b/...: "-" sorts before "/"
        api.core.create_namespace({"metadata": {"name": namespace}})
    api.core.create_namespaced_config_map("a", {"metadata": {"name": "x"}})
    api.core.create_namespaced_config_map("a", {"metadata": {"name": "y"}})
    api.core.create_namespaced_config_map("a-b", {"metadata": {"name": "x",
                                                               "labels": {"k": "v"}}})
    url = f"{api.url}/api/v1/configmaps"
    everywhere = requests.get(url).json()["items"]
    assert [(c["metadata"]["namespace"], c["metadata"]["name"]) for c in everywhere] == [
        ("a-b", "x"), ("a", "x"), ("a", "y")]
    first = requests.get(url, params={"limit": "1"}).json()
    assert first["metadata"]["remainingItemCount"] == 2
    rest = requests.get(url, params={"limit": "5", "continue": first["metadata"]["continue"]})
    assert [c["metadata"]["namespace"] for c in rest.json()["items"]] == ["a", "a"]

    selected = requests.get(url, params={"limit": "1", "labelSelector": "k=v"}).json()
    assert [c["metadata"]["name"] for c in selected["items"]] == ["x"]
    assert selected["metadata"]["continue"], "keys follow, matching or not"
    after = requests.get(url, params={"limit": "1", "labelSelector": "k=v",
                                      "continue": selected["metadata"]["continue"]}).json()
    assert after["items"] == [] and "continue" not in after["metadata"]


def test_a_continue_token_older_than_the_history_is_410_with_a_way_on(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/default/configmaps"
    for name in ("c1", "c2", "c3"):
        api.core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    token = requests.get(url, params={"limit": "1"}).json()["metadata"]["continue"]
    for n in range(25):  # the api fixture keeps 20 events per resource
        api.core.patch_namespaced_config_map("c3", "default", {"data": {"n": str(n)}})
    gone = requests.get(url, params={"limit": "1", "continue": token})
    assert (gone.status_code, gone.json()["reason"]) == (410, "Expired")
    assert gone.json()["message"].startswith("The provided continue parameter is too old")
    onward = requests.get(url, params={"limit": "5", "continue":
                                       gone.json()["metadata"]["continue"]})
    assert [c["metadata"]["name"] for c in onward.json()["items"]] == ["c2", "c3"]
    bad = requests.get(url, params={"limit": "1", "continue": "not-a-token"})
    assert (bad.status_code, bad.json()["reason"]) == (400, "BadRequest")


def test_watch_sees_a_status_change_and_ends_at_timeout(api: Api) -> None:
    made = api.apps.create_namespaced_deployment("default", deployment())

    def make_ready() -> None:
        time.sleep(0.3)
        api.apps.patch_namespaced_deployment_status("web", "default", {"status": {
            "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "updatedReplicas": 1}})

    threading.Thread(target=make_ready).start()
    started, seen = time.monotonic(), []
    for event in watch.Watch().stream(api.apps.list_namespaced_deployment, "default",
                                      resource_version=made.metadata.resource_version,
                                      timeout_seconds=2):
        seen.append((event["type"], event["object"].status.ready_replicas))
    elapsed = time.monotonic() - started
    assert seen == [("MODIFIED", 1)]
    assert 1.8 <= elapsed < 4, "the stream ends when timeoutSeconds is up"


def test_watch_without_resource_version_starts_with_the_current_objects(api: Api) -> None:
    api.core.create_namespaced_config_map("default", {"metadata": {"name": "a",
                                                                   "labels": {"k": "v"}}})
    api.core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        api.core.list_namespaced_config_map, "default", label_selector="k=v", timeout_seconds=1)]
    assert events == [("ADDED", "a")]


def test_watch_ends_with_a_bookmark_when_the_client_allows_them(api: Api) -> None:
    made = api.core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    events = list(watch.Watch().stream(api.core.list_namespaced_config_map, "default",
                                       resource_version=made.metadata.resource_version,
                                       allow_watch_bookmarks=True, timeout_seconds=1))
    assert [e["type"] for e in events] == ["BOOKMARK"]
    rv = events[0]["raw_object"]["metadata"]["resourceVersion"]
    assert int(rv) >= int(made.metadata.resource_version)


def test_watch_from_a_too_old_resource_version_is_410(api: Api) -> None:
    first = api.core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    for i in range(25):  # the in-process server keeps 20 events per resource
        api.core.patch_namespaced_config_map("c", "default", {"data": {"n": str(i)}})
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(api.core.list_namespaced_config_map, "default",
                                      resource_version=first.metadata.resource_version,
                                      timeout_seconds=1):
            pass
    assert e.value.status == 410
    raw = requests.get(f"{api.url}/api/v1/namespaces/default/configmaps",
                       params={"watch": "true", "resourceVersion": "1"}, timeout=5)
    event = json.loads(raw.text.splitlines()[0])
    assert raw.status_code == 200 and event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith("too old resource version: 1 (")


# ---- cascade, discovery, dry run ----------------------------------------------------------------

def test_deleting_a_deployment_deletes_what_it_owns(api: Api) -> None:
    owned_chain(api)
    api.apps.delete_namespaced_deployment("web", "default")
    assert api.apps.list_namespaced_replica_set("default").items == []
    assert api.core.list_namespaced_pod("default").items == []


def owned_chain(api: Api) -> tuple[Any, Any, Any]:
    """A Deployment owning a ReplicaSet owning a Pod (no controllers run here)."""
    owner = api.apps.create_namespaced_deployment("default", deployment())
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
           "uid": owner.metadata.uid, "controller": True}
    rs = deployment("web-abc")
    rs.update(kind="ReplicaSet", metadata={**rs["metadata"], "ownerReferences": [ref]})
    made_rs = api.apps.create_namespaced_replica_set("default", rs)
    rs_ref = {**ref, "kind": "ReplicaSet", "name": "web-abc", "uid": made_rs.metadata.uid}
    pod = api.core.create_namespaced_pod("default", {
        "metadata": {"name": "web-abc-1", "ownerReferences": [rs_ref]},
        "spec": {"containers": [{"name": "web", "image": "app:v1"}]}})
    return owner, made_rs, pod


def test_orphan_propagation_keeps_dependents_and_frees_them(api: Api) -> None:
    owned_chain(api)
    answer = requests.delete(f"{api.url}{DEPLOYMENTS_URL}/web",
                             json={"kind": "DeleteOptions", "apiVersion": "v1",
                                   "propagationPolicy": "Orphan"})
    assert answer.status_code == 200
    assert answer.json()["kind"] == "Deployment", "pending on its orphan finalizer"
    assert answer.json()["metadata"]["finalizers"] == ["orphan"]
    assert answer.json()["metadata"]["deletionTimestamp"]
    assert api.store.get("apps/v1/deployments", "default", "web") is None
    [rs] = api.apps.list_namespaced_replica_set("default").items
    assert rs.metadata.owner_references is None
    [pod] = api.core.list_namespaced_pod("default").items
    assert pod.metadata.owner_references[0].name == "web-abc", "only the owner's refs go"

    api.apps.delete_namespaced_replica_set("web-abc", "default",
                                           propagation_policy="Foreground")
    assert api.core.list_namespaced_pod("default").items == []
    bad = requests.delete(f"{api.url}/api/v1/namespaces/default/pods/x",
                          params={"propagationPolicy": "Sideways"})
    assert (bad.status_code, bad.json()["details"]["kind"]) == (422, "DeleteOptions")


def test_finalizers_keep_an_object_being_deleted_until_they_are_removed(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/default/configmaps/held"
    api.core.create_namespaced_config_map("default", {
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    events = api.store.watch("v1/configmaps", "default", since_rv=api.store.resource_version)
    answer = requests.delete(url)
    assert answer.status_code == 200 and answer.json()["kind"] == "ConfigMap"
    held = requests.get(url).json()
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == [
        "example.com/hold"]
    assert requests.delete(url).status_code == 200, "deleting again changes nothing"
    more = requests.patch(url, json={"metadata": {"finalizers": ["example.com/hold", "x/y"]}},
                          headers={"Content-Type": MERGE})
    assert more.status_code == 422 and more.json()["details"]["causes"][0]["message"] == (
        "Forbidden: no new finalizers can be added if the object is being deleted, found new "
        'finalizers []string{"x/y"}')
    released = requests.patch(url, json={"metadata": {"finalizers": None}},
                              headers={"Content-Type": MERGE})
    assert released.status_code == 200
    assert requests.get(url).status_code == 404
    seen = [kind for kind, _ in iter(lambda: events.next(timeout=0), None)]
    events.close()
    assert seen == ["MODIFIED", "DELETED"]


def test_namespaces_terminate_with_their_contents_and_the_system_ones_stay(api: Api) -> None:
    for name in ("default", "kube-system", "kube-public"):
        refused = requests.delete(f"{api.url}/api/v1/namespaces/{name}")
        assert refused.status_code == 403 and refused.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            "reason": "Forbidden", "details": {"name": name, "kind": "namespaces"}, "code": 403}
    api.core.create_namespace({"metadata": {"name": "team"}})
    api.core.create_namespaced_config_map("team", {"metadata": {"name": "cfg"}})
    answer = requests.delete(f"{api.url}/api/v1/namespaces/team").json()
    assert answer["kind"] == "Namespace" and answer["status"]["phase"] == "Terminating"
    assert api.store.get("v1/namespaces", None, "team") is None
    assert api.store.get("v1/configmaps", "team", "cfg") is None


def test_delete_answers_a_status_or_the_object_as_each_registry_does(api: Api) -> None:
    made = api.apps.create_namespaced_deployment("default", deployment())
    answer = requests.delete(f"{api.url}/apis/apps/v1/namespaces/default/deployments/web")
    assert answer.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Success", "details": {
                                 "name": "web", "group": "apps", "kind": "deployments",
                                 "uid": made.metadata.uid}}
    cm = api.core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    status = requests.delete(f"{api.url}/api/v1/namespaces/default/configmaps/cfg").json()
    assert (status["status"], status["details"]) == (
        "Success", {"name": "cfg", "kind": "configmaps", "uid": cm.metadata.uid})
    vs = api.custom.create_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                    virtual_service())
    gone = api.custom.delete_namespaced_custom_object(*ISTIO, "default", "virtualservices",
                                                      "myapp-blue-green")
    assert gone["kind"] == "Status" and gone["details"] == {
        "name": "myapp-blue-green", "group": "networking.istio.io", "kind": "virtualservices",
        "uid": vs["metadata"]["uid"]}

    api.core.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "web", "image": "app:v1"}]}})
    pod = requests.delete(f"{api.url}/api/v1/namespaces/default/pods/p").json()
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "p"  # ReturnDeletedObject
    api.core.create_namespaced_service("default", {"metadata": {"name": "svc"},
                                                   "spec": {"ports": [{"port": 80}]}})
    svc = requests.delete(f"{api.url}/api/v1/namespaces/default/services/svc").json()
    assert svc["kind"] == "Service"


def test_namespaced_kinds_have_no_cluster_wide_object_paths(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    api.core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    item = requests.get(f"{api.url}/apis/apps/v1/deployments/web")
    assert (item.status_code, item.json()["reason"]) == (404, "NotFound")
    assert requests.get(f"{api.url}/api/v1/configmaps/cfg").status_code == 404
    create = requests.post(f"{api.url}/api/v1/configmaps", json={"metadata": {"name": "x"}})
    assert (create.status_code, create.json()["reason"]) == (405, "MethodNotAllowed")
    assert requests.delete(f"{api.url}/api/v1/configmaps").status_code == 405
    assert api.store.get("v1/configmaps", "default", "x") is None
    listed = api.apps.list_deployment_for_all_namespaces()  # listing across them is fine
    assert [d.metadata.name for d in listed.items] == ["web"]
    assert requests.get(f"{api.url}/api/v1/namespaces/default").status_code == 200


def test_discovery_names_kinds_short_names_and_versions(api: Api) -> None:
    groups = requests.get(f"{api.url}/apis").json()
    istio = next(g for g in groups["groups"] if g["name"] == "networking.istio.io")
    assert istio["preferredVersion"]["version"] == "v1"
    resources = requests.get(f"{api.url}/apis/networking.istio.io/v1").json()["resources"]
    vs = next(r for r in resources if r["name"] == "virtualservices")
    assert (vs["kind"], vs["shortNames"], vs["namespaced"]) == ("VirtualService", ["vs"], True)
    core = requests.get(f"{api.url}/api/v1").json()["resources"]
    assert {"pods", "pods/status", "pods/exec", "services", "namespaces"} <= {
        r["name"] for r in core}
    assert requests.get(f"{api.url}/version").json()["major"] == "1"


def test_tables_for_kubectl_get_and_get_watch(api: Api) -> None:
    api.apps.create_namespaced_deployment("default", deployment())
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    table = requests.get(url, headers=accept).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Ready", "Up-to-date", "Available", "Age"]
    assert table["rows"][0]["cells"][:4] == ["web", "0/1", 0, 0]
    assert table["rows"][0]["object"]["metadata"]["name"] == "web"
    watched = requests.get(url, headers=accept, params={"watch": "1", "timeoutSeconds": "1"})
    event = json.loads(watched.text.splitlines()[0])
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][0] == "web"


def test_pod_log_serves_the_file_the_kubelet_writes(api: Api, tmp_path: Path) -> None:
    (tmp_path / "container.log").write_text("one\ntwo\nthree\n")
    api.core.create_namespaced_pod("default", {
        "metadata": {"name": "p", "annotations": {"sandbox.bluegreen.dev/dir": str(tmp_path)}},
        "spec": {"containers": [{"name": "web", "image": "app:v1"}]}})
    assert api.core.read_namespaced_pod_log("p", "default") == "one\ntwo\nthree\n"
    assert api.core.read_namespaced_pod_log("p", "default", tail_lines=1) == "three\n"


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
