"""Pure tests of the sandbox's patch formats, field ownership and selectors.

Covers JSON merge patch (RFC 7386 examples), JSON patch (RFC 6902 operations and
failures), strategic merge patch (merge keys, `$patch` directives), server-side
apply ownership (conflicts, force, removal of dropped fields, shared fields),
`managedFields` bookkeeping of ordinary updates, and label/field selectors.
"""

from __future__ import annotations

import copy

import pytest

from sandbox import fieldmanager, patching
from sandbox.resources import ApiError
from sandbox.selectors import (
    SelectorError,
    fields_match,
    label_selector_matches,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)

# ---- JSON merge patch -----------------------------------------------------------------------

RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386(target: object, patch: object, expected: object) -> None:
    assert patching.merge_patch(target, patch) == expected


def test_merge_patch_does_not_modify_its_input() -> None:
    target = {"a": {"b": 1}}
    patching.merge_patch(target, {"a": {"b": 2}})
    assert target == {"a": {"b": 1}}


# ---- JSON patch -----------------------------------------------------------------------------

DOC = {"spec": {"replicas": 1, "list": ["a", "b"], "a/b": {"~c": 1}}}


@pytest.mark.parametrize(("ops", "field", "expected"), [
    ([{"op": "add", "path": "/spec/x", "value": 2}], "x", 2),
    ([{"op": "add", "path": "/spec/list/1", "value": "z"}], "list", ["a", "z", "b"]),
    ([{"op": "add", "path": "/spec/list/-", "value": "z"}], "list", ["a", "b", "z"]),
    ([{"op": "remove", "path": "/spec/list/0"}], "list", ["b"]),
    ([{"op": "replace", "path": "/spec/replicas", "value": 5}], "replicas", 5),
    ([{"op": "move", "from": "/spec/list/0", "path": "/spec/list/-"}], "list", ["b", "a"]),
    ([{"op": "copy", "from": "/spec/list/0", "path": "/spec/list/0"}], "list", ["a", "a", "b"]),
    ([{"op": "test", "path": "/spec/replicas", "value": 1},
      {"op": "replace", "path": "/spec/a~1b/~0c", "value": 9}], "a/b", {"~c": 9}),
])
def test_json_patch_operations(ops: list[dict[str, object]], field: str, expected: object) -> None:
    result = patching.json_patch(DOC, ops)
    assert result["spec"][field] == expected
    assert DOC["spec"]["list"] == ["a", "b"], "the input is never modified"


@pytest.mark.parametrize("op", [
    {"op": "test", "path": "/spec/replicas", "value": 2},
    {"op": "remove", "path": "/spec/missing"},
    {"op": "replace", "path": "/spec/missing", "value": 1},
    {"op": "add", "path": "/nope/deeper", "value": 1},
    {"op": "remove", "path": "/spec/list/5"},
    {"op": "remove", "path": "/spec/list/\u00b2"},  # "²": a digit to str.isdigit, not to Go
    {"op": "add", "path": "/spec/list/\u0663", "value": "x"},  # Arabic-Indic 3
])
def test_json_patch_that_does_not_apply_is_refused(op: dict[str, object]) -> None:
    with pytest.raises(patching.JsonPatchError):
        patching.json_patch(DOC, [op])


def test_json_patch_must_be_a_list_of_operations() -> None:
    with pytest.raises(ApiError) as e:
        patching.json_patch(DOC, {"op": "add"})
    assert e.value.code == 400
    with pytest.raises(ApiError) as e:
        patching.json_patch(DOC, [{"op": "frobnicate", "path": "/spec"}])
    assert e.value.code == 400


# ---- strategic merge patch ------------------------------------------------------------------

def deployment(**container: object) -> dict[str, object]:
    base = {"name": "web", "image": "app:v1", "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 3000, "name": "http"}]}
    return {"spec": {"replicas": 1, "template": {"spec": {
        "containers": [{**base, **container}, {"name": "sidecar", "image": "proxy:1"}],
        "volumes": [{"name": "data", "emptyDir": {}}]}}}}


def containers(obj: dict[str, object]) -> list[dict[str, object]]:
    return obj["spec"]["template"]["spec"]["containers"]  # type: ignore[index,no-any-return]


def smp(patch: dict[str, object], original: dict[str, object] | None = None) -> dict[str, object]:
    return patching.strategic_merge(original or deployment(), patch, "Deployment")


def test_smp_merges_containers_by_name_and_env_by_name() -> None:
    out = smp({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "app:v2", "env": [{"name": "B", "value": "2"}]}]}}}})
    web, sidecar = containers(out)
    assert web["image"] == "app:v2"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert sidecar == {"name": "sidecar", "image": "proxy:1"}


