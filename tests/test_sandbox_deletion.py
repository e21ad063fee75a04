"""Deleting in the sandbox API server, as the registry, the garbage collector and the
namespace controller of a real cluster do it, through HTTP on an in-process server.

Covered: Foreground deletion (the owner waits, deleting, for the dependents that
block it; dependents with finalizers are only marked), Background deletion of an
owner whose dependents have another owner (they stay and lose only the reference to
the gone one), the generation of an object marked deleting, a namespace terminating
until its contents are gone (what waits in the foreground goes in the
background; its conditions, 403 for new content, 409 for a second
DELETE), and DELETE on a collection with its DeleteOptions (dry run, preconditions,
propagation, `limit`); a dry-run DELETE answers what the delete would leave, and an
update removing the last finalizer of an object being deleted deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sandbox_objects import api_server

from sandbox.store import Store

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


@dataclass
class Api:
    url: str
    store: Store

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path)

    def make(self, name: str, *, owners: tuple[dict[str, Any], ...] = (),
             finalizers: tuple[str, ...] = (), labels: dict[str, str] | None = None,
             namespace: str = "default") -> dict[str, Any]:
        """A ConfigMap owned by `owners` (objects, as answered), holding `finalizers`."""
        meta: dict[str, Any] = {"name": name, "labels": labels or {}}
        if owners:
            meta["ownerReferences"] = [ref(o) for o in owners]
        if finalizers:
            meta["finalizers"] = list(finalizers)
        answer = requests.post(f"{self.url}/api/v1/namespaces/{namespace}/configmaps",
                               json={"metadata": meta})
        assert answer.status_code == 201, answer.text
        made: dict[str, Any] = answer.json()
        return made

    def names(self, path: str = CONFIGMAPS) -> list[str]:
        return [o["metadata"]["name"] for o in self.get(path).json()["items"]]


def ref(owner: dict[str, Any], *, block: bool = True) -> dict[str, Any]:
    meta = owner["metadata"]
    found = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
             "uid": meta["uid"]}
    return {**found, "blockOwnerDeletion": True} if block else found


@pytest.fixture
def api() -> Iterator[Api]:
    """An in-process API server with its namespaces and nothing else (no kubelet)."""
    with api_server() as (url, store):
        yield Api(url, store)


def release(api: Api, path: str) -> None:
    """Remove every finalizer, as the controller owning them would once done."""
    answer = requests.patch(api.url + path, json={"metadata": {"finalizers": None}},
                            headers=MERGE)
    assert answer.status_code == 200, answer.text


def events_of(watcher: Any) -> list[tuple[str, str]]:
    seen = [(kind, obj["metadata"]["name"]) for kind, obj in iter(
        lambda: watcher.next(timeout=0), None)]
    watcher.close()
    return seen


# ---- the garbage collector ----------------------------------------------------------------------

def test_a_foreground_delete_keeps_the_owner_until_its_blocking_dependents_are_gone(
        api: Api) -> None:
    owner = api.make("owner")
    middle = api.make("middle", owners=(owner,))  # owns a dependent of its own
    api.make("leaf", owners=(middle,), finalizers=("example.com/hold",))
    api.make("plain", owners=(owner,))
    api.make("loose", finalizers=("example.com/hold",))
    requests.patch(f"{api.url}{CONFIGMAPS}/loose", headers=MERGE, json={"metadata": {
        "ownerReferences": [ref(owner, block=False)]}})  # does not block its owner
    events = api.store.watch("v1/configmaps", "default", since_rv=api.store.resource_version)

    answer = requests.delete(f"{api.url}{CONFIGMAPS}/owner",
                             json={"propagationPolicy": "Foreground"})
    assert answer.status_code == 200
    assert answer.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert answer.json()["metadata"]["deletionTimestamp"]
    waiting = api.get(f"{CONFIGMAPS}/owner")
    assert waiting.status_code == 200, "the owner stays while a blocking dependent does"
    assert waiting.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert api.get(f"{CONFIGMAPS}/middle").json()["metadata"]["finalizers"] == [
        "foregroundDeletion"], "a dependent with dependents is deleted in the foreground too"
    leaf = api.get(f"{CONFIGMAPS}/leaf").json()["metadata"]
    assert leaf["deletionTimestamp"] and leaf["finalizers"] == ["example.com/hold"]
    assert api.get(f"{CONFIGMAPS}/plain").status_code == 404
    assert api.get(f"{CONFIGMAPS}/loose").json()["metadata"]["deletionTimestamp"]

    release(api, f"{CONFIGMAPS}/loose")
    assert api.get(f"{CONFIGMAPS}/owner").status_code == 200, "loose never blocked it"
    release(api, f"{CONFIGMAPS}/leaf")
    assert api.names() == [], "the leaf gone, its owner went, and then the first one"
    seen = events_of(events)
    assert seen[0] == ("MODIFIED", "owner") and seen[-1] == ("DELETED", "owner")
    assert seen.index(("DELETED", "leaf")) < seen.index(("DELETED", "middle")) < len(seen) - 1


def test_an_owner_going_leaves_dependents_that_have_another_owner(api: Api) -> None:
    first, second = api.make("first"), api.make("second")
    api.make("shared", owners=(first, second))
    api.make("only", owners=(first,))
    assert requests.delete(f"{api.url}{CONFIGMAPS}/first").status_code == 200
    assert api.names() == ["second", "shared"]
    refs = api.get(f"{CONFIGMAPS}/shared").json()["metadata"]["ownerReferences"]
    assert refs == [ref(second)], "only the gone owner's reference is removed"

    waiting = api.make("waiting")
    api.make("both", owners=(waiting, second))
    requests.delete(f"{api.url}{CONFIGMAPS}/waiting", json={"propagationPolicy": "Foreground"})
    assert api.get(f"{CONFIGMAPS}/waiting").status_code == 404, "nothing blocks it once freed"
    assert api.get(f"{CONFIGMAPS}/both").json()["metadata"]["ownerReferences"] == [ref(second)]

    requests.delete(f"{api.url}{CONFIGMAPS}/second")
    assert api.names() == []


def held_deployment(api: Api) -> tuple[str, dict[str, Any]]:
    """Deployment `web`, held by a finalizer: (the deployments' URL, the object made)."""
    url = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
    labels = {"app": "web"}
    made = requests.post(url, json={
        "metadata": {"name": "web", "finalizers": ["example.com/hold"]},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "app:v1"}]}}}})
    assert made.status_code == 201, made.text
    return url, made.json()


