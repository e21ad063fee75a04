"""Configuration: the environment (12-factor) plus an optional YAML file.

Owns `Settings` and `AppConfig`, their defaults (the seed tutorial's values) and
validation: `load_settings()` either returns a complete, checked configuration or
raises `ConfigError` whose message names the key and says why, e.g.
`apps.myapp.rollout_timeout: must be a positive number, got 'x'`. Per-app keys are
parsed in `worker.appconfig`. Secrets come only from the environment, as
comma-separated lists so a secret can be rotated (old and new both valid), and are
kept out of `repr`. Reading Redis or the cluster is left to others.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from worker.appconfig import (
    DEFAULT_APP,
    AppConfig,
    ConfigError,
    SmokeCheck,
    parse_app,
)
from worker.colors import Color

__all__ = ["DEFAULT_APP", "AppConfig", "Color", "ConfigError", "Settings", "SmokeCheck",
           "load_settings", "parse_settings", "repository_key"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# How long a web worker's event loop polls for a due Redis reply instead of sleeping
# (webhook.redislink; docs/benchmarks.md, change 23); 0: never.
DEFAULT_WEB_REDIS_POLL_US = 500
WEB_REDIS_POLL_US_MAX = 10_000
TOP_LEVEL_KEYS = frozenset({"apps"})


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, checked once at start."""

    apps: Mapping[str, AppConfig]
    redis_url: str = DEFAULT_REDIS_URL
    kubeconfig: str | None = None
    ingress_url: str | None = None
    github_secrets: tuple[str, ...] = field(default=(), repr=False)
    gitlab_tokens: tuple[str, ...] = field(default=(), repr=False)
    gitea_secrets: tuple[str, ...] = field(default=(), repr=False)
    bitbucket_secrets: tuple[str, ...] = field(default=(), repr=False)
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    mattermost_secret: str | None = field(default=None, repr=False)
    mattermost_url: str | None = None
    mattermost_bot_token: str | None = field(default=None, repr=False)
    mattermost_channel: str | None = None
    public_url: str | None = None
    status_token: str | None = field(default=None, repr=False)
    web_redis_poll_us: int = DEFAULT_WEB_REDIS_POLL_US
    retention: float | None = None  # s; BLUEGREEN_RETENTION (`worker.retention`)
    config_path: str | None = None

    def apps_for_repository(self, repo: str) -> list[AppConfig]:
        """Apps that `repo` may release, by name (compared by `repository_key`)."""
        return list(self._apps_by_repository.get(repository_key(repo), ()))

    @functools.cached_property
    def _apps_by_repository(self) -> dict[str, tuple[AppConfig, ...]]:
        """Apps by folded repository, built once: every delivery looks its repository up
        twice (matching it in the web process, then planning its releases)."""
        found: dict[str, tuple[AppConfig, ...]] = {}
        for _, app in sorted(self.apps.items()):
            key = repository_key(app.repository)
            found[key] = (*found.get(key, ()), app)
        return found

    def queue_names(self) -> list[str]:
        """The distinct queues of all apps, sorted."""
        return sorted({app.queue for app in self.apps.values()})

    def apps_on_queue(self, queue: str) -> list[AppConfig]:
        return [app for _, app in sorted(self.apps.items()) if app.queue == queue]


