"""Istio ingress-gateway routing decisions, as pure functions over plain objects.

Given a request (host, method, path, headers) and a snapshot of the cluster's
Gateways, VirtualServices, DestinationRules, Services and Pods, `decide()` says
where Istio's ingress gateway would send it, or which error it would answer:

1. Gateways bound to the ingress (`spec.selector` ⊆ the ingress labels,
   `istio=ingressgateway`) whose `servers[].hosts` accept the Host header
   (ports are not compared: the sandbox ingress listens on one port);
2. VirtualServices naming such a Gateway in `spec.gateways` (`name` or `ns/name`)
   with a host matching the Host header (`*`, `*.suffix`, exact); the oldest wins;
3. its `spec.http` routes in order: a route matches when any entry of `match`
   matches (no `match` = always); an entry ANDs `uri`, `method`, `authority`,
   `headers`, `withoutHeaders`, `queryParams` (`exact`/`prefix`/`regex`, regex with
   RE2 full-match semantics; `ignoreUriCase` for exact and prefix URIs);
4. a weighted pick among the route's destinations (`weight`; a lone one gets 100);
5. destination host (`myapp`, `myapp.ns`, `myapp.ns.svc.cluster.local`) → Service;
   `subset` → labels from the DestinationRule for that host; endpoints = Ready pods
   matching the Service selector and the subset labels, with their real port.

Answers as Envoy gives them: 404 when nothing routes, 503 "no healthy upstream"
when the subset is undefined or nothing is ready. Rewrites, redirects, retries,
faults, mirrors and header manipulation are not modelled. Forwarding, round-robin
and sockets are `sandbox.ingress`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.resources import ascii_digits, meta_of, spec_of

PORT_ANNOTATION = "sandbox.bluegreen.dev/port"
INGRESS_LABELS: Mapping[str, str] = {"istio": "ingressgateway", "app": "istio-ingressgateway"}

Obj = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """What routing looks at; header names are lower-case."""

    host: str
    method: str
    path: str  # with the query string, as sent
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The cluster objects routing reads, as the API would return them."""

    gateways: list[Obj] = field(default_factory=list)
    virtualservices: list[Obj] = field(default_factory=list)
    destinationrules: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)


@dataclass(frozen=True)
class Backend:
    """One ready endpoint: a pod and the local port its process listens on."""

    namespace: str
    pod: str
    port: int


@dataclass(frozen=True)
class Decision:
    """Forward to one of `backends` (status 200) or answer `status` with `reason`."""

    status: int
    reason: str
    backends: tuple[Backend, ...] = ()
    virtualservice: str | None = None
    service: str | None = None
    subset: str | None = None

    @property
    def is_forward(self) -> bool:
        return self.status == 200