def test_marking_an_object_deleting_moves_its_generation_on(api: Api) -> None:
    url, made = held_deployment(api)
    assert made["metadata"]["generation"] == 1
    answer = requests.delete(f"{url}/web")
    assert answer.json()["metadata"]["generation"] == 2
    requests.delete(f"{url}/web")
    assert requests.get(f"{url}/web").json()["metadata"]["generation"] == 2, "once only"


def test_a_dry_run_delete_answers_the_object_as_the_delete_would_leave_it(api: Api) -> None:
    url, made = held_deployment(api)
    rv = api.store.resource_version

    dry = requests.delete(f"{url}/web", params={"dryRun": "All",
                                                "propagationPolicy": "Foreground"})
    assert dry.status_code == 200
    meta = dry.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    assert meta["finalizers"] == ["example.com/hold", "foregroundDeletion"]
    assert (meta["generation"], meta["resourceVersion"]) == (2, made["metadata"][
        "resourceVersion"]), "marked as the delete would, with the stored version"
    assert requests.get(f"{url}/web").json() == made, "nothing stored"
    assert api.store.resource_version == rv

    namespace = requests.post(f"{api.url}/api/v1/namespaces", json={
        "metadata": {"name": "team"}}).json()
    dry = requests.delete(f"{api.url}/api/v1/namespaces/team", json={"dryRun": ["All"]})
    assert dry.json()["metadata"]["deletionTimestamp"]
    assert dry.json()["status"]["phase"] == "Terminating"
    assert requests.get(f"{api.url}/api/v1/namespaces/team").json() == namespace

    plain = api.make("plain")
    dry = requests.delete(f"{api.url}{CONFIGMAPS}/plain", params={"dryRun": "All"})
    assert dry.json()["status"] == "Success", "nothing holds it: answered as gone at once"
    assert api.get(f"{CONFIGMAPS}/plain").json() == plain


