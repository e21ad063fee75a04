"""The operator API (Flask test client, real Redis, real engine): commands, reads, health.

Commands need a bearer token (several may be configured), name their release, and
answer 202 queued / 401 / 404 / 409 stale / 400; the actor recorded is a token
fingerprint, never the token. Release reads are open; /readyz follows Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
import yaml
from conftest import redis_contents
from flask import Flask
from flask.testing import FlaskClient
from proctools import free_port
from rq import Queue
from web import (
    API_TOKEN,
    CONFIG_YAML,
    SECRET_ENV,
    delivery,
    recorded_keys,
    signed,
    with_delivery_id,
)

from webhook import create_app
from webhook.auth import fingerprint
from worker.config import parse_settings
from worker.releases import ReleaseState, ReleaseStore

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
S = ReleaseState
TO_AWAITING = (S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION)


def settings(**env: str) -> Any:
    return parse_settings(yaml.safe_load(CONFIG_YAML), {**SECRET_ENV, **env})


@pytest.fixture
def app(redis: redis_lib.Redis) -> Flask:
    return create_app(settings(), redis)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def make_release(client: FlaskClient, redis: redis_lib.Redis, *, delivery_id: str = "d-1",
                 to: tuple[ReleaseState, ...] = TO_AWAITING) -> str:
    """A release of v2.0-green taken in through the webhook, then walked through `to`."""
    d = signed(with_delivery_id(delivery("github", "push__tag_lightweight"), delivery_id))
    answer = client.post("/webhook", data=d.body, headers=d.headers)
    release_id: str = answer.get_json()["releases"][0]["id"]
    store = ReleaseStore(redis)
    for state in to:
        store.transition(release_id, state, actor="worker:test", step="test", message="walked")
    return release_id


def jobs(redis: redis_lib.Redis) -> list[str]:
    return list(Queue("deploy", connection=redis).job_ids)


def everything_in(redis: redis_lib.Redis) -> bytes:
    """Every key and value in the database, concatenated (to look for what must not be there)."""
    def flat(held: Any) -> Iterator[bytes]:
        if isinstance(held, bytes):
            yield held
        elif isinstance(held, dict):
            for pair in held.items():
                yield from flat(pair)
        elif isinstance(held, (list, tuple, set)):
            for item in held:
                yield from flat(item)

    return b"\n".join(part for key, held in redis_contents(redis).items()
                      for part in (key, *flat(held)) if part)


def test_promote_is_queued_and_audited_without_the_token(client: FlaskClient,
                                                         redis: redis_lib.Redis) -> None:
    release = make_release(client, redis)
    answer = client.post("/api/apps/myapp/promote", json={"release": release}, headers=AUTH)
    assert answer.status_code == 202
    body = answer.get_json()
    assert (body["result"], body["release"], body["action"]) == ("queued", release, "promote")
    assert body["job"] in jobs(redis) and body["position"] >= 1
    audit = client.get(f"/api/releases/{release}").get_json()["audit"]
    assert audit[-1]["actor"] == f"api:{fingerprint(API_TOKEN)}"
    stored = everything_in(redis)
    assert release.encode() in stored and b"awaiting_promotion" in stored
    assert API_TOKEN.encode() not in stored


def test_every_configured_token_is_accepted(client: FlaskClient, redis: redis_lib.Redis) -> None:
    release = make_release(client, redis)
    answer = client.post("/api/apps/myapp/abort", json={"release": release},
                         headers={"Authorization": "bearer api-token-2"})
    assert answer.status_code == 202
    audit = client.get(f"/api/releases/{release}").get_json()["audit"]
    assert audit[-1]["actor"] == f"api:{fingerprint('api-token-2')}"


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong-token",
                                           f"Basic {API_TOKEN}", f"Bearer {API_TOKEN}x",
                                           f"Token {API_TOKEN}"])
def test_missing_or_invalid_token_is_401(client: FlaskClient, redis: redis_lib.Redis,
                                         authorization: str | None) -> None:
    release = make_release(client, redis)
    before = jobs(redis)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.post("/api/apps/myapp/promote", json={"release": release}, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert jobs(redis) == before


def test_no_token_configured_disables_commands(redis: redis_lib.Redis) -> None:
    client = create_app(settings(BLUEGREEN_API_TOKEN=""), redis).test_client()
    answer = client.post("/api/apps/myapp/promote", json={"release": "x"},
                         headers={"Authorization": "Bearer "})
    assert answer.status_code == 401
    assert "BLUEGREEN_API_TOKEN" in answer.get_json()["message"]


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/api/apps/nope/promote", {"release": "myapp-v2-0-green-00000000"}, "unknown_app"),
    ("/api/apps/nope/promote", {}, "unknown_app"),  # not 400 for the missing release
    ("/api/apps/nope/decommission", {"color": "purple"}, "unknown_app"),
    ("/api/apps/myapp/promote", {"release": "myapp-v9-green-00000000"}, "unknown_release"),
    ("/api/apps/website/promote", {"release": "<own>"}, "unknown_release"),
    ("/api/apps/myapp/explode", {"release": "<own>"}, "not_found"),
])
def test_unknown_app_release_or_action_is_404(client: FlaskClient, redis: redis_lib.Redis,
                                              path: str, body: dict[str, str],
                                              code: str) -> None:
    release = make_release(client, redis)
    before = jobs(redis)
    body = {k: release if v == "<own>" else v for k, v in body.items()}
    answer = client.post(path, json=body, headers=AUTH)
    assert (answer.status_code, answer.get_json()["code"]) == (404, code)
    assert jobs(redis) == before


def test_listing_an_unknown_apps_releases_is_404_as_its_commands_are(
        client: FlaskClient) -> None:
    answer = client.get("/api/releases?app=nope", headers=AUTH)
    assert (answer.status_code, answer.get_json()["code"]) == (404, "unknown_app")
    assert "no app named 'nope'" in answer.get_json()["message"]


@pytest.mark.parametrize(("action", "to", "body", "reason"), [
    ("promote", (), {}, "is queued"),
    ("rollback", TO_AWAITING, {}, "is awaiting_promotion"),
    ("rollback", (*TO_AWAITING, S.LIVE), {}, "nothing to roll back to"),
    ("decommission", TO_AWAITING, {"color": "green"}, "abort it instead"),
    ("decommission", TO_AWAITING, {"color": "blue"}, "is on green, not blue"),
    ("abort", (*TO_AWAITING, S.LIVE), {}, "is live"),
])
def test_stale_command_is_409_with_the_reason(client: FlaskClient, redis: redis_lib.Redis,
                                              action: str, to: tuple[ReleaseState, ...],
                                              body: dict[str, str], reason: str) -> None:
    release = make_release(client, redis, to=to)
    before = jobs(redis)
    answer = client.post(f"/api/apps/myapp/{action}", json={"release": release, **body},
                         headers=AUTH)
    assert (answer.status_code, answer.get_json()["code"]) == (409, "stale_command")
    assert reason in answer.get_json()["message"]
    assert jobs(redis) == before


def test_decommission_may_name_only_the_colour(client: FlaskClient,
                                               redis: redis_lib.Redis) -> None:
    make_release(client, redis)
    answer = client.post("/api/apps/myapp/decommission", json={"color": "green"}, headers=AUTH)
    assert answer.status_code == 409
    assert "awaiting promotion" in answer.get_json()["message"]


@pytest.mark.parametrize(("action", "data", "code"), [
    ("promote", b"{not json", "invalid_json"),
    ("promote", b"[1, 2]", "bad_request"),
    ("promote", b"{}", "bad_request"),
    ("promote", b"", "bad_request"),
    ("promote", b'{"release": 7}', "bad_request"),
    ("promote", b'{"release": "a:b"}', "bad_request"),
    ("promote", b'{"release": "ok-id\\n"}', "bad_request"),
    ("decommission", b'{"release": "x"}', "bad_request"),
    ("decommission", b'{"color": "red"}', "bad_request"),
    ("decommission", b'{"color": "green", "release": ""}', "bad_request"),
])
def test_bad_body_is_400(client: FlaskClient, redis: redis_lib.Redis, action: str, data: bytes,
                         code: str) -> None:
    answer = client.post(f"/api/apps/myapp/{action}", data=data, headers=AUTH,
                         content_type="application/json")
    assert (answer.status_code, answer.get_json()["code"]) == (400, code)
    assert recorded_keys(redis) == []


def test_list_releases_filters_newest_first(client: FlaskClient, redis: redis_lib.Redis) -> None:
    older = make_release(client, redis, delivery_id="d-1", to=())
    d = delivery("gitlab", "tag_push__annotated")
    client.post("/webhook", data=d.body, headers=signed(d).headers)
    everything = client.get("/api/releases").get_json()
    assert everything["result"] == "ok"
    assert [r["tag"] for r in everything["releases"]] == ["v2.1-blue", "v2.0-green"]
    queued = client.get("/api/releases?app=myapp&state=queued&limit=1").get_json()["releases"]
    assert [r["tag"] for r in queued] == ["v2.1-blue"]
    ReleaseStore(redis).transition(older, S.ABORTED, actor="t", step="t", message="t")
    aborted = client.get("/api/releases?state=aborted").get_json()["releases"]
    assert [r["id"] for r in aborted] == [older]


@pytest.mark.parametrize(("query", "status"), [
    ("state=sleeping", 400), ("limit=0", 400), ("limit=1001", 400), ("limit=x", 400),
    ("limit=%C2%B2", 400), ("app=nope", 404), ("limit=1000", 200), ("app=", 200),
])
def test_list_releases_validates_its_query(client: FlaskClient, query: str, status: int) -> None:
    answer = client.get(f"/api/releases?{query}")
    assert answer.status_code == status
    assert answer.get_json()["result"] == ("ok" if status == 200 else "error")


def test_show_release_with_its_audit_trail(client: FlaskClient, redis: redis_lib.Redis) -> None:
    release = make_release(client, redis)
    body = client.get(f"/api/releases/{release}").get_json()
    assert body["release"]["state"] == "awaiting_promotion"
    assert body["release"]["commit"] == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert [e["state_to"] for e in body["audit"]] == ["queued", *[s.value for s in TO_AWAITING]]
    missing = client.get("/api/releases/no-such-release")
    assert (missing.status_code, missing.get_json()["code"]) == (404, "unknown_release")


@pytest.mark.parametrize("suffix", [":audit", "%3Aaudit", "%0A", "%20", "-" + "0" * 63])
def test_an_id_that_is_no_release_id_is_an_unknown_release(
        client: FlaskClient, redis: redis_lib.Redis, suffix: str) -> None:
    release = make_release(client, redis)  # its audit list is `bluegreen:release:<id>:audit`
    answer = client.get(f"/api/releases/{release}{suffix}")
    assert (answer.status_code, answer.get_json()["code"]) == (404, "unknown_release")
    assert client.get(f"/api/releases/{release}").status_code == 200


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"result": "ok"}
    assert client.get("/readyz").status_code == 200


def test_not_ready_when_redis_does_not_answer() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    client = create_app(settings(REDIS_URL=unreachable)).test_client()
    answer = client.get("/readyz")
    assert (answer.status_code, answer.get_json()["code"]) == (503, "redis_unavailable")
    assert client.get("/healthz").status_code == 200
    listing = client.get("/api/releases")
    assert (listing.status_code, listing.get_json()["code"]) == (503, "redis_unavailable")
    assert "cannot be read" in listing.get_json()["message"]  # a read changes nothing anyway
    assert "nothing was changed" not in listing.get_json()["message"]
    status = client.get("/status")
    assert (status.status_code, status.get_json()["code"]) == (503, "redis_unavailable")
    assert "cannot be read" in status.get_json()["message"]
    command = client.post("/api/apps/myapp/promote", json={"release": "x-1"}, headers=AUTH)
    assert command.status_code == 503
    assert "nothing was changed" in command.get_json()["message"]
