"""Defaulting and validation applied on every write, as the real API server's
strategies do for the kinds the sandbox serves.

Owns what a JSON null means on the way in (an unset field, as Go's decoder
reads it), the few defaults clients and controllers rely on (Deployment replicas
and strategy, container pull policy, Service ClusterIP/ports, Pod phase,
Namespace phase) and the validation errors worth being faithful to (names,
Deployment selectors and rolling-update parameters). Fields and their JSON types
are checked before, by `sandbox.decoding`.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from sandbox.resources import ApiError, ResourceType, invalid
from sandbox.selectors import label_selector_matches

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_cluster_ips = itertools.count(10)
_node_ports = itertools.count(30000)


def drop_nulls(value: Any) -> Any:
    """The object without its JSON nulls: decoding into Go structs leaves a null field
    unset (a nil pointer, map or slice; a zero value otherwise), so the real server never
    stores one, and defaulting then fills such a field in (`replicas: null` becomes 1)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value if v is not None]
    return value


def apply_defaults(rt: ResourceType, obj: Obj) -> None:
    """Fill in defaults in place; safe to run on every create and update."""
    spec = obj.get("spec")
    if rt.kind in ("Deployment", "ReplicaSet") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_pod_spec((spec.get("template") or {}).get("spec"))
        if rt.kind == "ReplicaSet" and isinstance(obj.get("status"), dict):
            obj["status"].setdefault("replicas", 0)  # not omitempty in the real API
        if rt.kind == "Deployment":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            _default_strategy(spec)
    elif rt.kind == "Pod":
        _default_pod_spec(spec)
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", "BestEffort")
    elif rt.kind == "Service":
        _default_service(obj)
    elif rt.kind == "Namespace":
        meta = obj.setdefault("metadata", {})
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")


def _default_strategy(spec: Obj) -> None:
    """SetDefaults_Deployment: RollingUpdate, and each of its two fences 25% when unset."""
    strategy = spec.setdefault("strategy", {})
    if not isinstance(strategy, dict):
        return
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        if isinstance(rolling, dict):
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")


def _default_pod_spec(spec: Obj | None) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image") or "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        always = tag in ("", "latest") and "@" not in image
        container.setdefault("imagePullPolicy", "Always" if always else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or ():
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _default_service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if kind != "ExternalName":
        if not spec.get("clusterIP"):
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250 % 250}.{n % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or ():
        if not isinstance(port, dict):
            continue
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
        if kind in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
            port["nodePort"] = next(_node_ports)
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def validate(rt: ResourceType, obj: Obj) -> None:
    """Raise ApiError 422 Invalid, naming every field in error, for what the real server rejects."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    if not _SUBDOMAIN.match(name) or len(name) > 253:
        raise invalid(rt, name, [("metadata.name", (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'example.com', regex used for validation is "
            r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))])
    errors: list[tuple[str, str]] = []
    if rt.kind in ("Deployment", "ReplicaSet"):
        errors += _validate_workload(obj.get("spec"))
    if rt.kind == "Deployment" and isinstance(obj.get("spec"), dict):
        errors += _validate_strategy(obj["spec"].get("strategy") or {})
    if errors:
        raise invalid(rt, name, errors)
    if not isinstance(obj.get("metadata", {}).get("labels", {}), dict):
        raise ApiError(400, "BadRequest", "metadata.labels must be a map of strings")


def _validate_workload(spec: Any) -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [("spec.template.spec.containers", "Required value")]
    selector = spec.get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return [("spec.selector", "Required value")]
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not label_selector_matches(selector, labels):
        shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
        return [("spec.template.metadata.labels",
                 f"Invalid value: map[string]string{{{shown}}}: "
                 "`selector` does not match template `labels`")]
    return _validate_pod_spec(template.get("spec"), "spec.template.spec")


def _validate_pod_spec(spec: Any, path: str) -> list[tuple[str, str]]:
    """validateContainers (pkg/apis/core/validation): containers, each named, each an image."""
    containers = (spec or {}).get("containers") if isinstance(spec, dict) else None
    if not containers:
        return [(f"{path}.containers", "Required value")]
    errors: list[tuple[str, str]] = []
    for index, container in enumerate(containers):
        where = f"{path}.containers[{index}]"
        if not container.get("name"):
            errors.append((f"{where}.name", "Required value"))
        if not container.get("image"):
            errors.append((f"{where}.image", "Required value"))
    return errors


_PERCENT = re.compile(r"^[0-9]+%$")
_PERCENT_MESSAGE = ("a valid percent string must be a numeric string followed by an ending '%' "
                    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")


def _intstr(value: Any) -> str:
    """How Go prints an IntOrString value in a field error (`%#v` of the struct)."""
    if isinstance(value, str):
        return f'intstr.IntOrString{{Type:1, IntVal:0, StrVal:{json.dumps(value)}}}'
    return f'intstr.IntOrString{{Type:0, IntVal:{value}, StrVal:""}}'


def _fence(value: Any) -> int | None:
    """An IntOrString's number (a percent's digits), None when it is not valid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    return None


def _validate_strategy(strategy: Obj) -> list[tuple[str, str]]:
    """ValidateRollingUpdateDeployment (pkg/apis/apps/validation): each fence a non-negative
    int or a percent, not both 0, maxUnavailable at most 100%."""
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") != "RollingUpdate" or not isinstance(rolling, dict):
        return []
    errors: list[tuple[str, str]] = []
    path = "spec.strategy.rollingUpdate"
    for key in ("maxUnavailable", "maxSurge"):
        value = rolling.get(key)
        if isinstance(value, str) and not _PERCENT.match(value):
            errors.append((f"{path}.{key}", f"Invalid value: {_intstr(value)}: {_PERCENT_MESSAGE}"))
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            errors.append((f"{path}.{key}",
                           f"Invalid value: {value}: must be greater than or equal to 0"))
    unavailable, surge = _fence(rolling.get("maxUnavailable")), _fence(rolling.get("maxSurge"))
    if unavailable == 0 and surge == 0:
        errors.append((f"{path}.maxUnavailable", f"Invalid value: "
                       f"{_intstr(rolling['maxUnavailable'])}: may not be 0 when `maxSurge` is 0"))
    value = rolling.get("maxUnavailable")
    if isinstance(value, str) and unavailable is not None and unavailable > 100:
        errors.append((f"{path}.maxUnavailable",
                       f"Invalid value: {_intstr(value)}: must not be greater than 100%"))
    return errors