def strip_port(host: str) -> str:
    """`example.com:8080` → `example.com`; IPv6 literals keep their brackets."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def host_matches(pattern: str, host: str) -> bool:
    """Istio host matching: `*`, `*.suffix` or an exact name (case-insensitive)."""
    pattern, host = pattern.lower(), strip_port(host).lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def _gateway_host_matches(pattern: str, host: str) -> bool:
    # Gateway server hosts may carry a namespace filter: `ns/host` or `*/host`.
    return host_matches(pattern.split("/", 1)[-1], host)


def bound_gateways(gateways: list[Obj], host: str) -> set[str]:
    """`ns/name` of Gateways selecting the ingress and accepting `host`."""
    bound: set[str] = set()
    for gw in gateways:
        selector = spec_of(gw).get("selector") or {}
        if any(INGRESS_LABELS.get(k) != v for k, v in selector.items()):
            continue
        servers = spec_of(gw).get("servers") or []
        if any(_gateway_host_matches(h, host) for s in servers for h in s.get("hosts") or []):
            bound.add(f"{meta_of(gw).get('namespace', 'default')}/{meta_of(gw).get('name')}")
    return bound


def _vs_gateways(vs: Obj) -> set[str]:
    ns = meta_of(vs).get("namespace", "default")
    names = spec_of(vs).get("gateways") or []
    return {name if "/" in name else f"{ns}/{name}" for name in names}


def find_virtualservice(snapshot: Snapshot, host: str) -> Obj | None:
    """The VirtualService the ingress uses for `host`: bound, host-matching, oldest."""
    gateways = bound_gateways(snapshot.gateways, host)
    candidates = [
        vs for vs in snapshot.virtualservices
        if _vs_gateways(vs) & gateways
        and any(host_matches(h, host) for h in spec_of(vs).get("hosts") or [])
    ]
    candidates.sort(key=lambda vs: (meta_of(vs).get("creationTimestamp") or "",
                                    meta_of(vs).get("namespace", ""), meta_of(vs).get("name", "")))
    return candidates[0] if candidates else None


def string_matches(spec: Mapping[str, Any] | None, value: str | None,
                   *, ignore_case: bool = False) -> bool:
    """Istio StringMatch: `exact`, `prefix` or `regex` (full match). `{}` = present.

    `ignore_case` (HTTPMatchRequest.ignoreUriCase) applies to `exact` and `prefix` only,
    as Istio documents it; a regex matches as written.
    """
    if value is None:
        return False
    if not spec:
        return True
    if "exact" in spec:
        expected = str(spec["exact"])
        return value.lower() == expected.lower() if ignore_case else value == expected
    if "prefix" in spec:
        prefix = str(spec["prefix"])
        return (value.lower().startswith(prefix.lower()) if ignore_case
                else value.startswith(prefix))
    if "regex" in spec:
        try:
            return re.fullmatch(str(spec["regex"]), value) is not None
        except re.error:
            return False  # Istio rejects the config; an invalid regex never matches
    return False


def _query_params(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))


def request_matches(match: Mapping[str, Any], req: Request) -> bool:
    """One HTTPMatchRequest: every condition it names must hold."""
    uri = req.path.split("?", 1)[0]
    if "uri" in match and not string_matches(match["uri"], uri,
                                             ignore_case=bool(match.get("ignoreUriCase"))):
        return False
    if "method" in match and not string_matches(match["method"], req.method):
        return False
    if "authority" in match and not string_matches(match["authority"], req.host):
        return False
    for name, spec in (match.get("headers") or {}).items():
        if not string_matches(spec, req.headers.get(name.lower())):
            return False
    for name, spec in (match.get("withoutHeaders") or {}).items():
        if string_matches(spec, req.headers.get(name.lower())):
            return False
    params = _query_params(req.path) if match.get("queryParams") else {}
    return all(string_matches(spec, params.get(name))
               for name, spec in (match.get("queryParams") or {}).items())


def match_route(vs: Obj, req: Request) -> Obj | None:
    """The first `spec.http` route whose `match` list matches (no list = match)."""
    for route in spec_of(vs).get("http") or []:
        matches = route.get("match")
        if not matches or any(request_matches(m, req) for m in matches):
            route_obj: Obj = route
            return route_obj
    return None


def pick_destination(route: Obj, rnd: float) -> Obj | None:
    """A weighted choice among `route[].destination`; `rnd` is uniform in [0, 1)."""
    entries = route.get("route") or []
    if not entries:
        return None
    weights = [int(e.get("weight", 0) or 0) for e in entries]
    if sum(weights) <= 0:
        weights = [1] * len(entries)  # a lone (or unweighted) destination takes it all
    point = rnd * sum(weights)
    for entry, weight in zip(entries, weights, strict=True):
        if point < weight:
            return entry.get("destination") or {}
        point -= weight
    return entries[-1].get("destination") or {}


def service_name(host: str, namespace: str) -> tuple[str, str]:
    """Destination host → (Service name, namespace): short, `name.ns`, or FQDN."""
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], namespace
    return parts[0], parts[1]


def subset_labels(snapshot: Snapshot, service: str, namespace: str,
                  subset: str) -> Mapping[str, str] | None:
    """The labels of `subset` in a DestinationRule for that Service, or None."""
    for dr in snapshot.destinationrules:
        dr_ns = meta_of(dr).get("namespace", "default")
        if service_name(str(spec_of(dr).get("host", "")), dr_ns) != (service, namespace):
            continue
        for entry in spec_of(dr).get("subsets") or []:
            if entry.get("name") == subset:
                labels: Mapping[str, str] = entry.get("labels") or {}
                return labels
    return None


def is_pod_ready(pod: Obj) -> bool:
    """Ready condition True and not being deleted."""
    if meta_of(pod).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ready_backends(snapshot: Snapshot, selector: Mapping[str, str],
                   namespace: str) -> tuple[Backend, ...]:
    """Ready pods in `namespace` carrying every label of `selector`, by name."""
    found = []
    for pod in snapshot.pods:
        meta = meta_of(pod)
        labels = meta.get("labels") or {}
        port = (meta.get("annotations") or {}).get(PORT_ANNOTATION)
        if (meta.get("namespace", "default") == namespace and port and ascii_digits(str(port))
                and all(labels.get(k) == v for k, v in selector.items()) and is_pod_ready(pod)):
            found.append(Backend(namespace, meta["name"], int(port)))
    return tuple(sorted(found, key=lambda b: b.pod))


def resolve(snapshot: Snapshot, destination: Obj, vs_namespace: str) -> Decision:
    """Destination → ready backends, or the 503 Envoy would answer."""
    name, ns = service_name(str(destination.get("host", "")), vs_namespace)
    subset = destination.get("subset")
    service = next((s for s in snapshot.services
                    if meta_of(s).get("name") == name
                    and meta_of(s).get("namespace", "default") == ns), None)
    if service is None:
        return Decision(503, f"no healthy upstream: no Service {ns}/{name}", service=name,
                        subset=subset)
    selector = dict(spec_of(service).get("selector") or {})
    if subset:
        labels = subset_labels(snapshot, name, ns, str(subset))
        if labels is None:
            return Decision(503, f"no healthy upstream: subset {subset!r} is not defined "
                            f"in a DestinationRule for {name}", service=name, subset=subset)
        selector.update(labels)
    backends = ready_backends(snapshot, selector, ns) if spec_of(service).get("selector") else ()
    if not backends:
        return Decision(503, "no healthy upstream", service=name, subset=subset)
    return Decision(200, "forward", backends, service=name, subset=subset)


def decide(req: Request, snapshot: Snapshot, rnd: float = 0.0) -> Decision:
    """Where the ingress gateway sends `req`; `rnd` drives the weighted pick."""
    vs = find_virtualservice(snapshot, req.host)
    if vs is None:
        return Decision(404, f"no VirtualService bound to the ingress for host {req.host!r}")
    vs_name = f"{meta_of(vs).get('namespace', 'default')}/{meta_of(vs).get('name')}"
    route = match_route(vs, req)
    if route is None:
        return Decision(404, f"no route of {vs_name} matches", virtualservice=vs_name)
    destination = pick_destination(route, rnd)
    if destination is None:
        return Decision(404, f"a route of {vs_name} has no destination", virtualservice=vs_name)
    decision = resolve(snapshot, destination, meta_of(vs).get("namespace", "default"))
    return Decision(decision.status, decision.reason, decision.backends, vs_name,
                    decision.service, decision.subset)
