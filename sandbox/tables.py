"""Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`.

Owns the columns kubectl shows per kind (as the real server's printers and the
Istio CRDs' printer columns define them) and the conversion of an object or a
list into a Table when a client asks for one with `Accept: ...;as=Table`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.resources import spec_of, status_of

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # name, type, priority, cell


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in (accept or "")


def age(obj: Obj) -> str:
    """A human duration since creation, as kubectl prints it (`45s`, `3m`, `2d`)."""
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"






def _containers(obj: Obj) -> list[Obj]:
    return list((((spec_of(obj).get("template") or {}).get("spec") or {}).get("containers")) or [])


def _selector(obj: Obj) -> str:
    labels = (spec_of(obj).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "<none>"


def _pod_ready(obj: Obj) -> str:
    statuses = status_of(obj).get("containerStatuses") or []
    total = len(spec_of(obj).get("containers") or []) or len(statuses)
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _ports(obj: Obj) -> str:
    parts = []
    for port in spec_of(obj).get("ports") or []:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        parts.append(f"{port.get('port')}{node}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _external_ip(obj: Obj) -> str:
    ingress = (status_of(obj).get("loadBalancer") or {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress]
    if ips:
        return ",".join(str(i) for i in ips)
    return "<pending>" if spec_of(obj).get("type") == "LoadBalancer" else "<none>"


def _restarts(obj: Obj) -> int:
    statuses = status_of(obj).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


NAME: Column = ("Name", "string", 0, lambda o: o["metadata"]["name"])
AGE: Column = ("Age", "string", 0, age)
COLUMNS: dict[str, list[Column]] = {
    "Deployment": [
        NAME,
        ("Ready", "string", 0, lambda o: f"{status_of(o).get('readyReplicas', 0)}/"
                                         f"{spec_of(o).get('replicas', 0)}"),
        ("Up-to-date", "integer", 0, lambda o: status_of(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: status_of(o).get("availableReplicas", 0)),
        AGE,
        ("Containers", "string", 1, lambda o: ",".join(c.get("name", "") for c in _containers(o))),
        ("Images", "string", 1, lambda o: ",".join(c.get("image", "") for c in _containers(o))),
        ("Selector", "string", 1, _selector),
    ],
    "ReplicaSet": [
        NAME,
        ("Desired", "integer", 0, lambda o: spec_of(o).get("replicas", 0)),
        ("Current", "integer", 0, lambda o: status_of(o).get("replicas", 0)),
        ("Ready", "integer", 0, lambda o: status_of(o).get("readyReplicas", 0)),
        AGE,
    ],
    "Pod": [
        NAME, ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, lambda o: status_of(o).get("phase", "Unknown")),
        ("Restarts", "string", 0, lambda o: str(_restarts(o))), AGE,
        ("IP", "string", 1, lambda o: status_of(o).get("podIP") or "<none>"),
        ("Node", "string", 1, lambda o: spec_of(o).get("nodeName") or "<none>"),
    ],
    "Service": [
        NAME, ("Type", "string", 0, lambda o: spec_of(o).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: spec_of(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", 0, _external_ip), ("Port(s)", "string", 0, _ports), AGE,
        ("Selector", "string", 1, lambda o: ",".join(
            f"{k}={v}" for k, v in (spec_of(o).get("selector") or {}).items()) or "<none>"),
    ],
    "Namespace": [NAME, ("Status", "string", 0, lambda o: status_of(o).get("phase", "")), AGE],
    "ConfigMap": [NAME, ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    "Secret": [NAME, ("Type", "string", 0, lambda o: o.get("type", "")),
               ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    "Event": [
        ("Last Seen", "string", 0, age), ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: "{}/{}".format(
            str((o.get("involvedObject") or {}).get("kind", "")).lower(),
            (o.get("involvedObject") or {}).get("name", ""))),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
    "VirtualService": [
        NAME, ("Gateways", "string", 0, lambda o: spec_of(o).get("gateways")),
        ("Hosts", "string", 0, lambda o: spec_of(o).get("hosts")), AGE,
    ],
    "DestinationRule": [NAME, ("Host", "string", 0, lambda o: spec_of(o).get("host")), AGE],
}


def _row(obj: Obj, columns: list[Column], include_object: str) -> Obj:
    row: Obj = {"cells": [cell(obj) for _, _, _, cell in columns]}
    if include_object == "Object":
        row["object"] = obj
    elif include_object == "Metadata":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": obj.get("metadata") or {}}
    return row


def to_table(body: Obj, *, include_object: str = "Metadata") -> Obj:
    """A Table for an object or a list (`...List` with items) of one kind."""
    items = body.get("items")
    objects = list(items) if isinstance(items, list) else [body]
    kind = body.get("kind", "")
    kind = kind[:-4] if isinstance(items, list) and kind.endswith("List") else kind
    columns = COLUMNS.get(kind, [NAME, AGE])
    meta = body.get("metadata") or {}
    paging = {k: meta[k] for k in ("continue", "remainingItemCount") if k in meta}
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": meta.get("resourceVersion", ""), **paging},
        "columnDefinitions": [{"name": name, "type": kind_, "format": "name" if name == "Name"
                               else "", "description": name, "priority": priority}
                              for name, kind_, priority, _ in columns],
        "rows": [_row(o, columns, include_object) for o in objects],
    }
