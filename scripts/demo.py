"""`make demo`: the whole product on the sandbox cluster, and one release cycle played on it.

Starts, each as its own process group: a redis-server (append-only file on, in a
temporary directory), the sandbox cluster (`python -m sandbox serve`), and the web
and worker processes exactly as the Procfile names them, configured through the
environment and a demo config file. It prints where to look (status board, webhook,
ingress) and a ready-to-paste signed `curl`, then plays v1.0-green → promote →
v2.0-blue → promote → rollback with signed GitHub webhooks and the `bluegreen` CLI,
showing after each step what the ingress answers with and without `Cookie: test=true`.
Then it serves until Ctrl-C (or, with `--once`, exits: 0 when every step ended as
expected, 1 naming the step that did not) and stops every process it started.

It uses the product only as a user would: processes, HTTP, the CLI. It imports
nothing from the product packages, so it is also a check of their public faces.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float = STEP_TIMEOUT,
               interval: float = 0.1) -> Any:
    """`check()`'s first truthy value; StepFailed naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


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


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


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
    wait_until("redis-server to listen", lambda: _is_listening(port), timeout=10)
    return f"redis://127.0.0.1:{port}/0"


def _is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


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


# -- the release cycle ---------------------------------------------------------------------------

TERMINAL = {"failed", "rejected", "superseded", "aborted", "decommissioned"}


@dataclass(frozen=True)
class Step:
    """One act of the cycle and what should hold afterwards."""

    title: str
    act: Callable[[Demo], str]            # does it; the release id it concerns
    states: Mapping[str, str]             # tag -> expected release state
    default: str                          # GET / without the cookie: "green v1.0" or "HTTP 404"
    cookie: str                           # GET / with Cookie: test=true


@dataclass
class Demo:
    """Plays the cycle against a running stack, printing progress."""

    stack: Stack
    releases: dict[str, str] = field(default_factory=dict)  # tag -> release id

    def push(self, tag: str) -> str:
        raw, headers = tag_push(tag)
        status, body = http("POST", f"{self.stack.web}/webhook", raw, headers)
        if status != 202 or not isinstance(body, dict) or body.get("result") != "queued":
            raise StepFailed(f"the webhook answered {status}: {body}")
        entry = body["releases"][0]
        self.releases[tag] = str(entry["id"])
        where = f" at queue position {entry['position']}" if entry.get("position") else ""
        say(f"webhook answered {status} queued: release {entry['id']}{where}")
        return self.releases[tag]

    def cli(self, *args: str) -> None:
        say("$ bluegreen " + " ".join(args))
        done = subprocess.run([str(BIN / "bluegreen"), *args], env=dict(self.stack.env),
                              capture_output=True, text=True, timeout=30, check=False)
        for line in (done.stdout + done.stderr).strip().splitlines():
            say("  " + line)
        if done.returncode != 0:
            raise StepFailed(f"`bluegreen {' '.join(args)}` exited {done.returncode}")

    def release(self, release_id: str) -> dict[str, Any]:
        status, body = http("GET", f"{self.stack.web}/api/releases/{release_id}")
        if status != 200 or not isinstance(body, dict):
            raise StepFailed(f"GET /api/releases/{release_id} answered {status}")
        return body

    def settle(self, step: Step) -> None:
        """Wait until every release is in its expected state (or stuck in a wrong final one)."""
        def states() -> dict[str, str]:
            return {tag: self.release(self.releases[tag])["release"]["state"]
                    for tag in step.states}

        def settled() -> bool:
            seen = states()
            wrong = {t: s for t, s in seen.items() if s != step.states[t] and s in TERMINAL}
            if wrong:
                raise StepFailed(f"expected {dict(step.states)}, but {wrong} ended so")
            return seen == dict(step.states)

        try:
            wait_until(f"{dict(step.states)}", settled)
        except StepFailed as e:
            raise StepFailed(f"{e}; states now {states()}") from None

    def show_ingress(self, step: Step) -> None:
        ingress = self.stack.ingress

        def seen() -> tuple[str, str]:
            return (through_ingress(ingress, cookie=False), through_ingress(ingress, cookie=True))

        try:
            wait_until("the ingress", lambda: seen() == (step.default, step.cookie), timeout=5)
        except StepFailed:
            pass  # reported below with what was actually seen
        default, cookie = seen()
        say(f"ingress: GET /  → {default:<12}  with Cookie {TEST_COOKIE} → {cookie}")
        if (default, cookie) != (step.default, step.cookie):
            raise StepFailed(f"the ingress answered {default!r} / {cookie!r}, expected "
                             f"{step.default!r} / {step.cookie!r}")

    def play(self, step: Step) -> None:
        started = time.monotonic()
        release_id = step.act(self)
        self.settle(step)
        record = self.release(release_id)
        message = record["audit"][-1]["message"] if record["audit"] else ""
        say(f"{record['release']['tag']} is {record['release']['state']} after "
            f"{time.monotonic() - started:.1f} s: {message}")
        self.show_ingress(step)


