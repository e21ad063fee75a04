"""Helpers for web-side tests: forge deliveries from fixture files, signing, real gunicorn.

`delivery(forge, name)` loads `tests/fixtures/<forge>/<name>.json` as raw bytes with
the headers that forge sends for that event (`headers.json`, keyed by the part of
the name before `__`). `signed(...)` adds the forge's signature or token header.
`Gunicorn` runs the web process exactly as the Procfile does, on a free port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from proctools import free_port

from worker.api import Engine, TagEvent
from worker.config import parse_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent

SECRETS = {
    "github": "gh-secret-1",
    "gitlab": "gl-token-1",
    "gitea": "gt-secret-1",
    "forgejo": "gt-secret-1",
    "bitbucket": "bb-secret-1",
}
API_TOKEN = "api-token-1"

# Environment that configures every forge's secret (with a rotated-out second one).
SECRET_ENV = {
    "GITHUB_WEBHOOK_SECRET": "gh-secret-old,gh-secret-1",
    "GITLAB_WEBHOOK_TOKEN": "gl-token-1",
    "GITEA_WEBHOOK_SECRET": "gt-secret-1",
    "BITBUCKET_WEBHOOK_SECRET": "bb-secret-1",
    "BLUEGREEN_API_TOKEN": f"{API_TOKEN},api-token-2",
}

CONFIG_YAML = """\
apps:
  myapp:
    repository: acme/myapp
  website:
    repository: acme/website
    tag_patterns: {blue: '^release-.*-blue$', green: '^release-.*-green$'}
"""


def push(redis: Any, tag: str, repository: str = "acme/myapp") -> str:
    """The release a pushed `tag` becomes, submitted to the engine as a delivery would be
    (on `CONFIG_YAML`'s apps); its id."""
    engine = Engine(parse_settings(yaml.safe_load(CONFIG_YAML), {}), redis)
    (submitted,) = engine.submit_tag(TagEvent(
        forge="github", delivery_id=f"d-{tag}", repository=repository, tag=tag,
        commit="a" * 40, pusher="dev"))
    return submitted.release.id


@dataclass(frozen=True)
class Delivery:
    """One forge request: headers and raw body bytes."""

    forge: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def with_headers(self, **headers: str) -> Delivery:
        """A copy with headers added or replaced (underscores become dashes)."""
        extra = {k.replace("_", "-"): v for k, v in headers.items()}
        return replace(self, headers={**self.headers, **extra})

    def with_body(self, body: bytes | Mapping[str, Any]) -> Delivery:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return replace(self, body=raw)


def delivery(forge: str, name: str) -> Delivery:
    """The fixture `<forge>/<name>.json` with the headers its forge sends for that event."""
    event = name.split("__", 1)[0]
    headers = json.loads((FIXTURES / forge / "headers.json").read_text())[event]
    return Delivery(forge, dict(headers), (FIXTURES / forge / f"{name}.json").read_bytes())


def fixture_names() -> list[tuple[str, str]]:
    """Every (forge, name) fixture on disk."""
    return sorted((path.parent.name, path.stem) for path in FIXTURES.glob("*/*__*.json"))


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(d: Delivery, secret: str | None = None) -> Delivery:
    """`d` with the signature/token header its forge sends, made with `secret`."""
    secret = SECRETS[d.forge] if secret is None else secret
    digest = hmac_hex(secret, d.body)
    header = {
        "github": ("X-Hub-Signature-256", f"sha256={digest}"),
        "gitlab": ("X-Gitlab-Token", secret),
        "gitea": ("X-Gitea-Signature", digest),
        "forgejo": ("X-Forgejo-Signature", digest),
        "bitbucket": ("X-Hub-Signature", f"sha256={digest}"),
    }[d.forge]
    extra = {header[0]: header[1]}
    if d.forge in ("gitea", "forgejo"):
        # Gitea and Forgejo also send GitHub's header, with the same secret.
        extra["X-Hub-Signature-256"] = f"sha256={digest}"
    return replace(d, headers={**d.headers, **extra})


def with_delivery_id(d: Delivery, delivery_id: str) -> Delivery:
    """`d` with every delivery-id header its forge sends set to `delivery_id`."""
    names = [h for h in d.headers if h.lower().endswith(("delivery", "request-uuid",
                                                         "idempotency-key", "event-uuid"))]
    return replace(d, headers={**d.headers, **{h: delivery_id for h in names}})


def recorded_keys(redis: Any) -> list[bytes]:
    """Every Redis key a delivery or command may have written, but for counters.

    Counters (`bluegreen:metrics:*`) count refusals too; "nothing recorded" means
    no release, audit, dedupe or queue entry.
    """
    return sorted(k for k in redis.keys("*") if not k.startswith(b"bluegreen:metrics:"))


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # an http.client.HTTPMessage: names are case-insensitive
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One HTTP request with urllib, returning errors as responses instead of raising."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


@dataclass
class Gunicorn:
    """`gunicorn --config webhook/gunicorn_conf.py 'webhook:create_app()'` on a free port."""

    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, **self.env, "PORT": str(self.port), "WEB_CONCURRENCY": "2"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "webhook/gunicorn_conf.py",
                 *self.extra_args, "webhook:create_app()"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()}")
            try:
                if http("GET", f"{self.url}/healthz", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"gunicorn did not answer /healthz: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def post(self, path: str, d: Delivery) -> Response:
        return http("POST", self.url + path, d.body, d.headers)


def start_web(redis_url: str, tmp: Path, **env: str) -> Gunicorn:
    """The web process as the Procfile runs it, with `CONFIG_YAML`, every forge's secret
    and `env` on top, on a free port; started."""
    config = tmp / "bluegreen.yml"
    config.write_text(CONFIG_YAML)
    web = Gunicorn(port=free_port(), log=tmp / "gunicorn.log",
                   env={**SECRET_ENV, "REDIS_URL": redis_url, "BLUEGREEN_CONFIG": str(config),
                        **env})
    web.start()
    return web
