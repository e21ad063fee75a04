"""Manifest templates and their rendering, and `bluegreen plan` which prints them.

Covers: `$VAR`, `${VAR}` and `$$` as envsubst reads them; unknown variables failing
with the file, line and variable; values that would break YAML if pasted in
(`: `, `#`, quotes, newlines, flow syntax) arriving as plain strings; the shipped
templates rendering into complete objects that keep SPEC §5.4 (every subset a
VirtualService names is in the DestinationRule of the same file, which comes
first); the first release's test route without a default route; several apps; and
`bluegreen plan` printing YAML and steps without touching Redis or a cluster.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from worker import manifests
from worker.cli import main
from worker.colors import Color
from worker.config import AppConfig, load_settings
from worker.manifests import TemplateError, render, substitute

VALUES = {"APP": "myapp", "COLOR": "green", "N": "3", "EMPTY": ""}


def app_config(**overrides: Any) -> AppConfig:
    return dataclasses.replace(load_settings({}).apps["myapp"], **overrides)


def release_values(color: Color = Color.GREEN, live: Color | None = Color.BLUE,
                   app: AppConfig | None = None) -> dict[str, str]:
    return manifests.variables(app or app_config(), tag=f"v2.0-{color}", commit="c0ffee" * 6,
                               release_id="myapp-v2-0-x-1234abcd", color_test=color,
                               color_active=live)


@pytest.mark.parametrize(("text", "expected"), [
    ("$APP-$COLOR", "myapp-green"),
    ("${APP}_x", "myapp_x"),
    ("$APPx", None),                       # the name runs on: $APPx is unknown
    ("${APP}x", "myappx"),
    ("cost: $$5", "cost: $5"),
    ("$$APP", "$APP"),
    ("regex (;.*)?$", "regex (;.*)?$"),    # a $ not followed by a name stays
    ("$1 and $ and $-", "$1 and $ and $-"),
    ("", ""),
])
def test_substitution_reads_like_envsubst(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(TemplateError, match=r"unknown variable \$APPx"):
            substitute(text, VALUES, source="t.yml")
    else:
        assert substitute(text, VALUES, source="t.yml") == expected


def test_an_unknown_variable_names_file_line_and_variable() -> None:
    text = "kind: Thing\nmetadata:\n  name: $APP\n  labels: {team: $TEAM}\n"
    with pytest.raises(TemplateError) as raised:
        render(text, VALUES, source="deployment.yml")
    assert raised.value.variable == "TEAM" and raised.value.source == "deployment.yml"
    assert str(raised.value).startswith("deployment.yml:4: unknown variable $TEAM")


def test_an_unterminated_brace_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"'\$\{' must be followed"):
        render("kind: X\nname: ${APP\n", VALUES, source="x.yml")


def test_names_in() -> None:
    assert manifests.names_in("$A ${B} $$C $") == ["A", "B"]


@pytest.mark.parametrize("value", [
    "a: b", "x # not a comment", "'single'", '"double"', "line1\nline2", "{a: 1}",
    "[1, 2]", "*alias", "&anchor", "!!python/object", "- item", "true", "", "${APP}", "$$",
])
def test_values_never_change_the_yaml_structure(value: str) -> None:
    text = 'kind: ConfigMap\ndata:\n  quoted: "$V"\n  single: \'$V\'\n  inline: x-$V\n'
    [doc] = render(text, {"V": value}, source="cm.yml")
    assert doc["data"] == {"quoted": value, "single": value, "inline": f"x-{value}"}


def test_plain_scalars_are_typed_as_yaml_would_quoted_ones_stay_strings() -> None:
    text = 'kind: X\nspec:\n  replicas: $N\n  label: "$N"\n  enabled: $T\n  empty: $EMPTY\n'
    [doc] = render(text, {"N": "3", "T": "true", "EMPTY": ""}, source="x.yml")
    assert doc["spec"] == {"replicas": 3, "label": "3", "enabled": True, "empty": None}
    [doc] = render("kind: X\nwhen: $D\n", {"D": "2024-01-01"}, source="x.yml")
    assert doc["when"] == "2024-01-01"  # never a datetime: manifests go out as JSON


def test_keys_are_substituted_too_and_empty_documents_skipped() -> None:
    docs = render("---\n---\nkind: X\nlabels:\n  $APP: yes-$COLOR\n", VALUES, source="x.yml")
    assert docs == [{"kind": "X", "labels": {"myapp": "yes-green"}}]


def test_a_document_without_kind_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"x\.yml:1: every document must be a Kubernetes"):
        render("name: $APP\n", VALUES, source="x.yml")


def test_every_shipped_template_renders_complete_objects() -> None:
    app = app_config()
    manifests.check_templates(app)
    values = release_values()
    for name in manifests.TEMPLATE_FILES:
        for doc in manifests.render_file(app, name, values):
            assert doc["apiVersion"] and doc["kind"] and doc["spec"], name
            assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == "default", name


def test_the_seed_objects() -> None:
    app, values = app_config(), release_values()
    [gateway] = manifests.render_file(app, "gateway.yml", values)
    assert gateway["metadata"]["name"] == "myapp-gateway"
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    assert gateway["spec"]["servers"][0]["port"]["number"] == 80
    assert gateway["spec"]["servers"][0]["hosts"] == ["*"]
    [service] = manifests.render_file(app, "service.yml", values)
    assert service["metadata"]["name"] == "myapp"
    assert service["spec"]["selector"] == {"app": "myapp"}
    assert service["spec"]["ports"][0] == {"port": 3000, "name": "http", "targetPort": 3000}


def test_the_deployment_carries_colour_release_image_and_secret_reference() -> None:
    [dep] = manifests.render_file(app_config(), "deployment.yml", release_values())
    labels = {"app": "myapp", "color": "green", "release": "myapp-v2-0-x-1234abcd"}
    assert dep["metadata"]["name"] == "myapp-green" and dep["metadata"]["labels"] == labels
    assert dep["spec"]["template"]["metadata"]["labels"] == labels
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "myapp", "color": "green"}
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/acme/myapp:v2.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 3000}
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PORT"]["value"] == "5432" and env["NODE_ENV"]["value"] == "production"
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "myapp-db"
    assert "value" not in env["DB_PASSWORD"]


@pytest.mark.parametrize("live", [Color.BLUE, None])
@pytest.mark.parametrize("name", ["route.yml", "route-test.yml"])
def test_route_files_are_make_before_break(name: str, live: Color | None) -> None:
    docs = manifests.render_file(app_config(), name, release_values(live=live),
                                 default_route=live is not None or name == "route.yml")
    assert [d["kind"] for d in docs] == ["DestinationRule", "VirtualService"]
    rule, service = docs
    assert {s["name"] for s in rule["spec"]["subsets"]} == {"blue", "green"}
    assert all(s["labels"] == {"color": s["name"]} for s in rule["spec"]["subsets"])
    used = {dest["destination"]["subset"] for route in service["spec"]["http"]
            for dest in route["route"]}
    assert used <= {s["name"] for s in rule["spec"]["subsets"]}
    assert service["spec"]["gateways"] == ["myapp-gateway"] and service["spec"]["hosts"] == ["*"]


def test_the_test_route_sends_the_cookie_to_test_and_the_rest_to_live() -> None:
    release = _release(Color.GREEN)
    files = manifests.deploy_manifests(app_config(), release, live=Color.BLUE)
    assert list(files) == ["service.yml", "deployment.yml", "gateway.yml", "route-test.yml"]
    http = files["route-test.yml"][1]["spec"]["http"]
    assert [r["name"] for r in http] == ["myapp-test", "myapp-default"]
    cookie = re.compile(http[0]["match"][0]["headers"]["cookie"]["regex"])
    for header in ("test=true", "a=b;test=true", "a=b; test=true", "test=true; a=b"):
        assert cookie.fullmatch(header), header  # Envoy matches the whole header value
    for header in ("test=false", "a=b; xtest=true", "test=truely"):
        assert not cookie.fullmatch(header), header
    assert http[0]["route"][0]["destination"] == {"host": "myapp", "subset": "green"}
    assert http[-1]["route"][0]["destination"]["subset"] == "blue"


def test_the_first_release_routes_only_the_cookie() -> None:
    files = manifests.deploy_manifests(app_config(), _release(Color.BLUE), live=None)
    [route] = files["route-test.yml"][1]["spec"]["http"]
    assert route["match"] and route["route"][0]["destination"]["subset"] == "blue"


def test_promotion_routes_everything_to_the_release() -> None:
    docs = manifests.route_manifests(app_config(), _release(Color.GREEN))
    [route] = docs[1]["spec"]["http"]
    assert "match" not in route and route["route"][0]["destination"]["subset"] == "green"


def test_names_follow_the_app_so_several_apps_can_share_a_cluster() -> None:
    app = app_config(name="website", namespace="web", vars={"DB_HOST": "h", "DB_PORT": "1",
                                                            "DB_SCHEMA": "s", "DB_USER": "u"})
    files = manifests.deploy_manifests(app, _release(Color.BLUE, app="website"), live=Color.GREEN)
    names = {doc["metadata"]["name"] for docs in files.values() for doc in docs}
    assert names == {"website", "website-blue", "website-gateway", "website-blue-green"}
    assert {doc["metadata"]["namespace"] for docs in files.values() for doc in docs} == {"web"}


def test_a_template_with_an_unknown_variable_fails_before_anything_is_applied(
        tmp_path: Path) -> None:
    for name in manifests.TEMPLATE_FILES:
        (tmp_path / name).write_text((app_config().manifests / name).read_text())
    (tmp_path / "service.yml").write_text("kind: Service\nmetadata:\n  name: $SERVICE_NAME\n")
    app = app_config(manifests=tmp_path)
    with pytest.raises(TemplateError, match=r"service.yml:3: unknown variable \$SERVICE_NAME"):
        manifests.deploy_manifests(app, _release(Color.GREEN), live=Color.BLUE)
    with pytest.raises(TemplateError):
        manifests.check_templates(app)


def test_plan_prints_yaml_and_steps_touching_nothing() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "KUBECONFIG": "/nonexistent"}
    result = CliRunner().invoke(main, ["plan", "myapp", "v2.0-green", "--commit", "abc"], env=env)
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in docs if d] == ["Service", "Deployment", "Gateway",
                                               "DestinationRule", "VirtualService",
                                               "DestinationRule", "VirtualService"]
    assert "1. sanity check" in result.output and "await promotion" in result.output
    assert "release myapp-v2-0-green-plan" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["plan", "nope", "v2.0-green"], "unknown app 'nope'"),
    (["plan", "myapp", "v2.0"], "tag 'v2.0' names no colour of myapp"),
    (["plan", "myapp", "v2.0-green", "--live", "green"], "the sanity check would reject"),
])
def test_plan_refuses_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def _release(color: Color, app: str = "myapp") -> Any:
    from worker.releases import Release, ReleaseState
    return Release(id=f"{app}-v2-0-{color}-1234abcd", app=app, color=color, tag=f"v2.0-{color}",
                   version="v2.0", commit="c" * 40, forge="github", delivery_id="d",
                   repository=f"acme/{app}", state=ReleaseState.DEPLOYING, created_at=1.0,
                   updated_at=1.0)
