"""The whole product as separate real processes, driven only through its public faces.

`Stack(tmp, apps)` starts, with one config file: a redis-server with its append-only
file on (conftest's `RedisServer`), the sandbox cluster (`python -m sandbox serve`, via
conftest), gunicorn serving `webhook:create_app()` as the Procfile does (tests/web.py's
`Gunicorn`) and one `bluegreen worker` in its own process group. Tests then talk to it
as forges, operators and users do: signed GitHub webhooks (`push`), the operator API
(`command`), Slack clicks and slash commands when given a `FakeSlack` (`click`,
`slash`; the worker's notifier posts each release's message there), release reads
(`release`, `wait`), the ingress (`served_by`) and the sandbox's test hooks (`fault`,
`api_requests`). Faults are process-level: SIGKILL the worker, restart Redis or the
web process; a worker that exits unasked is restarted, as a process supervisor would.
`stop()` ends every process it started and `leftovers()` finds any that outlived it
(pods included).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT, RedisServer, Sandbox, free_port, start_sandbox, stop_sandbox
from fakeslack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, button, button_texts, sign
from invariants import Monitor
from procs import kill_tree, processes_mentioning, wait_until
from web import API_TOKEN, SECRET_ENV, Gunicorn, Response, delivery, http, signed

BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")
TERMINAL = frozenset({"rejected", "failed", "superseded", "aborted", "rolled_back",
                      "decommissioned"})
SETTLED = TERMINAL | {"awaiting_promotion", "live", "standby"}
PASSED_SMOKE = frozenset({"awaiting_promotion", "live", "standby", "rolled_back"})
SLACK_CHANNEL = ("CDEPLOYS", "deploys")  # (id, name) as FakeSlack names #deploys
SLACK_USER = "UE2E"
# Release reads carry an operator token, as the CLI does: with BLUEGREEN_STATUS_TOKEN
# set they need one, and without it the token is ignored.
READ_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def app_config(repository: str, **overrides: Any) -> dict[str, Any]:
    """One app's config: sandbox images and short timeouts, so a failure shows quickly."""
    body: dict[str, Any] = {"repository": repository, "image": "sandbox.local/app:$VERSION",
                            "rollout_timeout": 20, "smoke_timeout": 10, "hook_timeout": 10}
    body.update(overrides)
    return body


