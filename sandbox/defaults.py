"""Defaulting and validation applied on every write, as the real API server's
strategies do for the kinds the sandbox serves.

Owns what a JSON null means on the way in (an unset field, as Go's decoder
reads it) and the few defaults clients and controllers rely on (Deployment replicas
and strategy, container pull policy, Service ClusterIP/ports, Pod phase,
Namespace phase), and what a create alone sets (a Namespace's `kubernetes`
finalizer). Fields and their JSON types are checked before, by
`sandbox.decoding`; the result is validated after, by `sandbox.validation`.
"""

from __future__ import annotations

import itertools
from typing import Any

from sandbox.resources import ResourceType

Obj = dict[str, Any]

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
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")


def prepare_for_create(rt: ResourceType, obj: Obj) -> None:
    """What a kind's strategy sets on create only (PrepareForCreate): a Namespace always
    gets the `kubernetes` finalizer, after any it was sent with; later writes cannot put
    it back once the namespace controller has removed it."""
    if rt.kind == "Namespace":
        spec = obj.setdefault("spec", {})
        finalizers = list(spec.get("finalizers") or [])
        if "kubernetes" not in finalizers:
            spec["finalizers"] = [*finalizers, "kubernetes"]


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
