"""One app's release settings: `AppConfig`, its defaults (the seed's) and their validation.

`parse_app(name, raw, base)` checks every key of `apps.<name>` in the config file
and raises `ConfigError` naming the key and why. `worker.config` assembles apps
and the environment into `Settings`; template rendering is `worker.manifests`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import manifests
from worker.colors import Color, color_for_tag, read_tag, version_for_tag
from worker.configcheck import Checker, ConfigError

DEFAULT_APP = "myapp"
DEFAULT_MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
HOOK_NAMES = frozenset({"post_deploy"})
APP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # leaves room for -blue-green
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

__all__ = ["DEFAULT_APP", "AppConfig", "ConfigError", "SmokeCheck", "parse_app"]


@dataclass(frozen=True)
class SmokeCheck:
    """One smoke check: an HTTP GET through the ingress (`path`) or a command in a pod (`exec`).

    `status` is the expected HTTP status for a path check and the expected exit
    code for an exec check; `json`, when set, must be a subset of the JSON answer.
    """

    path: str | None = "/ready"
    status: int = 200
    json: Mapping[str, Any] | None = None
    exec: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AppConfig:
    """How one app is released; defaults reproduce the seed tutorial."""

    name: str
    repository: str
    namespace: str
    image: str
    queue: str
    manifests: Path
    tag_patterns: Mapping[Color, re.Pattern[str]]
    rollout_timeout: float
    hooks: Mapping[str, tuple[tuple[str, ...], ...]]
    smoke: tuple[SmokeCheck, ...]
    auto_promote: bool
    vars: Mapping[str, str]
    slack_channel: str | None = None
    slack_users: tuple[str, ...] = ()
    slack_channels: tuple[str, ...] = ()
    hook_timeout: float = 300.0
    smoke_timeout: float = 60.0
    drain_seconds: int = 2
    host: str = "*"

    def color_for_tag(self, tag: str) -> Color | None:
        """The colour `tag` deploys into; None if it matches neither pattern or both."""
        return color_for_tag(self.tag_patterns, tag)

    def version_for_tag(self, tag: str) -> str:
        """`v2.0-green` → `v2.0`."""
        return version_for_tag(self.tag_patterns, tag)

    def read_tag(self, tag: str) -> tuple[Color, str] | None:
        """`tag`'s colour and version at once; None if it names no single colour."""
        return read_tag(self.tag_patterns, tag)

    @property
    def virtual_service(self) -> str:
        """Name of the VirtualService (and DestinationRule) the templates define."""
        return f"{self.name}-blue-green"

    @property
    def gateway(self) -> str:
        return f"{self.name}-gateway"

    def deployment(self, color: Color) -> str:
        """Name of the Deployment of `color`: `myapp-green`."""
        return f"{self.name}-{color.value}"

    def selector(self, color: Color) -> str:
        """Label selector of the pods of `color`: `app=myapp,color=green`."""
        return f"app={self.name},color={color.value}"


DEFAULT_VARS = {"DB_HOST": "db.internal", "DB_PORT": "5432", "DB_SCHEMA": "{app}",
                "DB_USER": "{app}"}
# The host the app's Gateway and VirtualService answer for. The seed's "*" suits one app
# per ingress; apps sharing an ingress need a name each, or their routes overlap.
HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
DEFAULT_SMOKE = [{"path": "/ready", "status": 200, "json": {"ready": True}}]
APP_KEYS = frozenset({
    "repository", "namespace", "image", "queue", "manifests", "tag_patterns",
    "rollout_timeout", "hooks", "smoke", "auto_promote", "vars", "slack_channel",
    "slack_users", "slack_channels", "hook_timeout", "smoke_timeout", "drain_seconds",
    "host",
})


def parse_app(name: str, raw: Any, base: Path) -> AppConfig:
    """Check `apps.<name>` and fill in the seed's defaults; relative paths are from `base`."""
    c = Checker(f"apps.{name}")
    if not APP_NAME.match(name):
        raise ConfigError(f"apps.{name}: app name must be a DNS label of at most 40 "
                          "characters (a-z, 0-9, '-'), as Kubernetes names are built from it")
    body = c.mapping(raw if raw is not None else {}, "", APP_KEYS)
    variables = _vars(c, body.get("vars"), name)
    return AppConfig(
        name=name,
        repository=c.text(body.get("repository", f"acme/{name}"), "repository",
                          pattern=re.compile(r"^[^/\s]+(/[^/\s]+)+$"), hint="owner/name"),
        namespace=c.text(body.get("namespace", "default"), "namespace", pattern=NAMESPACE,
                         hint="a DNS label"),
        image=_image(c, body.get("image", "registry.example.com/acme/$APP:$VERSION"), variables),
        queue=c.text(body.get("queue", "deploy"), "queue", pattern=QUEUE,
                     hint="letters, digits, '_' and '-'"),
        manifests=_manifests_dir(c, body.get("manifests"), base),
        tag_patterns=_tag_patterns(c, body.get("tag_patterns")),
        rollout_timeout=c.positive(body.get("rollout_timeout", 120), "rollout_timeout"),
        hooks=_hooks(c, body.get("hooks", {})),
        smoke=_smoke(c, body.get("smoke", DEFAULT_SMOKE)),
        auto_promote=c.boolean(body.get("auto_promote", False), "auto_promote"),
        vars=variables,
        slack_channel=c.optional_text(body.get("slack_channel"), "slack_channel"),
        slack_users=c.text_list(body.get("slack_users", []), "slack_users"),
        slack_channels=c.text_list(body.get("slack_channels", []), "slack_channels"),
        hook_timeout=c.positive(body.get("hook_timeout", 300), "hook_timeout"),
        smoke_timeout=c.positive(body.get("smoke_timeout", 60), "smoke_timeout"),
        drain_seconds=c.integer(body.get("drain_seconds", 2), "drain_seconds", 0, 600),
        host=c.text(body.get("host", "*"), "host", pattern=HOST,
                    hint='"*" or a host name such as myapp.example.com'),
    )