def test_an_update_removing_the_last_finalizer_answers_its_object_and_deletes_the_stored_one(
        api: Api) -> None:
    for name in ("put", "patched"):
        api.make(name, labels={"v": "1"}, finalizers=("example.com/hold",))
        marked = requests.delete(f"{api.url}{CONFIGMAPS}/{name}").json()
        rv = marked["metadata"]["resourceVersion"]
        released = {**marked, "metadata": {**marked["metadata"], "labels": {"v": "2"}}}
        del released["metadata"]["finalizers"]
        answer = (requests.put(f"{api.url}{CONFIGMAPS}/put", json=released) if name == "put"
                  else requests.patch(f"{api.url}{CONFIGMAPS}/patched", headers=MERGE, json={
                      "metadata": {"labels": {"v": "2"}, "finalizers": None}}))
        # Store.Update's deleteWithoutFinalizers answers the object the update made, not
        # the one storage deleted (the watch's DELETED event carries that one).
        assert answer.status_code == 200, answer.text
        meta = answer.json()["metadata"]
        assert "finalizers" not in meta and meta["labels"] == {"v": "2"}, name
        assert meta["resourceVersion"] == rv and meta["deletionTimestamp"]
        assert api.get(f"{CONFIGMAPS}/{name}").status_code == 404

        watched = requests.get(api.url + CONFIGMAPS, params={
            "watch": "1", "resourceVersion": rv, "timeoutSeconds": "1"}).text.splitlines()
        event = json.loads(watched[0])
        assert event["type"] == "DELETED", name
        gone = event["object"]["metadata"]
        assert gone["finalizers"] == ["example.com/hold"] and gone["labels"] == {"v": "1"}, (
            "the DELETED event carries the object as it was last stored")
        assert int(gone["resourceVersion"]) > int(rv), "at the deletion's resourceVersion"


# ---- the namespace controller --------------------------------------------------------------------

def test_a_namespace_terminates_until_everything_in_it_is_gone(api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces/team"
    requests.post(f"{api.url}/api/v1/namespaces", json={"metadata": {"name": "team"}})
    team = "/api/v1/namespaces/team/configmaps"
    api.make("held", namespace="team", finalizers=("example.com/hold",))
    api.make("plain", namespace="team")
    api.make("other", namespace="team", finalizers=("example.com/hold",))

    answer = requests.delete(url)
    assert answer.status_code == 200 and answer.json()["status"]["phase"] == "Terminating"
    namespace = requests.get(url).json()
    assert namespace["metadata"]["deletionTimestamp"] and "finalizers" not in namespace[
        "metadata"]
    assert namespace["spec"] == {"finalizers": ["kubernetes"]}
    assert namespace["status"]["phase"] == "Terminating"
    conditions = {c["type"]: (c["status"], c["reason"], c["message"])
                  for c in namespace["status"]["conditions"]}
    assert conditions == {
        "NamespaceDeletionDiscoveryFailure": (
            "False", "ResourcesDiscovered", "All resources successfully discovered"),
        "NamespaceDeletionGroupVersionParsingFailure": (
            "False", "ParsedGroupVersions", "All legacy kube types successfully parsed"),
        "NamespaceDeletionContentFailure": (
            "False", "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization"),
        "NamespaceContentRemaining": (
            "True", "SomeResourcesRemain",
            "Some resources are remaining: configmaps. has 2 resource instances"),
        "NamespaceFinalizersRemaining": (
            "True", "SomeFinalizerRemain",
            "Some finalizers are remaining: example.com/hold in 2 resource instances")}
    assert api.names(team) == ["held", "other"]
    assert api.get(f"{team}/held").json()["metadata"]["deletionTimestamp"]

    refused = requests.post(api.url + team, json={"metadata": {"name": "new"}})
    assert refused.status_code == 403 and refused.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "new" is forbidden: unable to create new content in namespace '
                   "team because it is being terminated",
        "reason": "Forbidden", "details": {"name": "new", "kind": "configmaps", "causes": [
            {"reason": "NamespaceTerminating", "message": "namespace team is being terminated",
             "field": "metadata.namespace"}]}, "code": 403}
    again = requests.delete(url)
    assert (again.status_code, again.json()["reason"]) == (409, "Conflict")
    assert again.json()["message"] == (
        'Operation cannot be fulfilled on namespaces "team": The system is ensuring all '
        "content is removed from this namespace.  Upon completion, this namespace will "
        "automatically be purged by the system.")
    emptied = requests.patch(url, json={"metadata": {"labels": {"a": "b"}},
                                        "spec": {"finalizers": []}}, headers=MERGE)
    assert emptied.json()["spec"] == {"finalizers": ["kubernetes"]}, "only the controller's"

    release(api, f"{team}/held")
    left = requests.get(url).json()["status"]["conditions"]
    assert {c["type"]: c["message"] for c in left}["NamespaceContentRemaining"] == (
        "Some resources are remaining: configmaps. has 1 resource instances")
    release(api, f"{team}/other")
    assert requests.get(url).status_code == 404, "gone with the last of its contents"
    made = requests.post(f"{api.url}/api/v1/namespaces", json={"metadata": {"name": "team"}})
    assert made.status_code == 201


