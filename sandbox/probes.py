"""Readiness probes for sandbox pods, on a compressed clock.

Owns turning a container's `readinessProbe` into a `Probe` and running one check.
`httpGet` (path; port = a containerPort number or name, mapped to the pod's real
local port; 2xx/3xx succeed), `tcpSocket` and `exec` are honoured. Without a probe
a pod is ready once its process accepts connections. Times are scaled down so
pods become ready within about a second: `initialDelaySeconds` and
`periodSeconds` x0.1 (period clamped to 0.1-0.5 s, delay to at most 1 s);
`timeoutSeconds` is capped at 1 s; `failureThreshold` (3) and `successThreshold`
(1) count checks as usual. Liveness and startup probes are not run.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from dataclasses import dataclass, replace
from typing import Any

from sandbox.pods import container_port
from sandbox.resources import ascii_digits

TIME_SCALE = 0.1


@dataclass(frozen=True)
class Probe:
    """One readiness check and its timing, in real (scaled) seconds."""

    kind: str  # "http", "tcp", "exec" or "listen" (no probe declared)
    port: int | None = None  # None: the declared port is unknown, the check fails
    path: str = "/"
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 0.1
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


def _target_port(container: dict[str, Any], port: Any, real: int) -> int | None:
    """A probe's port (number or name) → the real port, when it names the container's."""
    declared = [p for p in container.get("ports") or [] if p.get("containerPort")]
    if isinstance(port, str) and not ascii_digits(port):
        named = [p for p in declared if p.get("name") == port]
        return real if named else None
    if not declared or int(port) in {int(p["containerPort"]) for p in declared}:
        return real
    return None


def from_container(container: dict[str, Any], real_port: int) -> Probe:
    """The readiness Probe for a container whose process listens on `real_port`."""
    spec = container.get("readinessProbe")
    if not spec:
        return Probe("listen", port=real_port)
    timed = Probe(
        "listen", port=real_port,
        initial_delay=min(float(spec.get("initialDelaySeconds", 0)) * TIME_SCALE, 1.0),
        period=min(max(float(spec.get("periodSeconds", 10)) * TIME_SCALE, 0.1), 0.5),
        timeout=min(float(spec.get("timeoutSeconds", 1)), 1.0),
        failure_threshold=int(spec.get("failureThreshold", 3)),
        success_threshold=int(spec.get("successThreshold", 1)))
    default_port = container_port(container) or real_port
    if "httpGet" in spec:
        get = spec["httpGet"]
        return replace(timed, kind="http", path=str(get.get("path") or "/"),
                       port=_target_port(container, get.get("port", default_port), real_port))
    if "tcpSocket" in spec:
        port = spec["tcpSocket"].get("port", default_port)
        return replace(timed, kind="tcp", port=_target_port(container, port, real_port))
    if "exec" in spec:
        return replace(timed, kind="exec", command=tuple(spec["exec"].get("command") or ()))
    return timed


def check(probe: Probe, env: dict[str, str], cwd: str | None = None) -> bool:
    """Run one check; any error counts as a failure."""
    try:
        if probe.kind == "exec":
            if not probe.command:
                return False
            result = subprocess.run(list(probe.command), env=env, cwd=cwd, timeout=probe.timeout,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, check=False)
            return result.returncode == 0
        if probe.port is None:
            return False
        if probe.kind == "http":
            conn = http.client.HTTPConnection("127.0.0.1", probe.port, timeout=probe.timeout)
            try:
                conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/sandbox"})
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        with socket.create_connection(("127.0.0.1", probe.port), timeout=probe.timeout):
            return True
    except (OSError, http.client.HTTPException, subprocess.SubprocessError):
        return False