class Stack:
    """See the module docstring."""

    def __init__(self, tmp: Path, apps: dict[str, dict[str, Any]],
                 slack: FakeSlack | None = None) -> None:
        self.tmp, self.slack = tmp, slack
        self.config = tmp / "bluegreen.yml"
        self.config.write_text(yaml.safe_dump({"apps": apps}))
        self.redis = RedisServer(port=free_port(), dir=tmp / "redis")
        self.redis.dir.mkdir()
        self.sandbox: Sandbox | None = None
        self.web: Gunicorn | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.workers_started = 0
        self.worker_exits: list[int] = []  # exit codes of workers that stopped unasked
        self._supervising = threading.Event()
        self._worker_lock = threading.Lock()
        self._commits = 0
        self._passed: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Stack:
        self.redis.start(appendonly=True)
        self.sandbox = start_sandbox(self.tmp)
        self.env = {**SECRET_ENV, "REDIS_URL": self.redis.url,
                    "KUBECONFIG": self.sandbox.kubeconfig,
                    "BLUEGREEN_INGRESS_URL": self.sandbox.ingress,
                    "BLUEGREEN_CONFIG": str(self.config),
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        if self.slack is not None:
            self.env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=self.slack.api_url,
                            SLACK_CHANNEL=f"#{SLACK_CHANNEL[1]}",
                            SLACK_SIGNING_SECRET=SIGNING_SECRET)
        self.web = Gunicorn(port=free_port(), env=self.env, log=self.tmp / "web.log")
        self.web.start()
        self.start_worker()
        self._supervising.set()
        threading.Thread(target=self._supervise, daemon=True, name="supervisor").start()
        return self

    def stop(self) -> None:
        self._supervising.clear()
        self.stop_worker()
        if self.web is not None:
            self.web.stop()
        if self.sandbox is not None:
            stop_sandbox(self.sandbox)
        self.redis.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_worker(self) -> None:
        """`bluegreen worker` (the Procfile's worker line) in its own process group."""
        log = self.tmp / f"worker-{self.workers_started}.log"
        self.workers_started += 1
        with open(log, "wb") as out, self._worker_lock:
            self.worker = subprocess.Popen(
                [BLUEGREEN, "worker"], env={**os.environ, **self.env}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def _supervise(self) -> None:
        """Restart a worker that exits unasked, as a process supervisor (or Kubernetes) does."""
        while self._supervising.wait(0.5) and self._supervising.is_set():
            with self._worker_lock:
                code = self.worker.poll() if self.worker is not None else None
                if code is not None:
                    self.worker_exits.append(code)
                    self.worker = None
            if code is not None and self._supervising.is_set():
                self.start_worker()

    def kill_worker(self) -> None:
        """SIGKILL the worker and its work horse (rq gives the horse its own process group),
        as an OOM kill or a lost node would."""
        with self._worker_lock:
            assert self.worker is not None
            kill_tree(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)
            self.worker = None

    def stop_worker(self) -> None:
        """SIGTERM (rq's warm shutdown: the current job finishes), SIGKILL after 30 s."""
        with self._worker_lock:
            if self.worker is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                kill_tree(self.worker.pid, signal.SIGKILL)
                self.worker.wait(5)
            self.worker = None

    def restart_redis(self, down_for: float = 0.0) -> None:
        """Stop redis-server (SIGTERM: it syncs its append-only file), start it again later."""
        self.redis.stop()
        time.sleep(down_for)
        self.redis.start(appendonly=True)

    def restart_web(self) -> None:
        assert self.web is not None
        self.web.stop()
        self.web.start()

    def leftovers(self) -> list[str]:
        """Processes still running that this stack started: its files or its sandbox's pods."""
        assert self.sandbox is not None
        return processes_mentioning(str(self.tmp), f"SANDBOX_PARENT_PID={self.sandbox.proc.pid}")

    # -- forges and operators ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.web is not None
        return self.web.url

    def push(self, tag: str, *, repository: str = "acme/myapp", delivery_id: str | None = None,
             commit: str | None = None) -> Response:
        """A signed GitHub tag push; a fresh commit and delivery id unless given."""
        self._commits += 1
        commit = commit or f"{os.getpid():08x}{self._commits:032x}"
        body = tag_push_body(tag, repository, commit)
        d = signed(delivery("github", "push__tag_lightweight").with_body(body))
        d = d.with_headers(X_GitHub_Delivery=delivery_id or f"e2e-{tag}-{commit[-8:]}")
        try:
            return http("POST", f"{self.url}/webhook", d.body, d.headers)
        except OSError as e:  # refused or reset: the forge saw no answer
            return Response(0, {}, str(e).encode())

    def release_id(self, tag: str, **kwargs: Any) -> str:
        """Push `tag`; the one release it queued."""
        answer = self.push(tag, **kwargs)
        assert answer.status == 202, (answer.status, answer.body)
        (entry,) = answer.json["releases"]
        return str(entry["id"])

    def command(self, app: str, action: str, release: str | None = None,
                color: str | None = None) -> Response:
        body = {k: v for k, v in {"release": release, "color": color}.items() if v}
        return http("POST", f"{self.url}/api/apps/{app}/{action}", json.dumps(body).encode(),
                    {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})

    def act(self, app: str, action: str, release: str) -> None:
        answer = self.command(app, action, release)
        assert answer.status == 202, (action, release, answer.status, answer.body)

    # -- chat-ops (with a FakeSlack) -------------------------------------------------------------

    def click(self, release_id: str, label: str) -> Response:
        """Click `label` on the release's Slack message (once the notifier shows it there)."""
        assert self.slack is not None
        message = wait_until(lambda: label in button_texts(self.slack.message_for(release_id))
                             and self.slack.message_for(release_id), 30,
                             f"a {label!r} button for {release_id}")
        element = button(message, label)
        block = next(b for b in message["blocks"] if b["type"] == "actions")
        payload = {"type": "block_actions", "user": {"id": SLACK_USER, "username": "e2e"},
                   "channel": {"id": SLACK_CHANNEL[0], "name": SLACK_CHANNEL[1]},
                   "container": {"message_ts": message["ts"], "channel_id": message["channel"]},
                   "response_url": self.slack.response_url("e2e"),
                   "actions": [{"action_id": element["action_id"], "block_id": block["block_id"],
                                "value": element["value"], "action_ts": str(time.time())}]}
        return self._slack_post("/chatops/slack/actions", {"payload": json.dumps(payload)})

    def slash(self, text: str) -> Response:
        """`/deploy <text>` typed in the deploy channel."""
        assert self.slack is not None
        return self._slack_post("/chatops/slack/commands", {
            "command": "/deploy", "text": text, "user_id": SLACK_USER, "user_name": "e2e",
            "channel_id": SLACK_CHANNEL[0], "channel_name": SLACK_CHANNEL[1],
            "response_url": self.slack.response_url("slash")})

    def _slack_post(self, path: str, form: dict[str, str]) -> Response:
        body = urllib.parse.urlencode(form).encode()
        return http("POST", self.url + path, body, {
            **sign(SIGNING_SECRET, body), "Content-Type": "application/x-www-form-urlencoded"})

    # -- reading state ------------------------------------------------------------------------

    def release(self, release_id: str) -> dict[str, Any]:
        answer = http("GET", f"{self.url}/api/releases/{release_id}", headers=READ_AUTH)
        assert answer.status == 200, (release_id, answer.status, answer.body)
        record: dict[str, Any] = answer.json
        return record

    def state(self, release_id: str) -> str:
        return str(self.release(release_id)["release"]["state"])

    def releases(self, app: str | None = None) -> list[dict[str, Any]]:
        query = f"?app={app}&limit=1000" if app else "?limit=1000"
        answer = http("GET", f"{self.url}/api/releases{query}", headers=READ_AUTH)
        assert answer.status == 200, (answer.status, answer.body)
        found: list[dict[str, Any]] = answer.json["releases"]
        return found

    def wait(self, release_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for one of `states`; fail at once, with the audit trail, in another final one."""
        def reached() -> bool:
            state = self.state(release_id)
            if state not in states and state in TERMINAL:
                raise AssertionError(f"{release_id} ended {state}, not {'/'.join(states)}")
            return state in states

        try:
            wait_until(reached, timeout, f"{release_id} to be {'/'.join(states)}", 0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.story(release_id)}") from None
        return self.release(release_id)

    def story(self, release_id: str) -> str:
        """The release's state and audit messages, for failure messages."""
        record = self.release(release_id)
        lines = [f"{a['step']}: {a['message']}" for a in record["audit"]]
        return f"[{record['release']['state']}] " + " | ".join(lines)

    def release_ok(self, release_id: str) -> bool:
        """For the invariant monitor: did this release pass its smoke tests (as recorded)?"""
        if release_id not in self._passed:
            answer = http("GET", f"{self.url}/api/releases/{release_id}", headers=READ_AUTH,
                          timeout=5)
            if answer.status != 200 or not any(
                    entry["state_to"] in PASSED_SMOKE for entry in answer.json["audit"]):
                return answer.status != 200  # the web process may be restarting: no verdict
            self._passed.add(release_id)
        return True

    def monitor(self, app: str, *, traffic: bool = True) -> Monitor:
        assert self.sandbox is not None
        return Monitor(api=self.sandbox.api, ingress=self.sandbox.ingress, app=app,
                       release_ok=self.release_ok, traffic=traffic)

    # -- the cluster, from outside ------------------------------------------------------------

    def ingress(self, *, cookie: bool = False, host: str | None = None) -> tuple[int, Any]:
        assert self.sandbox is not None
        headers = {"Cookie": "test=true"} if cookie else {}
        if host:
            headers["Host"] = host
        answer = http("GET", self.sandbox.ingress + "/", headers=headers, timeout=5)
        try:
            return answer.status, answer.json
        except ValueError:
            return answer.status, None

    def served_by(self, *, cookie: bool = False) -> str | None:
        status, body = self.ingress(cookie=cookie)
        return f"{body['color']} {body['version']}" if status == 200 else None

    def api_requests(self, since: int = 0) -> list[dict[str, Any]]:
        assert self.sandbox is not None
        answer = http("GET", f"{self.sandbox.api}/sandbox/requests?since={since}")
        found: list[dict[str, Any]] = answer.json
        return found

    def last_request(self) -> int:
        log = self.api_requests()
        return int(log[-1]["seq"]) if log else 0

    def fault(self, **rule: Any) -> None:
        assert self.sandbox is not None
        answer = http("POST", f"{self.sandbox.api}/sandbox/faults", json.dumps(rule).encode(),
                      {"Content-Type": "application/json"})
        assert answer.status < 300, (answer.status, answer.body)

    def clear_faults(self) -> None:
        assert self.sandbox is not None
        http("DELETE", f"{self.sandbox.api}/sandbox/faults")


def tag_push_body(tag: str, repository: str, commit: str) -> dict[str, Any]:
    """GitHub's lightweight tag push fixture, for another tag, repository and commit."""
    body: dict[str, Any] = delivery("github", "push__tag_lightweight").json
    body.update(ref=f"refs/tags/{tag}", after=commit,
                compare=f"https://github.com/{repository}/compare/{tag}")
    body["repository"].update(full_name=repository, name=repository.split("/")[-1])
    body["head_commit"]["id"] = commit
    return body


@contextlib.contextmanager
def running(tmp: Path, apps: dict[str, dict[str, Any]],
            slack: FakeSlack | None = None) -> Iterator[Stack]:
    """A started stack; stopped on the way out, failing if any of its processes outlived it."""
    stack = Stack(tmp, apps, slack).start()
    try:
        yield stack
    finally:
        stack.stop()
    deadline = time.monotonic() + 10
    while stack.leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.leftovers() == [], "processes outlived the stack"
