"""The sandbox's API server: reading many objects, and watching them.

Label and field selectors; paged lists (limit/continue over one snapshot, etcd key
order, 410 for a continue token older than the history); watches (a status change,
the timeout, the initial objects, bookmarks, 410 for a too old resourceVersion);
namespaced kinds' paths, discovery, tables for `kubectl get` and the pod log.
Against the in-process server (`sandbox_client.served_api`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import watch
from kubernetes.client.rest import ApiException
from sandbox_client import Api, deployment, served_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with served_api(tmp_path) as served:
        yield served


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
