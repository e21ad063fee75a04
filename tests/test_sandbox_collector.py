"""The sandbox's garbage collector and owner references that name no live owner, as
kube-controller-manager's collector treats them, through HTTP on an in-process server.

Covered: an object all of whose owners are absent goes (an owner is absent when
nothing of that kind and name exists in the dependent's namespace with the
reference's uid), whether it was created so or patched so; one with a live owner
too only loses the dangling references; references the collector cannot resolve
(a kind the server does not serve, a namespaced kind named by a cluster-scoped
object) leave it alone; a dependent created under an owner that already waits for
its dependents is seen to when that owner is looked at again, as the real graph
builder does it. More of foreground deletion, and namespaces, are in
test_sandbox_deletion.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sandbox_objects import api_server

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def url() -> Iterator[str]:
    with api_server() as (server_url, _):
        yield server_url


def make(url: str, name: str, *refs: dict[str, Any], namespace: str = "default",
         finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "ownerReferences": list(refs) or None,
                            "finalizers": finalizers}
    answer = requests.post(f"{url}/api/v1/namespaces/{namespace}/configmaps",
                           json={"metadata": meta})
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def ref(owner: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A reference to `owner` (as answered), with `changes` to its coordinates."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], **changes}


def absent(name: str, kind: str = "ConfigMap", api_version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(uuid.uuid4())}


def names(url: str) -> list[str]:
    return [o["metadata"]["name"] for o in requests.get(url + CONFIGMAPS).json()["items"]]


def test_an_object_whose_owners_are_all_absent_is_collected(url: str) -> None:
    owner = make(url, "owner")
    make(url, "orphan", absent("never-was"))
    make(url, "impostor", ref(owner, uid=str(uuid.uuid4())))  # same name, another uid
    make(url, "elsewhere", ref(make(url, "owner", namespace="kube-system")))
    make(url, "misnamed", ref(owner, name="other"))
    make(url, "both", absent("gone"), ref(owner, uid=str(uuid.uuid4())))
    assert names(url) == ["owner"], "no owner exists by kind, name, namespace and uid"

    make(url, "patched")
    added = requests.patch(f"{url}{CONFIGMAPS}/patched", headers=MERGE, json={"metadata": {
        "ownerReferences": [absent("gone")]}})
    assert added.status_code == 200
    assert requests.get(f"{url}{CONFIGMAPS}/patched").status_code == 404, (
        "an update that gives it only absent owners has it collected too")


def test_a_live_owner_keeps_an_object_which_loses_only_its_dangling_references(
        url: str) -> None:
    owner = make(url, "owner")
    make(url, "kept", absent("gone"), ref(owner), absent("other"))
    kept = requests.get(f"{url}{CONFIGMAPS}/kept").json()
    assert kept["metadata"]["ownerReferences"] == [ref(owner)]


def test_references_the_collector_cannot_resolve_leave_the_object_alone(url: str) -> None:
    make(url, "unserved", absent("x", kind="Widget", api_version="example.com/v1"))
    make(url, "old-version", absent("x", kind="Deployment", api_version="apps/v1beta1"))
    assert names(url) == ["old-version", "unserved"], "the real collector retries these"

    config = make(url, "config")
    namespace = requests.post(f"{url}/api/v1/namespaces", json={"metadata": {
        "name": "team", "ownerReferences": [absent("owner", kind="Namespace")]}})
    assert namespace.status_code == 201
    assert requests.get(f"{url}/api/v1/namespaces/team").status_code == 404, (
        "a cluster-scoped owner that is absent: collected (and, empty, finalized)")
    odd = requests.post(f"{url}/api/v1/namespaces", json={"metadata": {
        "name": "odd", "ownerReferences": [ref(config, uid=str(uuid.uuid4()))]}})
    assert odd.status_code == 201
    assert not requests.get(f"{url}/api/v1/namespaces/odd").json()["metadata"].get(
        "deletionTimestamp"), "a cluster-scoped object naming a namespaced owner: never"


def test_a_dependent_made_under_a_waiting_owner_goes_when_the_owner_is_looked_at_again(
        url: str) -> None:
    owner = make(url, "owner")
    make(url, "held", ref(owner, blockOwnerDeletion=True), finalizers=["example.com/hold"])
    requests.delete(f"{url}{CONFIGMAPS}/owner", json={"propagationPolicy": "Foreground"})
    make(url, "late", ref(owner, blockOwnerDeletion=True))
    # The real graph builder queues nothing for a dependent added under an owner it
    # has observed (addDependentToOwners), and processDeletingDependentsItem is not
    # run again until a change to the owner's dependents queues the owner.
    assert names(url) == ["held", "late", "owner"]

    requests.patch(f"{url}{CONFIGMAPS}/held", headers=MERGE,
                   json={"metadata": {"finalizers": None}})
    assert names(url) == [], "the late dependent went, and then the owner"
