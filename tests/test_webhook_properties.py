"""Properties of the web side under arbitrary input (Hypothesis, Flask test client, real Redis).

Whatever the headers and body: never a 500, and never a release without a valid
signature. With a valid signature and a mangled real payload: never a 500 either,
only an answer from the table. The operator API: never a 500, never a queued job
without a valid token.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis as redis_lib
import yaml
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_intake import nothing_recorded
from web import (
    API_TOKEN,
    CONFIG_YAML,
    SECRET_ENV,
    Delivery,
    delivery,
    fixture_names,
    recorded_keys,
    signed,
)

from webhook import create_app
from worker.config import parse_settings

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])
WEBHOOK_STATUSES = {200, 202, 400, 401, 404, 405, 413, 415}
HEADER_NAMES = ["X-GitHub-Event", "X-Gitea-Event", "X-Forgejo-Event", "X-Gitlab-Event",
                "X-Event-Key", "X-Hub-Signature-256", "X-Hub-Signature", "X-Gitea-Signature",
                "X-Forgejo-Signature", "X-Gitlab-Token", "X-GitHub-Delivery", "Idempotency-Key",
                "X-Request-UUID", "Content-Type", "Content-Length", "Authorization"]
EVENTS = ["push", "create", "ping", "Tag Push Hook", "Push Hook", "repo:push", "delete", ""]

header_values = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"),
                        max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


@pytest.fixture
def app(redis: redis_lib.Redis) -> Flask:
    return create_app(parse_settings(yaml.safe_load(CONFIG_YAML), SECRET_ENV), redis)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside a JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


@st.composite
def mangled_deliveries(draw: st.DrawFn) -> Delivery:
    """A real fixture with one value somewhere replaced by arbitrary JSON, or removed."""
    forge, name = draw(st.sampled_from(fixture_names()))
    d = delivery(forge, name)
    body = d.json
    path = draw(st.sampled_from(paths(body)))
    if not path:
        return d.with_body(json.dumps(draw(json_values)).encode())
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return d.with_body(json.dumps(body).encode())


@PROPERTY_SETTINGS
@given(headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=8),
       event=st.sampled_from(EVENTS),
       body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/webhook", "/webhook/github", "/webhook/gitlab", "/webhook/gitea",
                             "/webhook/forgejo", "/webhook/bitbucket", "/webhook/x"]))
def test_arbitrary_requests_never_500_and_never_record_unsigned(
        app: Flask, redis: redis_lib.Redis, headers: dict[str, str], event: str, body: bytes,
        path: str) -> None:
    redis.flushdb()
    headers = {"X-GitHub-Event": event, **headers}
    headers.pop("Content-Length", None)  # the client sets the true length
    answer = app.test_client().post(path, data=body, headers=headers)
    assert answer.status_code in WEBHOOK_STATUSES
    assert answer.get_json()["result"] in {"error", "ignored"}
    assert nothing_recorded(redis)


@PROPERTY_SETTINGS
@given(d=mangled_deliveries())
def test_signed_mangled_payloads_get_an_answer_from_the_table(
        app: Flask, redis: redis_lib.Redis, d: Delivery) -> None:
    redis.flushdb()
    answer = app.test_client().post("/webhook", data=d.body, headers=signed(d).headers)
    assert answer.status_code in {200, 202, 400}, answer.get_data()
    result = answer.get_json()["result"]
    assert result in {"queued", "duplicate", "ignored", "error"}
    if result != "queued":
        assert nothing_recorded(redis)


@PROPERTY_SETTINGS
@given(app_name=st.text(st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1,
                        max_size=20),
       action=st.sampled_from(["promote", "rollback", "decommission", "abort", "launch"]),
       body=st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()),
       authorization=st.none() | header_values | st.just(f"Bearer {API_TOKEN}"))
def test_operator_api_never_500_and_never_queues_without_a_token(
        app: Flask, redis: redis_lib.Redis, app_name: str, action: str, body: bytes,
        authorization: str | None) -> None:
    redis.flushdb()
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = app.test_client().post(f"/api/apps/{app_name}/{action}", data=body,
                                    headers=headers, content_type="application/json")
    assert answer.status_code in {202, 400, 401, 404, 405, 409}
    assert answer.get_json()["result"] in {"queued", "error"}
    assert recorded_keys(redis) == []  # nothing exists to act on, with or without a token


@PROPERTY_SETTINGS
@given(query=st.dictionaries(st.sampled_from(["app", "state", "limit", "x"]), header_values,
                             max_size=4),
       release=st.text(max_size=40))
def test_release_reads_never_500(app: Flask, query: dict[str, str], release: str) -> None:
    client = app.test_client()
    listing = client.get("/api/releases", query_string=query)
    assert listing.status_code in {200, 400, 404}
    shown = client.get("/api/releases/" + release.replace("/", "_"))
    assert shown.status_code in {404, 200}