def test_smp_merges_container_ports_by_container_port() -> None:
    out = smp({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "ports": [{"containerPort": 3000, "protocol": "TCP"},
                                  {"containerPort": 9090}]}]}}}})
    assert containers(out)[0]["ports"] == [
        {"containerPort": 3000, "name": "http", "protocol": "TCP"}, {"containerPort": 9090}]


def test_smp_merges_service_ports_by_port() -> None:
    service = {"spec": {"ports": [{"port": 80, "targetPort": 3000}, {"port": 443}]}}
    out = patching.strategic_merge(service, {"spec": {"ports": [{"port": 80, "name": "http"}]}},
                                   "Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 3000, "name": "http"},
                                    {"port": 443}]


def test_smp_delete_and_replace_directives() -> None:
    out = smp({"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}],
        "volumes": [{"name": "cache", "emptyDir": {}}, {"$patch": "replace"}]}}}})
    assert [c["name"] for c in containers(out)] == ["web"]
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "cache", "emptyDir": {}}]
    replaced = smp({"spec": {"template": {"$patch": "replace", "spec": {"containers": []}}}})
    assert replaced["spec"]["template"] == {"spec": {"containers": []}}


def test_smp_null_deletes_and_lists_without_merge_key_are_replaced() -> None:
    original = {"spec": {"replicas": 1, "args": ["a", "b"]}, "metadata": {"labels": {"x": "1"}}}
    out = patching.strategic_merge(
        original, {"spec": {"replicas": None, "args": ["c"]}, "metadata": {"labels": {"y": "2"}}},
        "Deployment")
    assert out == {"spec": {"args": ["c"]}, "metadata": {"labels": {"x": "1", "y": "2"}}}


def test_smp_finalizers_merge_as_a_set() -> None:
    out = patching.strategic_merge({"metadata": {"finalizers": ["a"]}},
                                   {"metadata": {"finalizers": ["a", "b"]}}, "Deployment")
    assert out["metadata"]["finalizers"] == ["a", "b"]


# ---- server-side apply -----------------------------------------------------------------------

def applied(replicas: int = 1, image: str = "app:v1", **labels: str) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", **labels}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image}]}}}}


def apply(live: dict[str, object] | None, config: dict[str, object], manager: str,
          force: bool = False) -> dict[str, object]:
    return fieldmanager.apply(live, config, manager, force=force, kind="Deployment", custom=False)


def managers(obj: dict[str, object]) -> dict[tuple[str, str], set[str]]:
    out = {}
    for entry in obj["metadata"]["managedFields"]:  # type: ignore[index]
        paths = fieldmanager.from_fields_v1(entry["fieldsV1"])
        out[(entry["manager"], entry["operation"])] = {fieldmanager.path_string(p) for p in paths}
    return out


def test_apply_records_the_fields_the_manager_sent() -> None:
    obj = apply(None, applied(), "bluegreen")
    owned = managers(obj)[("bluegreen", "Apply")]
    assert {".spec.replicas", ".metadata.labels.app",
            '.spec.template.spec.containers[name="web"].image'} <= owned
    assert obj["spec"]["replicas"] == 1


def test_apply_conflicts_with_another_manager_changing_a_field_it_owns() -> None:
    obj = apply(None, applied(replicas=1), "alice")
    with pytest.raises(ApiError) as e:
        apply(obj, applied(replicas=3), "bob")
    assert e.value.code == 409
    assert e.value.message == ('Apply failed with 1 conflict: conflict with "alice": '
                               ".spec.replicas")
    assert e.value.details["causes"][0]["field"] == ".spec.replicas"


def test_apply_with_the_same_value_shares_ownership_and_force_takes_it() -> None:
    obj = apply(None, applied(replicas=1), "alice")
    shared = apply(obj, applied(replicas=1), "bob")
    assert ".spec.replicas" in managers(shared)[("alice", "Apply")]
    assert ".spec.replicas" in managers(shared)[("bob", "Apply")]
    forced = apply(shared, applied(replicas=5, image="app:v2"), "bob", force=True)
    assert forced["spec"]["replicas"] == 5
    assert ".spec.replicas" not in managers(forced)[("alice", "Apply")]


def test_apply_removes_fields_the_manager_stopped_sending_unless_others_own_them() -> None:
    obj = apply(None, applied(tier="web", team="x"), "alice")
    obj = apply(obj, applied(team="x"), "bob")
    out = apply(obj, applied(), "alice")
    assert out["metadata"]["labels"] == {"app": "web", "team": "x"}, "tier removed, team kept"