def say(line: str) -> None:
    print(f"      {line}", flush=True)


def promote(tag: str) -> Callable[[Demo], str]:
    def act(demo: Demo) -> str:
        demo.cli("promote", APP, demo.releases[tag])
        return demo.releases[tag]
    return act


def rollback(tag: str) -> Callable[[Demo], str]:
    def act(demo: Demo) -> str:
        demo.cli("rollback", APP)
        return demo.releases[tag]
    return act


CYCLE = (
    Step("push tag v1.0-green: deploy into green, smoke-test it through the ingress",
         lambda demo: demo.push("v1.0-green"), {"v1.0-green": "awaiting_promotion"},
         default="HTTP 404", cookie="green v1.0"),
    Step("promote v1.0-green: default traffic to green",
         promote("v1.0-green"), {"v1.0-green": "live"},
         default="green v1.0", cookie="green v1.0"),
    Step("push tag v2.0-blue: deploy into blue beside live green, smoke-test it",
         lambda demo: demo.push("v2.0-blue"),
         {"v2.0-blue": "awaiting_promotion", "v1.0-green": "live"},
         default="green v1.0", cookie="blue v2.0"),
    Step("promote v2.0-blue: default traffic to blue, green stays up as the rollback target",
         promote("v2.0-blue"), {"v2.0-blue": "live", "v1.0-green": "standby"},
         default="blue v2.0", cookie="blue v2.0"),
    Step("roll back v2.0-blue: default traffic back to green",
         rollback("v2.0-blue"), {"v2.0-blue": "rolled_back", "v1.0-green": "live"},
         default="green v1.0", cookie="green v1.0"),
)


def play_cycle(stack: Stack) -> str | None:
    """Play every step; None when all ended as expected, else the failing step and why."""
    demo = Demo(stack)
    started = time.monotonic()
    for number, step in enumerate(CYCLE, 1):
        print(f"[{number}/{len(CYCLE)}] {step.title}", flush=True)
        try:
            demo.play(step)
        except StepFailed as e:
            return f"step {number} ({step.title}) failed: {e}"
    print(f"release cycle complete: {len(CYCLE)}/{len(CYCLE)} steps as expected in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    return None


# -- main ----------------------------------------------------------------------------------------


def banner(stack: Stack, workdir: Path) -> None:
    print(f"""
bluegreen demo is up
  status board  {stack.web}/
  webhook       {stack.web}/webhook
  API           {stack.web}/api/releases
  ingress       {stack.ingress}/   (add -H 'Cookie: {TEST_COOKIE}' for the test colour)
  logs          {workdir}

Send a signed GitHub tag push yourself (demo secret inline; after the cycle below,
v3.0-blue deploys into the idle colour):

{curl_for(stack.web, 'v3.0-blue')}

Then act on it with the CLI:
  export BLUEGREEN_URL={stack.web} BLUEGREEN_API_TOKEN={API_TOKEN}
  .venv/bin/bluegreen status; .venv/bin/bluegreen promote {APP}
""", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true",
                        help="play the cycle, stop everything, exit 0 only if all went as expected")
    parser.add_argument("--port", type=int, default=0, help="web port (default: a free one)")
    return parser.parse_args(argv)


def serve(processes: Processes) -> None:
    print("serving; press Ctrl-C to stop everything", flush=True)
    while True:
        time.sleep(1)
        processes.check_alive()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C even when started in the background (where SIGINT starts out ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    processes = Processes(workdir)
    failure: str | None = None
    try:
        stack = start_stack(processes, args.port or free_port())
        banner(stack, workdir)
        failure = play_cycle(stack)
        if failure:
            print(f"DEMO FAILED: {failure}", flush=True)
        if not args.once:
            serve(processes)
    except StepFailed as e:
        failure = str(e)
        print(f"DEMO FAILED: {failure}", flush=True)
    except KeyboardInterrupt:
        print("", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
        print("stopping every process the demo started ...", flush=True)
        processes.stop_all()
        if failure is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