def test_a_terminating_namespace_deletes_what_waits_in_the_foreground_in_the_background(
        api: Api) -> None:
    requests.post(f"{api.url}/api/v1/namespaces", json={"metadata": {"name": "team"}})
    team = "/api/v1/namespaces/team/configmaps"
    owner = api.make("owner", namespace="team")
    api.make("held", namespace="team", owners=(owner,), finalizers=("example.com/hold",))
    requests.delete(f"{api.url}{team}/owner", json={"propagationPolicy": "Foreground"})
    assert api.get(f"{team}/owner").json()["metadata"]["finalizers"] == ["foregroundDeletion"]

    requests.delete(f"{api.url}/api/v1/namespaces/team")
    # The namespace controller's own DELETE is Background: it takes foregroundDeletion
    # away, and nothing else holds the owner.
    assert api.names(team) == ["held"], "the owner no longer waits for its dependent"
    release(api, f"{team}/held")
    assert api.get("/api/v1/namespaces/team").status_code == 404


def test_a_namespace_is_created_with_the_kubernetes_finalizer_whatever_its_spec_says(
        api: Api) -> None:
    url = f"{api.url}/api/v1/namespaces"
    for name, spec, finalizers in (
            ("bare", None, ["kubernetes"]),
            ("empty", {}, ["kubernetes"]),
            ("none", {"finalizers": []}, ["kubernetes"]),
            ("own", {"finalizers": ["example.com/hold"]}, ["example.com/hold", "kubernetes"]),
            ("both", {"finalizers": ["kubernetes", "example.com/hold"]},
             ["kubernetes", "example.com/hold"])):
        body: dict[str, Any] = {"metadata": {"name": name}}
        if spec is not None:
            body["spec"] = spec
        made = requests.post(url, json=body)
        assert made.status_code == 201, made.text
        assert made.json()["spec"] == {"finalizers": finalizers}, name
        assert requests.get(f"{url}/{name}").json()["spec"] == {"finalizers": finalizers}


def test_deleting_a_collection_honours_its_delete_options(api: Api) -> None:
    url = api.url + CONFIGMAPS
    first = api.make("a", labels={"role": "owner"})
    second = api.make("b")
    api.make("c", owners=(first,))

    dry = requests.delete(url, json={"dryRun": ["All"]})
    assert dry.status_code == 200 and [o["metadata"]["name"] for o in dry.json()["items"]] == [
        "a", "b", "c"]
    assert api.names() == ["a", "b", "c"], "a dry run deletes nothing"

    held = requests.delete(url, json={"preconditions": {"uid": second["metadata"]["uid"]}})
    assert (held.status_code, held.json()["reason"]) == (409, "Conflict")
    assert held.json()["message"] == (
        'Operation cannot be fulfilled on configmaps "a": Precondition failed: UID in '
        f'precondition: {second["metadata"]["uid"]}, UID in object meta: '
        f'{first["metadata"]["uid"]}')
    assert held.json()["details"] == {"name": "a", "kind": "configmaps"}
    assert api.names() == ["a", "b", "c"], "the first failure stops it"

    orphaned = requests.delete(url, params={"labelSelector": "role=owner",
                                            "propagationPolicy": "Orphan"})
    assert [o["metadata"]["name"] for o in orphaned.json()["items"]] == ["a"]
    assert api.names() == ["b", "c"]
    assert "ownerReferences" not in api.get(f"{CONFIGMAPS}/c").json()["metadata"]

    page = requests.delete(url, params={"limit": "1"})
    assert [o["metadata"]["name"] for o in page.json()["items"]] == ["b"]
    assert page.json()["metadata"]["continue"], "one page listed, and deleted"
    assert api.names() == ["c"]

    everything = requests.delete(f"{api.url}/api/v1/namespaces")
    assert (everything.status_code, everything.json()["reason"]) == (405, "MethodNotAllowed")
    namespaces = next(r for r in api.get("/api/v1").json()["resources"]
                      if r["name"] == "namespaces")
    assert "deletecollection" not in namespaces["verbs"]
    assert "deletecollection" in next(r for r in api.get("/api/v1").json()["resources"]
                                      if r["name"] == "configmaps")["verbs"]