def repository_key(repo: str) -> str:
    """`repo` as apps are matched and deliveries deduplicated by it: forges differ in
    case (`Acme/MyApp`, `acme/myapp`) and a payload may pad it with whitespace. One
    function for both, so a push that releases an app is also the one found seen."""
    return repo.strip().casefold()


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from `environ` and the YAML file `BLUEGREEN_CONFIG` names (if any)."""
    path = _env(environ, "BLUEGREEN_CONFIG")
    document: Any = {}
    if path is not None:
        document = _read_yaml(Path(path))
    return parse_settings(document, environ, config_path=path)


def parse_settings(document: Any, environ: Mapping[str, str] = os.environ, *,
                   config_path: str | None = None) -> Settings:
    """Settings from an already-parsed config document and the environment."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"config: must be a mapping with key 'apps', got {_kind(document)}")
    unknown = sorted(set(map(str, document)) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (allowed: apps)")
    base = Path(config_path).resolve().parent if config_path else Path.cwd()
    apps = _parse_apps(document.get("apps"), base)
    return Settings(apps=apps, config_path=config_path, **_from_environment(environ))


def _parse_apps(raw: Any, base: Path) -> dict[str, AppConfig]:
    if raw is None or raw == {}:
        return {DEFAULT_APP: parse_app(DEFAULT_APP, {}, base)}
    if not isinstance(raw, dict):
        raise ConfigError(f"apps: must be a mapping of app name to settings, got {_kind(raw)}")
    apps = {str(name): parse_app(str(name), body, base) for name, body in raw.items()}
    _check_shared_repositories(apps)
    return apps


def _check_shared_repositories(apps: Mapping[str, AppConfig]) -> None:
    """Two apps may share a repository only if a tag can tell them apart."""
    seen: dict[tuple[str, tuple[str, ...]], str] = {}
    for name, app in sorted(apps.items()):
        patterns = tuple(app.tag_patterns[color].pattern for color in Color)
        key = (repository_key(app.repository), patterns)
        if key in seen:
            raise ConfigError(
                f"apps.{name}.tag_patterns: app {seen[key]} releases from the same repository "
                f"{app.repository} with the same tag patterns, so every tag would release "
                "both; give one of them different tag_patterns")
        seen[key] = name


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    return {
        "redis_url": _env(environ, "REDIS_URL") or DEFAULT_REDIS_URL,
        "kubeconfig": _env(environ, "KUBECONFIG"),
        "ingress_url": _url(environ, "BLUEGREEN_INGRESS_URL"),
        "github_secrets": _secrets(environ, "GITHUB_WEBHOOK_SECRET"),
        "gitlab_tokens": _secrets(environ, "GITLAB_WEBHOOK_TOKEN"),
        "gitea_secrets": _secrets(environ, "GITEA_WEBHOOK_SECRET"),
        "bitbucket_secrets": _secrets(environ, "BITBUCKET_WEBHOOK_SECRET"),
        "api_tokens": _secrets(environ, "BLUEGREEN_API_TOKEN"),
        "slack_signing_secret": _env(environ, "SLACK_SIGNING_SECRET"),
        "slack_bot_token": _env(environ, "SLACK_BOT_TOKEN"),
        "slack_channel": _env(environ, "SLACK_CHANNEL"),
        "slack_api_url": _url(environ, "SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        "mattermost_secret": _env(environ, "MATTERMOST_TOKEN"),
        "mattermost_url": _url(environ, "MATTERMOST_URL"),
        "mattermost_bot_token": _env(environ, "MATTERMOST_BOT_TOKEN"),
        "mattermost_channel": _env(environ, "MATTERMOST_CHANNEL"),
        "public_url": _url(environ, "BLUEGREEN_PUBLIC_URL"),
        "status_token": _env(environ, "BLUEGREEN_STATUS_TOKEN"),
        "web_redis_poll_us": _whole_number(environ, "WEB_REDIS_POLL_US",
                                           DEFAULT_WEB_REDIS_POLL_US, WEB_REDIS_POLL_US_MAX),
        "retention": _duration(environ, "BLUEGREEN_RETENTION"),
    }


DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([dhms])")
SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """`90d`, `36h`, `45m` or `30s` in seconds; ValueError for anything else."""
    match = DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90d, 36h or 45m")
    return float(match.group(1)) * SECONDS[match.group(2)]


def _duration(environ: Mapping[str, str], name: str) -> float | None:
    value = _env(environ, name)
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _secrets(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list: during rotation both the old and the new secret are valid."""
    return tuple(part.strip() for part in environ.get(name, "").split(",") if part.strip())


def _whole_number(environ: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    value = _env(environ, name)
    if value is None:
        return default
    # ASCII digits only, as the API's query numbers: str.isdigit() also takes '²' or '٣'
    if not (value.isascii() and value.isdigit()) or int(value) > maximum:
        raise ConfigError(f"{name}: must be a whole number from 0 to {maximum}, "
                          f"got {value!r}")
    return int(value)


def _url(environ: Mapping[str, str], name: str) -> str | None:
    value = _env(environ, name)
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: must be an http:// or https:// URL, got {value!r}")
    return value


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"BLUEGREEN_CONFIG: cannot read {path}: {e.strerror}") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"BLUEGREEN_CONFIG: {path} is not valid YAML: {e}") from e


def _kind(value: object) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) \
        else type(value).__name__
