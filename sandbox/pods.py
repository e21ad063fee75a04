"""What a sandbox pod's process is, read from the Pod object alone (pure helpers).

The kubelet starts pods with these and exec runs commands with them, so both see
the same environment: the first container's `env` (`value` entries, plus
`valueFrom.fieldRef` for the pod's name, namespace, IP and labels; Secret and
ConfigMap references are not resolved and are left out), then the sandbox's own
`SANDBOX_VERSION` (image tag; `latest` when untagged), `SANDBOX_COLOR` (label
`color`), `SANDBOX_POD`, `SANDBOX_NAMESPACE`, `PORT` (the real local port),
`SANDBOX_CONTAINER_PORT` (the declared containerPort) and `HOSTNAME`. On top of a
small base of the host's environment (`PATH` with this Python's directory first,
so `python` means the sandbox's interpreter; `HOME`, `LANG`, ...).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox.resources import ascii_digits

PORT_ANNOTATION = "sandbox.bluegreen.dev/port"
DIR_ANNOTATION = "sandbox.bluegreen.dev/dir"
CONTAINER_ID_PREFIX = "sandbox://"
BASE_ENV_KEYS = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT", "USER")
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # where `import sandbox` works

Obj = dict[str, Any]


def image_tag(image: str) -> str:
    """`registry:5000/acme/myapp:v2.0@sha256:..` → `v2.0`; untagged → `latest`."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def first_container(pod: Obj) -> Obj:
    """The container the sandbox runs (pods run one process; others are ignored)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    container: Obj = containers[0]
    return container


def real_port(pod: Obj) -> int | None:
    """The local port the kubelet gave the pod's process, once it has one."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(PORT_ANNOTATION)
    return int(value) if value is not None and ascii_digits(str(value)) else None


def container_port(container: Obj) -> int | None:
    """The first declared containerPort, if any."""
    for port in container.get("ports") or []:
        if port.get("containerPort"):
            return int(port["containerPort"])
    return None


def pod_dir(pod: Obj) -> Path | None:
    """The pod's working directory (its 'filesystem'), set by the kubelet."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DIR_ANNOTATION)
    return Path(value) if value else None


_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field_ref(pod: Obj, path: str) -> str | None:
    meta = pod.get("metadata") or {}
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "status.podIP": "127.0.0.1",
              "status.hostIP": "127.0.0.1", "spec.nodeName": "sandbox"}
    if path in simple:
        return simple[path]
    match = _FIELD_LABEL.fullmatch(path)
    if match:
        value = (meta.get(match.group(1)) or {}).get(match.group(2))
        return None if value is None else str(value)
    return None


def container_env(pod: Obj) -> dict[str, str]:
    """The first container's `env` as the process sees it (see module docstring)."""
    env: dict[str, str] = {}
    for item in first_container(pod).get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if "value" in item:
            env[name] = "" if item["value"] is None else str(item["value"])
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            value = _field_ref(pod, item["valueFrom"]["fieldRef"].get("fieldPath", ""))
            if value is not None:
                env[name] = value
    return env


def pod_env(pod: Obj) -> dict[str, str]:
    """Container env plus the sandbox's variables (they win over the container's)."""
    meta = pod.get("metadata") or {}
    container = first_container(pod)
    port = real_port(pod)
    declared = container_port(container)
    env = container_env(pod)
    env.update({
        "SANDBOX_VERSION": image_tag(str(container.get("image") or "")),
        "SANDBOX_COLOR": str((meta.get("labels") or {}).get("color", "")),
        "SANDBOX_POD": str(meta.get("name", "")),
        "SANDBOX_NAMESPACE": str(meta.get("namespace", "default")),
        "SANDBOX_CONTAINER_PORT": "" if declared is None else str(declared),
        "HOSTNAME": str(meta.get("name", "")),
    })
    if port is not None:
        env["PORT"] = str(port)
    return env


def process_env(pod: Obj, host_env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The full environment of the pod's process and of commands exec'd in it."""
    path = os.pathsep.join([str(Path(sys.executable).parent),
                            host_env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    pythonpath = os.pathsep.join(p for p in (str(SOURCE_ROOT), host_env.get("PYTHONPATH")) if p)
    base = {key: host_env[key] for key in BASE_ENV_KEYS if key in host_env}
    base.update({"PATH": path, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"})
    return {**base, **pod_env(pod)}


def running_container_pid(pod: Obj) -> int | None:
    """The pid of the pod's running process, from `containerStatuses[0]`, if running."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses or "running" not in (statuses[0].get("state") or {}):
        return None
    container_id = str(statuses[0].get("containerID") or "")
    pid = container_id.removeprefix(CONTAINER_ID_PREFIX)
    return int(pid) if ascii_digits(pid) else None
