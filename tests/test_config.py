"""Configuration: the seed's defaults, the environment, the YAML file, and how it can be wrong.

Covers: no file at all reproduces the seed; secrets from comma-separated
environment variables and never in `repr`; several apps from a file; and a table
of invalid values, each failing with a message that names the key and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.colors import Color
from worker.config import ConfigError, SmokeCheck, load_settings, parse_settings


def test_defaults_reproduce_the_seed() -> None:
    settings = load_settings({})
    [app] = settings.apps.values()
    assert app.name == "myapp" and app.namespace == "default" and app.queue == "deploy"
    assert app.repository == "acme/myapp"
    assert app.image == "registry.example.com/acme/$APP:$VERSION"
    assert {c: p.pattern for c, p in app.tag_patterns.items()} == {
        Color.BLUE: "^v.*-blue$", Color.GREEN: "^v.*-green$"}
    assert app.rollout_timeout == 120 and app.auto_promote is False and app.hooks == {}
    assert app.smoke == (SmokeCheck(path="/ready", status=200, json={"ready": True}),)
    assert set(app.vars) == {"DB_HOST", "DB_PORT", "DB_SCHEMA", "DB_USER"}
    assert app.manifests == Path(__file__).resolve().parent.parent / "manifests"
    assert app.virtual_service == "myapp-blue-green" and app.gateway == "myapp-gateway"
    assert app.deployment(Color.GREEN) == "myapp-green"
    assert app.selector(Color.BLUE) == "app=myapp,color=blue"
    assert settings.redis_url == "redis://localhost:6379/0" and settings.kubeconfig is None
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.web_redis_poll_us == 500


def test_the_environment() -> None:
    settings = load_settings({
        "REDIS_URL": "redis://r:6379/2", "KUBECONFIG": "/k", "BLUEGREEN_INGRESS_URL":
        "http://ingress:8080", "GITHUB_WEBHOOK_SECRET": " old-secret , new-secret ,",
        "GITLAB_WEBHOOK_TOKEN": "gl", "BLUEGREEN_API_TOKEN": "t1,t2",
        "SLACK_SIGNING_SECRET": "slack-signing", "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_CHANNEL": "#deploys", "MATTERMOST_TOKEN": "mm", "BLUEGREEN_STATUS_TOKEN": "st",
        "WEB_REDIS_POLL_US": " 0 "})
    assert settings.redis_url == "redis://r:6379/2" and settings.kubeconfig == "/k"
    assert settings.ingress_url == "http://ingress:8080"
    assert settings.github_secrets == ("old-secret", "new-secret")
    assert settings.gitlab_tokens == ("gl",) and settings.gitea_secrets == ()
    assert settings.api_tokens == ("t1", "t2") and settings.slack_channel == "#deploys"
    assert settings.web_redis_poll_us == 0  # never poll
    shown = repr(settings)
    for secret in ("old-secret", "new-secret", "gl", "t1", "slack-signing", "xoxb-1", "mm", "st"):
        assert f"'{secret}'" not in shown, secret


def test_several_apps_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    for name in ("service.yml", "deployment.yml", "gateway.yml", "route-test.yml", "route.yml"):
        (tmp_path / "tpl" / name).write_text("kind: X\n")
    config = tmp_path / "bluegreen.yml"
    config.write_text(yaml.safe_dump({"apps": {
        "myapp": {"repository": "acme/myapp", "auto_promote": True,
                  "hooks": {"post_deploy": [["npm", "run", "migrate"], "echo 'a b'"]},
                  "smoke": [{"path": "/health"}, {"exec": ["npm", "run", "ping"]}]},
        "website": {"repository": "Acme/Web", "queue": "web", "manifests": "tpl",
                    "namespace": "web", "rollout_timeout": 30.5, "vars": {"PORT": 8080},
                    "tag_patterns": {"blue": "^b-", "green": "^g-"}},
    }}))
    settings = load_settings({"BLUEGREEN_CONFIG": str(config)})
    assert sorted(settings.apps) == ["myapp", "website"]
    myapp, web = settings.apps["myapp"], settings.apps["website"]
    assert myapp.hooks["post_deploy"] == (("npm", "run", "migrate"), ("echo", "a b"))
    assert myapp.smoke == (SmokeCheck(path="/health", status=200),
                           SmokeCheck(path=None, status=0, exec=("npm", "run", "ping")))
    assert web.manifests == tmp_path / "tpl" and web.vars == {"PORT": "8080"}
    assert web.rollout_timeout == 30.5 and web.queue == "web"
    assert settings.queue_names() == ["deploy", "web"]
    assert [a.name for a in settings.apps_for_repository("acme/web")] == ["website"]
    assert settings.config_path == str(config)


def test_two_apps_may_share_a_repository_when_tags_tell_them_apart() -> None:
    apps = {"api": {"repository": "acme/mono", "tag_patterns": {"blue": "^api-.*-blue$",
                                                                "green": "^api-.*-green$"}},
            "web": {"repository": "acme/mono", "tag_patterns": {"blue": "^web-.*-blue$",
                                                                "green": "^web-.*-green$"}}}
    settings = parse_settings({"apps": apps}, {})
    assert [a.name for a in settings.apps_for_repository("acme/mono")] == ["api", "web"]
    apps["web"]["tag_patterns"] = apps["api"]["tag_patterns"]
    with pytest.raises(ConfigError, match=r"^apps\.web\.tag_patterns: app api releases from "):
        parse_settings({"apps": apps}, {})


INVALID: list[tuple[Any, str]] = [
    ({"rollout_timeout": "x"}, "apps.myapp.rollout_timeout: must be a positive number, got 'x'"),
    ({"rollout_timeout": 0}, "apps.myapp.rollout_timeout: must be a positive number, got 0"),
    ({"rollout_timeout": True}, "apps.myapp.rollout_timeout: must be a positive number"),
    ({"hook_timeout": -1}, "apps.myapp.hook_timeout: must be a positive number, got -1"),
    ({"colour": "blue"}, "apps.myapp.colour: unknown key"),
    ({"namespace": "Prod_1"}, "apps.myapp.namespace: must be a DNS label, got 'Prod_1'"),
    ({"namespace": 5}, "apps.myapp.namespace: must be a non-empty string, got 5"),
    ({"repository": "myapp"}, "apps.myapp.repository: must be owner/name, got 'myapp'"),
    ({"queue": "de:ploy"}, "apps.myapp.queue: must be letters, digits, '_' and '-'"),
    ({"image": "reg/app:$BUILD"}, "apps.myapp.image: unknown variable $BUILD"),
    ({"image": ""}, "apps.myapp.image: must be a non-empty string"),
    ({"tag_patterns": {"blue": "("}}, "apps.myapp.tag_patterns.blue: is not a valid regular"),
    ({"tag_patterns": {"blue": "^b"}}, "apps.myapp.tag_patterns.green: missing"),
    ({"tag_patterns": {"blue": "a", "green": "b", "red": "c"}},
     "apps.myapp.tag_patterns.red: unknown key"),
    ({"tag_patterns": "^v"}, "apps.myapp.tag_patterns: must be a mapping, got '^v'"),
    ({"auto_promote": "yes"}, "apps.myapp.auto_promote: must be true or false, got 'yes'"),
    ({"hooks": {"pre_deploy": []}}, "apps.myapp.hooks.pre_deploy: unknown key"),
    ({"hooks": {"post_deploy": [[]]}}, "apps.myapp.hooks.post_deploy[0]: must be a non-empty"),
    ({"hooks": {"post_deploy": "migrate"}}, "apps.myapp.hooks.post_deploy: must be a list"),
    ({"smoke": {"path": "/ready"}}, "apps.myapp.smoke: must be a list, got a dict"),
    ({"smoke": [{"path": "ready"}]}, "apps.myapp.smoke[0].path: must be an absolute path"),
    ({"smoke": [{}]}, "apps.myapp.smoke[0]: needs exactly one of 'path' (HTTP) or 'exec'"),
    ({"smoke": [{"path": "/", "status": 99}]},
     "apps.myapp.smoke[0].status: must be a whole number from 100 to 599, got 99"),
    ({"smoke": [{"path": "/", "json": [1]}]}, "apps.myapp.smoke[0].json: must be a mapping"),
    ({"smoke": [{"path": "/", "body": "x"}]}, "apps.myapp.smoke[0].body: unknown key"),
    ({"vars": {"APP": "x"}}, "apps.myapp.vars.APP: $APP is set by bluegreen itself"),
    ({"vars": {"db-host": "x"}}, "apps.myapp.vars: 'db-host' is not a variable name"),
    ({"vars": {"X": ["a"]}}, "apps.myapp.vars.X: must be a string or a number, got a list"),
    ({"vars": {"X": True}}, "apps.myapp.vars.X: must be a string or a number, got True"),
    ({"manifests": "/nonexistent"}, "apps.myapp.manifests: /nonexistent is not a directory"),
    ({"slack_users": "alice"}, "apps.myapp.slack_users: must be a list, got 'alice'"),
    ("not a mapping", "apps.myapp: must be a mapping, got 'not a mapping'"),
]


@pytest.mark.parametrize(("body", "message"), INVALID, ids=[m.split(":")[0] for _, m in INVALID])
def test_invalid_values_name_the_key_and_why(body: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({"apps": {"myapp": body}}, {})
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(("document", "environ", "message"), [
    ({"app": {}}, {}, "app: unknown key (allowed: apps)"),
    ({"apps": ["myapp"]}, {}, "apps: must be a mapping of app name to settings"),
    ({"apps": {"My_App": {}}}, {}, "apps.My_App: app name must be a DNS label"),
    (["apps"], {}, "config: must be a mapping with key 'apps'"),
    ({}, {"BLUEGREEN_INGRESS_URL": "ingress:80"}, "BLUEGREEN_INGRESS_URL: must be an http"),
    ({}, {"WEB_REDIS_POLL_US": "-1"},
     "WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '-1'"),
    ({}, {"WEB_REDIS_POLL_US": "1.5"},
     "WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '1.5'"),
    ({}, {"WEB_REDIS_POLL_US": "500us"},
     "WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '500us'"),
    ({}, {"WEB_REDIS_POLL_US": "10001"},
     "WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '10001'"),
    ({}, {"WEB_REDIS_POLL_US": "²"},  # a digit to str.isdigit(), not to int()
     "WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '²'"),
])
def test_invalid_documents_and_environment(document: Any, environ: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_settings(document, environ)


def test_a_missing_template_is_named(tmp_path: Path) -> None:
    (tmp_path / "service.yml").write_text("kind: Service\n")
    with pytest.raises(ConfigError, match=r"apps\.myapp\.manifests: .* has no deployment\.yml"):
        parse_settings({"apps": {"myapp": {"manifests": str(tmp_path)}}}, {})


def test_the_config_file_must_exist_and_parse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BLUEGREEN_CONFIG: cannot read"):
        load_settings({"BLUEGREEN_CONFIG": str(tmp_path / "missing.yml")})
    broken = tmp_path / "broken.yml"
    broken.write_text("apps: {myapp: [\n")
    with pytest.raises(ConfigError, match=r"BLUEGREEN_CONFIG: .*broken\.yml is not valid YAML"):
        load_settings({"BLUEGREEN_CONFIG": str(broken)})


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert list(load_settings({"BLUEGREEN_CONFIG": str(empty)}).apps) == ["myapp"]
