"""The processes behind `make demo`, and how the demo speaks to them over HTTP.

Owns starting each process in its own process group with its log in the demo's work
directory — redis-server (append-only file on), `python -m sandbox serve`, and every
Procfile line run as is with the demo's environment — and stopping them all, whole
process trees included. Also the few HTTP facts the demo needs: a GitHub tag push
signed with the demo secret, the same as a ready-to-paste `curl`, and what GET /
through the ingress shows. What the demo plays is `scripts/demo.py`. Standard library
only: it must work before anything but the project's virtualenv exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctools import descendants, free_port, is_listening, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APP, REPOSITORY = "myapp", "acme/myapp"
# Demo-only credentials: printed on purpose so the curl below can be pasted as is.
WEBHOOK_SECRET = "demo-webhook-secret"  # noqa: S105 - a demo secret, shown on purpose
API_TOKEN = "demo-api-token"  # noqa: S105 - likewise
TEST_COOKIE = "test=true"
STEP_TIMEOUT = 60.0


class StepFailed(Exception):
    """A demo step did not end as expected; the message says what was seen."""


def wait_until(what: str, check: Callable[[], Any], timeout: float = STEP_TIMEOUT,
               interval: float = 0.1) -> Any:
    """`check()`'s first truthy value; StepFailed naming `what` after `timeout` seconds."""
    return wait_for(what, check, timeout, interval=interval, error=StepFailed)


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process the demo started, each in its own process group, logs in `workdir`."""

    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=dict(env), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StepFailed(f"the {name} process exited with status {proc.returncode}; "
                                 f"see {self.workdir / (name + '.log')}")

    def stop_all(self) -> None:
        """SIGTERM each group, newest first (pods go with the sandbox), then SIGKILL leftovers.

        rq runs each job in a work horse in a process group of its own, so whatever is
        left of a process's tree after the grace period is killed by pid too.
        """
        for name, proc in reversed(self.procs.items()):
            tree = descendants(proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop within 20 s; killing it", flush=True)
            for pid in [proc.pid, *tree, *descendants(proc.pid)]:
                _signal_group(pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group `pid` leads, or the process alone if it leads none."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def start_redis(processes: Processes) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise StepFailed("redis-server is not installed (`make demo` installs it)")
    port, data = free_port(), processes.workdir / "redis"
    data.mkdir()
    processes.start("redis", [exe, "--port", str(port), "--bind", "127.0.0.1",
                              "--dir", str(data), "--appendonly", "yes", "--save", ""],
                    os.environ)
    wait_until("redis-server to listen", lambda: is_listening(port), timeout=10)
    return f"redis://127.0.0.1:{port}/0"


def start_sandbox(processes: Processes) -> dict[str, str]:
    """`python -m sandbox serve`; its JSON line `{"api", "ingress", "kubeconfig"}`."""
    kubeconfig = processes.workdir / "kubeconfig"
    out = processes.workdir / "sandbox.json"
    with open(out, "wb") as stdout, open(processes.workdir / "sandbox.log", "ab") as log:
        processes.procs["sandbox"] = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", "--kubeconfig", str(kubeconfig),
             "--workdir", str(processes.workdir / "cluster")],
            cwd=ROOT, stdout=stdout, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def first_line() -> str | None:
        processes.check_alive()
        text = out.read_text()
        return text.splitlines()[0] if "\n" in text else None

    info: dict[str, str] = json.loads(wait_until("the sandbox to start", first_line, 30))
    return info


def procfile() -> dict[str, str]:
    """The Procfile's `name: command` lines."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            commands[name.strip()] = command.strip()
    return commands


def write_config(workdir: Path) -> Path:
    """The demo's config: the seed's app with sandbox images and short timeouts (JSON is YAML)."""
    config = {"apps": {APP: {"repository": REPOSITORY, "image": "sandbox.local/myapp:$VERSION",
                             "rollout_timeout": 30, "smoke_timeout": 20, "hook_timeout": 20}}}
    path = workdir / "bluegreen.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Stack:
    """Where the demo's services answer."""

    web: str
    ingress: str
    api: str
    env: Mapping[str, str]


def start_stack(processes: Processes, port: int) -> Stack:
    redis_url = start_redis(processes)
    sandbox = start_sandbox(processes)
    web = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "REDIS_URL": redis_url, "KUBECONFIG": sandbox["kubeconfig"],
           "BLUEGREEN_CONFIG": str(write_config(processes.workdir)),
           "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "BLUEGREEN_API_TOKEN": API_TOKEN,
           "BLUEGREEN_INGRESS_URL": sandbox["ingress"], "BLUEGREEN_URL": web,
           "PORT": str(port), "WEB_CONCURRENCY": "2",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for name, command in procfile().items():
        processes.start(name, ["bash", "-c", f"exec {command}"], env)
    wait_until("the web process to be ready",
               lambda: processes.check_alive() or http("GET", f"{web}/readyz")[0] == 200, 30)
    status, _ = http("GET", f"{web}/status")
    if status != 200:
        raise StepFailed(f"the status board's JSON (GET /status) answered {status}")
    return Stack(web=web, ingress=sandbox["ingress"], api=sandbox["api"], env=env)


# -- HTTP ----------------------------------------------------------------------------------------


def http(method: str, url: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON body or None); status 0 when nothing answered."""
    request = urllib.request.Request(  # noqa: S310 - only the demo's own http:// URLs
        url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def tag_push(tag: str, *, delivery: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A GitHub tag push for `tag` and the headers GitHub sends, signed with the demo secret."""
    commit = hashlib.sha1(tag.encode()).hexdigest()  # noqa: S324 - a stand-in commit id
    body = json.dumps({
        "ref": f"refs/tags/{tag}", "before": "0" * 40, "after": commit, "created": True,
        "deleted": False, "repository": {"full_name": REPOSITORY, "name": APP},
        "pusher": {"name": "demo"}, "sender": {"login": "demo"},
        "head_commit": {"id": commit, "message": f"Release {tag}"}}, separators=(",", ":"))
    raw = body.encode()
    digest = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": delivery or secrets.token_hex(16),
               "X-Hub-Signature-256": f"sha256={digest}"}
    return raw, headers


def curl_for(web: str, tag: str) -> str:
    raw, headers = tag_push(tag, delivery="demo-" + tag)
    lines = [f"curl -sS -X POST {web}/webhook"]
    lines += [f"  -H '{name}: {value}'" for name, value in headers.items()]
    lines.append(f"  --data '{raw.decode()}'")
    return " \\\n".join(lines)


def through_ingress(ingress: str, *, cookie: bool) -> str:
    """What GET / through the ingress shows: `green v1.0`, or the status and why."""
    status, body = http("GET", ingress.rstrip("/") + "/",
                        headers={"Cookie": TEST_COOKIE} if cookie else None)
    if status == 200 and isinstance(body, dict):
        return f"{body.get('color')} {body.get('version')}"
    return f"HTTP {status or 'no answer'}"
