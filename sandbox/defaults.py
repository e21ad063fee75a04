"""Defaulting and validation applied on every write, as the real API server's
strategies do for the kinds the sandbox serves.

Owns the few defaults clients and controllers rely on (Deployment replicas and
strategy, container pull policy, Service ClusterIP/ports, Pod phase, Namespace
phase) and the validation errors worth being faithful to (names, Deployment
selectors). Anything not listed here is stored as sent.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from sandbox.resources import ApiError, ResourceType, invalid
from sandbox.selectors import label_selector_matches

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_cluster_ips = itertools.count(10)
_node_ports = itertools.count(30000)


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
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
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
    """Raise ApiError 422 Invalid for the mistakes the real server rejects."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    if not _SUBDOMAIN.match(name) or len(name) > 253:
        raise invalid(rt, name, [("metadata.name", (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'example.com', regex used for validation is "
            r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))])
    if rt.kind in ("Deployment", "ReplicaSet"):
        _validate_workload(rt, name, obj.get("spec"))
    if not isinstance(obj.get("metadata", {}).get("labels", {}), dict):
        raise ApiError(400, "BadRequest", "metadata.labels must be a map of strings")


def _validate_workload(rt: ResourceType, name: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise invalid(rt, name, [("spec.template.spec.containers", "Required value")])
    selector = spec.get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        raise invalid(rt, name, [("spec.selector", "Required value")])
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not label_selector_matches(selector, labels):
        shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
        raise invalid(rt, name, [("spec.template.metadata.labels",
                                  f"Invalid value: map[string]string{{{shown}}}: "
                                  "`selector` does not match template `labels`")])
    containers = (template.get("spec") or {}).get("containers")
    if not containers:
        raise invalid(rt, name, [("spec.template.spec.containers", "Required value")])
