"""What the sandbox's API server refuses, and how, where the real one is strict.

Raw HTTP against an in-process API server with no kubelet: values that end in a
newline (Go's `$` does not match before one), and the 422 each such value gets;
DeleteOptions decoded against their types (400, in encoding/json's words) and read
from the query only when there is no body, with the parameter codec's booleans;
list parameters (`limit` an integer, no `resourceVersion` with `continue`); a
selector compared as Semantic.DeepEqual does when checking it is unchanged; a body in
a media type the server does not decode (kubectl's protobuf), 415.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sandbox_objects import api_server

from sandbox.store import Store

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


@dataclass
class Api:
    url: str
    store: Store


@pytest.fixture
def api() -> Iterator[Api]:
    with api_server(history=20) as (url, store):
        yield Api(url, store)


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "web", "image": "app:v1"}]}}, **spec}}


def causes(answer: requests.Response) -> list[tuple[str, str]]:
    assert answer.status_code == 422, answer.text
    return [(c["field"], c["message"]) for c in answer.json()["details"]["causes"]]


# ---- a trailing newline -------------------------------------------------------------------------

def test_a_name_ending_in_a_newline_is_invalid(api: Api) -> None:
    answer = requests.post(api.url + CONFIGMAPS, json={"metadata": {"name": "nl\n"}})
    assert causes(answer) == [("metadata.name", (
        'Invalid value: "nl\\n": a lowercase RFC 1123 subdomain must consist of lower case '
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))]
    assert answer.json()["message"].startswith('ConfigMap "nl\\n" is invalid: metadata.name: ')
    assert api.store.get("v1/configmaps", "default", "nl\n") is None


def test_a_label_value_ending_in_a_newline_is_invalid(api: Api) -> None:
    answer = requests.post(api.url + CONFIGMAPS,
                           json={"metadata": {"name": "c", "labels": {"app": "web\n"}}})
    assert [field for field, _ in causes(answer)] == ["metadata.labels"]
    assert causes(answer)[0][1].startswith('Invalid value: "web\\n": a valid label must be')


@pytest.mark.parametrize("fence", ["maxSurge", "maxUnavailable"])
def test_a_percent_ending_in_a_newline_is_invalid_not_a_crash(api: Api, fence: str) -> None:
    body = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {fence: "25%\n"}})
    answer = requests.post(api.url + DEPLOYMENTS, json=body)
    assert causes(answer) == [(f"spec.strategy.rollingUpdate.{fence}", (
        'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"25%\\n"}: a valid percent '
        "string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', "
        "regex used for validation is '[0-9]+%')"))]



# ---- DeleteOptions ------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"preconditions": "x"}, "json: cannot unmarshal string into Go struct field "
     "DeleteOptions.preconditions of type v1.Preconditions"),
    ({"orphanDependents": "no"}, "json: cannot unmarshal string into Go struct field "
     "DeleteOptions.orphanDependents of type bool"),
    ({"propagationPolicy": ["Orphan"]}, "json: cannot unmarshal array into Go struct field "
     "DeleteOptions.propagationPolicy of type v1.DeletionPropagation"),
    ({"gracePeriodSeconds": "5"}, "json: cannot unmarshal string into Go struct field "
     "DeleteOptions.gracePeriodSeconds of type int64"),
])
def test_delete_options_of_the_wrong_type_are_400(api: Api, options: dict[str, Any],
                                                  message: str) -> None:
    requests.post(api.url + CONFIGMAPS, json={"metadata": {"name": "c"}})
    answer = requests.delete(f"{api.url}{CONFIGMAPS}/c", json=options)
    assert answer.status_code == 400, answer.text
    assert (answer.json()["reason"], answer.json()["message"]) == ("BadRequest", message)
    assert api.store.get("v1/configmaps", "default", "c") is not None


@pytest.mark.parametrize("value", ["1", "t", "TRUE", "yes", ""])
def test_orphan_dependents_in_the_query_is_true_unless_false_or_0(api: Api, value: str) -> None:
    requests.post(api.url + DEPLOYMENTS, json=deployment())
    answer = requests.delete(f"{api.url}{DEPLOYMENTS}/web", params={"orphanDependents": value})
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"]["finalizers"] == ["orphan"]


def test_a_body_makes_the_query_options_unread(api: Api) -> None:
    requests.post(api.url + CONFIGMAPS, json={"metadata": {"name": "c"}})
    answer = requests.delete(f"{api.url}{CONFIGMAPS}/c", json={},
                             params={"propagationPolicy": "Sideways", "dryRun": "All"})
    assert answer.status_code == 200, answer.text
    assert api.store.get("v1/configmaps", "default", "c") is None


# ---- media types ---------------------------------------------------------------------------------

# What kubectl 1.32 sends for `kubectl create configmap x --from-literal=a=b`.
PROTOBUF = {"Content-Type": "application/vnd.kubernetes.protobuf"}
CONFIGMAP_PROTOBUF = bytes.fromhex("6b3873000a0f0a0276311209436f6e6669674d6170121b0a110a01"
                                   "7812001a0022002a0032003800420012060a01611201621a002200")


def test_a_body_in_a_media_type_the_server_does_not_decode_is_415(api: Api) -> None:
    refused = requests.post(api.url + CONFIGMAPS, data=CONFIGMAP_PROTOBUF, headers=PROTOBUF,
                            params={"dryRun": "Bogus"})  # 415 comes before the options
    assert refused.status_code == 415 and refused.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the body of the request was in an unknown format - accepted media types "
                   "include: application/json",
        "reason": "UnsupportedMediaType", "code": 415}
    assert api.store.get("v1/configmaps", "default", "x") is None

    made = requests.post(api.url + CONFIGMAPS, data=b'{"metadata": {"name": "x"}}',
                         headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert made.status_code == 201, made.text
    bare = requests.post(api.url + CONFIGMAPS, data=b'{"metadata": {"name": "y"}}')
    assert bare.status_code == 201, "no Content-Type: the server's first, JSON"
    assert "Content-Type" not in bare.request.headers
    for answer in (
            requests.put(f"{api.url}{CONFIGMAPS}/x", data=CONFIGMAP_PROTOBUF, headers=PROTOBUF),
            requests.delete(f"{api.url}{CONFIGMAPS}/x", data=b"\x00", headers=PROTOBUF),
            requests.put(f"{api.url}{DEPLOYMENTS}/web/scale", data=b"\x00", headers=PROTOBUF)):
        assert (answer.status_code, answer.json()["reason"]) == (415, "UnsupportedMediaType")
    gone = requests.delete(f"{api.url}{CONFIGMAPS}/x", headers=PROTOBUF)
    assert gone.status_code == 200, "a DELETE without a body has nothing to decode"


# ---- list parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("limit", "message"), [
    ("abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
    ("\u00b2", 'strconv.ParseInt: parsing "\u00b2": invalid syntax'),
    ("9223372036854775808", 'strconv.ParseInt: parsing "9223372036854775808": value out of '
     "range"),
])
def test_a_limit_that_is_not_an_int64_is_400(api: Api, limit: str, message: str) -> None:
    answer = requests.get(api.url + CONFIGMAPS, params={"limit": limit})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == message


def test_continue_with_a_resource_version_is_400(api: Api) -> None:
    for name in ("a", "b"):
        requests.post(api.url + CONFIGMAPS, json={"metadata": {"name": name}})
    first = requests.get(api.url + CONFIGMAPS, params={"limit": 1}).json()["metadata"]
    token = first["continue"]
    answer = requests.get(api.url + CONFIGMAPS, params={
        "limit": 1, "continue": token, "resourceVersion": first["resourceVersion"]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == (
        "specifying resource version is not allowed when using continue")
    rest = requests.get(api.url + CONFIGMAPS, params={
        "limit": 1, "continue": token, "resourceVersion": "0"})
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["b"]


# ---- immutable fields ---------------------------------------------------------------------------

@pytest.mark.parametrize("selector", [{"matchExpressions": []},
                                      {"matchLabels": {"app": "web"}, "matchExpressions": None}])
def test_an_empty_list_in_a_selector_is_the_same_selector(api: Api,
                                                          selector: dict[str, Any]) -> None:
    requests.post(api.url + DEPLOYMENTS, json=deployment())
    answer = requests.patch(f"{api.url}{DEPLOYMENTS}/web", json={"spec": {"selector": selector}},
                            headers={"Content-Type": "application/merge-patch+json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["spec"]["selector"]["matchLabels"] == {"app": "web"}
