"""Discovery documents: what `/version`, `/api`, `/apis`, `/apis/G` and `/apis/G/V` answer.

Owns the shape of the legacy discovery API (APIVersions, APIGroupList, APIGroup,
APIResourceList) built from the resource catalogue, so kubectl's RESTMapper and
the Python client's DynamicClient find every kind, short name and subresource.
Clients asking for aggregated discovery (apidiscovery.k8s.io/v2) get these
legacy documents with a plain `application/json` content type, which tells them
to fall back, as an older server would.
"""

from __future__ import annotations

from typing import Any

from sandbox.resources import RESOURCES, ResourceType

Obj = dict[str, Any]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CORE_VERSION = "v1"
PREFERRED = {"apps": "v1", "networking.istio.io": "v1"}


def version_info() -> Obj:
    return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-sandbox",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc",
            "platform": "linux/amd64"}


def api_versions(server_address: str) -> Obj:
    return {"kind": "APIVersions", "versions": [CORE_VERSION],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in RESOURCES.values():
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    return groups


def api_group(group: str) -> Obj | None:
    versions = _groups().get(group)
    if not versions:
        return None
    preferred = PREFERRED.get(group, versions[0])

    def entry(version: str) -> Obj:
        return {"groupVersion": f"{group}/{version}", "version": version}

    return {"kind": "APIGroup", "apiVersion": "v1", "name": group,
            "versions": [entry(v) for v in versions], "preferredVersion": entry(preferred)}


def api_group_list() -> Obj:
    groups = [api_group(g) for g in _groups()]
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")}
                       for g in groups if g]}


def _entries(rt: ResourceType) -> list[Obj]:
    main: Obj = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind,
                 "verbs": [v for v in VERBS if v != "deletecollection" or rt.kind != "Namespace"]}
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    if rt.categories:
        main["categories"] = list(rt.categories)
    out = [main]
    if rt.has_status:
        out.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                    "kind": rt.kind, "verbs": ["get", "patch", "update"]})
    if rt.has_scale:
        out.append({"name": f"{rt.plural}/scale", "singularName": "", "namespaced": rt.namespaced,
                    "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get", "patch", "update"]})
    if rt.kind == "Pod":
        out.append({"name": "pods/exec", "singularName": "", "namespaced": True,
                    "kind": "PodExecOptions", "verbs": ["create", "get"]})
        out.append({"name": "pods/log", "singularName": "", "namespaced": True,
                    "kind": "Pod", "verbs": ["get"]})
    return out


def resource_list(group: str, version: str) -> Obj | None:
    """The APIResourceList for a group version ("" group is the core /api/v1)."""
    types = [rt for rt in RESOURCES.values() if rt.group == group and rt.version == version]
    if not types:
        return None
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [entry for rt in types for entry in _entries(rt)]}


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
    return RESOURCES.get(key)


def _group_versions() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for rt in RESOURCES.values():
        if (rt.group, rt.version) not in seen:
            seen.append((rt.group, rt.version))
    return seen


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_index() -> Obj:
    """`/openapi/v3`: where each group version's document lives."""
    return {"paths": {_gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}"
                                                            "?hash=sandbox"}
                      for g, v in _group_versions()}}


def openapi_v3_document(path: str) -> Obj | None:
    """A minimal OpenAPI v3 document for `api/v1` or `apis/G/V`.

    It lists each resource's PATCH operation with its group-version-kind and the
    `fieldValidation` query parameter: enough for kubectl to see that the server
    validates fields itself, so it skips client-side schema validation.
    """
    match = [(g, v) for g, v in _group_versions() if _gv_path(g, v) == path.strip("/")]
    if not match:
        return None
    group, version = match[0]
    paths: Obj = {}
    for rt in RESOURCES.values():
        if (rt.group, rt.version) != (group, version):
            continue
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        url = f"/{_gv_path(group, version)}{scope}/{rt.plural}/{{name}}"
        gvk = {"group": group, "version": version, "kind": rt.kind}
        params = [{"name": name, "in": "query", "schema": {"type": "string"}}
                  for name in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths[url] = {"patch": {"operationId": f"patch{rt.kind}", "parameters": params,
                                "x-kubernetes-action": "patch",
                                "x-kubernetes-group-version-kind": gvk,
                                "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {}}