def _vars(c: Checker, raw: Any, app: str) -> dict[str, str]:
    if raw is None:
        return {key: value.format(app=app) for key, value in DEFAULT_VARS.items()}
    body = c.mapping(raw, "vars")
    result: dict[str, str] = {}
    for key, value in body.items():
        if not isinstance(key, str) or not VAR_NAME.match(key):
            raise ConfigError(f"{c.where('vars')}: {key!r} is not a variable name "
                              "(letters, digits and '_', not starting with a digit)")
        if key in manifests.BUILTIN_VARIABLES:
            raise ConfigError(f"{c.where('vars.' + key)}: ${key} is set by bluegreen itself "
                              "and cannot be overridden")
        result[key] = c.scalar(value, f"vars.{key}")
    return result


def _image(c: Checker, raw: Any, variables: Mapping[str, str]) -> str:
    image = c.text(raw, "image")
    known = (manifests.BUILTIN_VARIABLES - {"IMAGE"}) | set(variables)
    try:
        unknown = sorted(set(manifests.names_in(image)) - known)
    except manifests.TemplateError as e:
        raise ConfigError(f"{c.where('image')}: {e.reason}") from e
    if unknown:
        raise ConfigError(f"{c.where('image')}: unknown variable ${unknown[0]} "
                          f"(known: {', '.join(sorted(known))})")
    return image


def _manifests_dir(c: Checker, raw: Any, base: Path) -> Path:
    path = DEFAULT_MANIFESTS if raw is None else Path(c.text(raw, "manifests"))
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.is_dir():
        raise ConfigError(f"{c.where('manifests')}: {path} is not a directory")
    missing = [name for name in manifests.TEMPLATE_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"{c.where('manifests')}: {path} has no {', '.join(missing)}")
    return path


def _tag_patterns(c: Checker, raw: Any) -> dict[Color, re.Pattern[str]]:
    if raw is None:
        raw = {"blue": "^v.*-blue$", "green": "^v.*-green$"}
    body = c.mapping(raw, "tag_patterns", frozenset(color.value for color in Color))
    patterns: dict[Color, re.Pattern[str]] = {}
    for color in Color:
        key = f"tag_patterns.{color.value}"
        if color.value not in body:
            raise ConfigError(f"{c.where(key)}: missing (both blue and green need a pattern)")
        patterns[color] = c.regex(body[color.value], key)
    return patterns


def _hooks(c: Checker, raw: Any) -> dict[str, tuple[tuple[str, ...], ...]]:
    body = c.mapping(raw, "hooks", HOOK_NAMES)
    return {name: tuple(c.command(cmd, f"hooks.{name}[{i}]")
                        for i, cmd in enumerate(c.sequence(commands, f"hooks.{name}")))
            for name, commands in body.items()}


def _smoke(c: Checker, raw: Any) -> tuple[SmokeCheck, ...]:
    return tuple(_smoke_check(c, item, f"smoke[{i}]")
                 for i, item in enumerate(c.sequence(raw, "smoke")))


def _smoke_check(c: Checker, raw: Any, key: str) -> SmokeCheck:
    body = c.mapping(raw, key, frozenset({"path", "status", "json", "exec"}))
    if ("path" in body) == ("exec" in body):
        raise ConfigError(f"{c.where(key)}: needs exactly one of 'path' (HTTP) or 'exec' (command)")
    if "exec" in body:
        return SmokeCheck(path=None, exec=c.command(body["exec"], f"{key}.exec"),
                          status=c.integer(body.get("status", 0), f"{key}.status", 0, 255))
    path = c.text(body["path"], f"{key}.path", pattern=re.compile(r"^/\S*$"),
                  hint="an absolute path such as /ready")
    expected = body.get("json")
    return SmokeCheck(path=path, status=c.integer(body.get("status", 200), f"{key}.status",
                                                  100, 599),
                      json=None if expected is None else c.mapping(expected, f"{key}.json"))