def with_containers(*containers: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": list(containers)}}}}


def test_an_item_another_manager_still_owns_fields_in_keeps_its_key() -> None:
    web, side = {"name": "web", "image": "app:v1"}, {"name": "side", "image": "proxy:v1"}
    obj = apply(None, with_containers(web, side), "alice")
    new = copy.deepcopy(obj)
    new["spec"]["template"]["spec"]["containers"][1]["env"] = [{"name": "A", "value": "1"}]
    fieldmanager.record_update(obj, new, "kubectl-patch", kind="Deployment", custom=False)
    for _ in range(5):  # the outcome must not depend on the order paths are removed in
        out = apply(new, with_containers(web), "alice")
        assert out["spec"]["template"]["spec"]["containers"] == [
            web, {"name": "side", "env": [{"name": "A", "value": "1"}]}]
    gone = apply(obj, with_containers(web), "alice")
    assert gone["spec"]["template"]["spec"]["containers"] == [web], "nobody else owns side"


def test_update_takes_ownership_of_changed_fields() -> None:
    obj = apply(None, applied(replicas=1), "alice")
    new = {**obj, "spec": {**obj["spec"], "replicas": 4}}  # type: ignore[dict-item]
    fieldmanager.record_update(obj, new, "kubectl-scale", kind="Deployment", custom=False)
    assert managers(new)[("kubectl-scale", "Update")] == {".spec.replicas"}
    assert ".spec.replicas" not in managers(new)[("alice", "Apply")]
    with pytest.raises(ApiError) as e:
        apply(new, applied(replicas=1), "alice")
    assert 'conflict with "kubectl-scale" using apps/v1' in e.value.message


def test_custom_resource_lists_are_atomic() -> None:
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "vs"}, "spec": {"http": [{"route": [{"destination": {
              "host": "myapp", "subset": "blue"}}]}]}}
    obj = fieldmanager.apply(None, vs, "bg", force=False, kind="VirtualService", custom=True)
    assert managers(obj)[("bg", "Apply")] == {".spec.http"}


def test_manager_name_defaults_to_the_user_agent_product() -> None:
    assert fieldmanager.manager_name(None, "OpenAPI-Generator/37.0.2/python") == "OpenAPI-Generator"
    assert fieldmanager.manager_name("mine", "kubectl/v1.32") == "mine"


# ---- selectors --------------------------------------------------------------------------------

LABELS = {"app": "myapp", "color": "blue", "tier": "web"}


@pytest.mark.parametrize(("selector", "matches"), [
    ("", True),
    ("app=myapp", True),
    ("app==myapp,color=blue", True),
    ("app=other", False),
    ("color!=green", True),
    ("color!=blue", False),
    ("missing!=x", True),
    ("color in (blue,green)", True),
    ("color in (green)", False),
    ("color notin (green, red)", True),
    ("color notin (blue)", False),
    ("tier", True),
    ("missing", False),
    ("!missing", True),
    ("!tier", False),
    ("app=myapp, color in (blue), !legacy", True),
])
def test_label_selectors(selector: str, matches: bool) -> None:
    assert labels_match(parse_label_selector(selector), LABELS) is matches


@pytest.mark.parametrize("selector", ["app=", "=x", "color in blue", "a b", "app=my app", ",",
                                      "app=x,"])
def test_bad_label_selectors_are_refused(selector: str) -> None:
    if selector == "app=":  # an empty value is valid: it matches an empty label
        assert labels_match(parse_label_selector(selector), {"app": ""})
        return
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_label_selector_objects() -> None:
    selector = {"matchLabels": {"app": "myapp"},
                "matchExpressions": [{"key": "color", "operator": "In", "values": ["blue"]},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    assert label_selector_matches(selector, LABELS)
    assert not label_selector_matches(selector, {**LABELS, "legacy": "1"})
    assert selector_to_string(selector) == "app=myapp,color in (blue),!legacy"


def test_field_selectors() -> None:
    obj = {"metadata": {"name": "a", "namespace": "default"}, "status": {"phase": "Running"}}
    fields = ("metadata.name", "metadata.namespace", "status.phase")
    assert fields_match(parse_field_selector("metadata.name=a", fields), obj)
    assert fields_match(parse_field_selector("metadata.name==a,metadata.namespace!=x", fields),
                        obj)
    assert not fields_match(parse_field_selector("metadata.name!=a", fields), obj)
    assert fields_match(parse_field_selector("status.phase=Running", fields), obj)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.x"):
        parse_field_selector("spec.x=1", fields)
