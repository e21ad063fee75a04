"""The sandbox's API server: how writes are read and merged, and what deleting cascades.

Unknown fields under each `fieldValidation` and values of the wrong JSON type; the
patch formats (strategic merge, JSON patch, merge patch; 415 for strategic merge on a
custom resource); server-side apply through the DynamicClient; owner cascade, orphan
propagation, finalizers, namespace termination and what each registry's DELETE
answers. Against the in-process server (`sandbox_client.served_api`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import dynamic
from kubernetes.client.rest import ApiException
from sandbox_client import (
    DEPLOYMENTS_URL,
    ISTIO,
    MERGE,
    Api,
    deployment,
    served_api,
    status_of,
    virtual_service,
)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with served_api(tmp_path) as served:
        yield served


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
