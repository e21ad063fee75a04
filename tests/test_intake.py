"""POST /webhook through a real gunicorn process and a real Redis: SPEC §3's webhook table.

Each row of the table — queued, duplicate, ignored, 401, 400, 415, 413, 405 — is
checked for status and body, and every refusal or ignored delivery is checked to
have recorded and queued nothing (the Redis database stays empty). Redis going away
(503) is in test_webhook_gunicorn.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis as redis_lib
from conftest import RedisServer
from rq import Queue
from web import (
    SECRETS,
    Delivery,
    Gunicorn,
    delivery,
    http,
    signed,
    start_web,
    with_delivery_id,
)

from worker import metrics

C1 = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def nothing_recorded(redis: redis_lib.Redis) -> bool:
    """No key but the delivery counters of /metrics (a refused delivery is still counted)."""
    return all(key.startswith(metrics.PREFIX.encode()) for key in redis.keys("*"))


def queued_jobs(redis: redis_lib.Redis) -> int:
    return Queue("deploy", connection=redis).count


CREATED = [("github", "push__tag_lightweight", "v2.0-green"),
           ("github", "push__tag_annotated", "v2.1-blue"),
           ("gitlab", "tag_push__lightweight", "v2.0-green"),
           ("gitlab", "tag_push__annotated", "v2.1-blue"),
           ("gitea", "push__tag", "v2.0-green"),
           ("forgejo", "push__tag", "v2.0-green"),
           ("bitbucket", "repo_push__tag", "v2.0-green")]


@pytest.mark.parametrize(("forge", "name", "tag"), CREATED)
def test_matching_tag_is_queued(web: Gunicorn, redis: redis_lib.Redis, forge: str, name: str,
                                tag: str) -> None:
    answer = web.post("/webhook", signed(delivery(forge, name)))
    assert answer.status == 202, answer.body
    (release,) = answer.json["releases"]
    assert answer.json["result"] == "queued"
    assert release["app"] == "myapp" and release["tag"] == tag and release["position"] == 1
    assert release["color"] == tag.rsplit("-", 1)[1]
    record = http("GET", f"{web.url}/api/releases/{release['id']}").json["release"]
    assert (record["state"], record["commit"], record["forge"]) == ("queued", C1, forge)
    assert queued_jobs(redis) == 1


def test_forge_named_in_the_path(web: Gunicorn, redis: redis_lib.Redis) -> None:
    answer = web.post("/webhook/gitlab", signed(delivery("gitlab", "tag_push__lightweight")))
    assert answer.status == 202
    assert queued_jobs(redis) == 1


def test_same_delivery_again_is_a_duplicate(web: Gunicorn, redis: redis_lib.Redis) -> None:
    d = signed(delivery("github", "push__tag_lightweight"))
    first = web.post("/webhook", d).json["releases"][0]["id"]
    again = web.post("/webhook", d)
    assert (again.status, again.json["result"], again.json["release"]) == (200, "duplicate", first)
    assert queued_jobs(redis) == 1


def test_same_repository_tag_and_commit_is_a_duplicate(web: Gunicorn,
                                                       redis: redis_lib.Redis) -> None:
    d = delivery("github", "push__tag_lightweight")
    first = web.post("/webhook", signed(with_delivery_id(d, "delivery-a"))).json
    again = web.post("/webhook", signed(with_delivery_id(d, "delivery-b")))
    assert (again.status, again.json["release"]) == (200, first["releases"][0]["id"])
    assert queued_jobs(redis) == 1


def test_github_create_event_adds_nothing_to_its_push(web: Gunicorn,
                                                      redis: redis_lib.Redis) -> None:
    pushed = web.post("/webhook", signed(delivery("github", "push__tag_lightweight")))
    created = web.post("/webhook", signed(with_delivery_id(delivery("github", "create__tag"),
                                                           "another-delivery")))
    assert pushed.status == 202
    assert (created.status, created.json["result"]) == (200, "ignored")
    assert queued_jobs(redis) == 1


def test_several_tags_some_already_released(web: Gunicorn, redis: redis_lib.Redis) -> None:
    web.post("/webhook", signed(delivery("github", "push__tag_lightweight")))
    answer = web.post("/webhook", signed(delivery("bitbucket", "repo_push__several_tags")))
    assert answer.status == 202
    assert [r["tag"] for r in answer.json["releases"]] == ["v2.1-blue"]
    assert answer.json["releases"][0]["position"] == 2
    assert [r["tag"] for r in answer.json["duplicates"]] == ["v2.0-green"]
    assert "v2.1 matches no tag pattern" in answer.json["ignored"][0]
    assert queued_jobs(redis) == 2


def test_several_new_tags_in_one_delivery_each_get_a_release(web: Gunicorn,
                                                             redis: redis_lib.Redis) -> None:
    d = signed(delivery("bitbucket", "repo_push__several_tags"))
    answer = web.post("/webhook", d)
    assert [r["tag"] for r in answer.json["releases"]] == ["v2.0-green", "v2.1-blue"]
    retried = web.post("/webhook", d)
    assert (retried.status, retried.json["result"]) == (200, "duplicate")
    assert queued_jobs(redis) == 2


IGNORED = [
    ("github", "ping__hook", "ping"),
    ("github", "push__branch", "branch push"),
    ("github", "push__tag_deleted", "deleted"),
    ("github", "push__tag_nonmatching", "matches no tag pattern"),
    ("github", "issues__opened", "not a tag push"),
    ("github", "push__unknown_repo", "matches no tag pattern of website"),
    ("gitlab", "push__branch", "branch push"),
    ("gitlab", "tag_push__deleted", "deleted"),
    ("gitlab", "note__comment", "not a tag push"),
    ("gitea", "push__tag_deleted", "deleted"),
    ("gitea", "delete__tag", "not a tag push"),
    ("bitbucket", "repo_push__tag_deleted", "created no tag"),
    ("bitbucket", "pullrequest_created__pr", "not a tag push"),
]


@pytest.mark.parametrize(("forge", "name", "reason"), IGNORED)
def test_ignored_with_a_reason(web: Gunicorn, redis: redis_lib.Redis, forge: str, name: str,
                               reason: str) -> None:
    answer = web.post("/webhook", signed(delivery(forge, name)))
    assert (answer.status, answer.json["result"]) == (200, "ignored")
    assert reason in answer.json["reason"]
    assert nothing_recorded(redis)


def test_repository_not_configured_is_ignored(web: Gunicorn, redis: redis_lib.Redis) -> None:
    d = delivery("github", "push__tag_lightweight")
    body = d.json
    body["repository"]["full_name"] = "someone/else"
    answer = web.post("/webhook", signed(d.with_body(body)))
    assert (answer.status, answer.json["result"]) == (200, "ignored")
    assert "someone/else is not configured" in answer.json["reason"]
    assert nothing_recorded(redis)


@pytest.mark.parametrize("tag", ["v2.0-green\n", "v2.0-green\x00", "v2..0-green",
                                 "v2.0-green.lock"])
def test_a_tag_git_would_not_allow_is_ignored(web: Gunicorn, redis: redis_lib.Redis,
                                              tag: str) -> None:
    """The seed's `^v.*-green$` matches `v2.0-green\\n`; no such tag was ever pushed."""
    d = delivery("github", "push__tag_lightweight")
    answer = web.post("/webhook", signed(d.with_body({**d.json, "ref": f"refs/tags/{tag}"})))
    assert (answer.status, answer.json["result"]) == (200, "ignored")
    assert f"tag {tag!r} is not a name Git allows for a tag" in answer.json["reason"]
    assert nothing_recorded(redis)


def test_a_bad_tag_among_good_ones_is_ignored_alone(web: Gunicorn,
                                                    redis: redis_lib.Redis) -> None:
    d = delivery("bitbucket", "repo_push__several_tags")
    body = json.loads(json.dumps(d.json))
    body["push"]["changes"][0]["new"]["name"] += "\n"
    answer = web.post("/webhook", signed(d.with_body(body)))
    assert answer.status == 202, answer.body
    assert [r["tag"] for r in answer.json["releases"]] == ["v2.1-blue"]
    assert answer.json["ignored"][0] == ("tag 'v2.0-green\\n' is not a name Git allows for "
                                         "a tag: it contains '\\n'")


def _unsigned(d: Delivery) -> Delivery:
    return d


def _wrong_secret(d: Delivery) -> Delivery:
    return signed(d, "not-the-secret")


def _signature_of_another_body(d: Delivery) -> Delivery:
    return signed(d).with_body(d.body + b" ")


def _form_encoded(d: Delivery) -> Delivery:
    form = d.with_body(urlencode({"payload": d.body.decode()}).encode())
    return signed(form.with_headers(Content_Type="application/x-www-form-urlencoded"))


def _text_plain(d: Delivery) -> Delivery:
    return signed(d.with_headers(Content_Type="text/plain"))


def _not_json(d: Delivery) -> Delivery:
    return signed(d.with_body(b'{"ref": "refs/tags/v2.0-green",'))


def _too_large(d: Delivery) -> Delivery:
    return signed(d.with_body(b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'))


def _no_forge_headers(d: Delivery) -> Delivery:
    return Delivery(d.forge, {"Content-Type": "application/json"}, d.body)


REFUSALS: list[tuple[str, Callable[[Delivery], Delivery], str, int, str]] = [
    ("github", _unsigned, "/webhook", 401, "unauthorized"),
    ("github", _wrong_secret, "/webhook", 401, "unauthorized"),
    ("github", _signature_of_another_body, "/webhook", 401, "unauthorized"),
    ("gitlab", _unsigned, "/webhook", 401, "unauthorized"),
    ("gitlab", _wrong_secret, "/webhook", 401, "unauthorized"),
    ("gitea", _wrong_secret, "/webhook", 401, "unauthorized"),
    ("forgejo", _unsigned, "/webhook", 401, "unauthorized"),
    ("bitbucket", _wrong_secret, "/webhook", 401, "unauthorized"),
    ("github", _not_json, "/webhook", 400, "invalid_json"),
    ("github", _form_encoded, "/webhook", 415, "unsupported_media_type"),
    ("gitea", _text_plain, "/webhook", 415, "unsupported_media_type"),
    ("github", _too_large, "/webhook", 413, "payload_too_large"),
    ("github", _no_forge_headers, "/webhook", 400, "unknown_forge"),
    ("github", signed, "/webhook/subversion", 404, "unknown_forge"),
]
CREATED_FIXTURE = {forge: name for forge, name, _ in reversed(CREATED)}


@pytest.mark.parametrize(("forge", "tamper", "path", "status", "code"), REFUSALS,
                         ids=[f"{f}-{t.__name__.strip('_')}-{s}" for f, t, _, s, _ in REFUSALS])
def test_refusals_record_nothing(web: Gunicorn, redis: redis_lib.Redis, forge: str,
                                 tamper: Callable[[Delivery], Delivery], path: str, status: int,
                                 code: str) -> None:
    answer = web.post(path, tamper(delivery(forge, CREATED_FIXTURE[forge])))
    assert answer.status == status, answer.body
    assert answer.json["result"] == "error" and answer.json["code"] == code
    assert answer.json["message"]
    assert not any(secret.encode() in answer.body for secret in SECRETS.values())
    assert nothing_recorded(redis)


def test_form_mode_refusal_says_what_to_pick(web: Gunicorn) -> None:
    answer = web.post("/webhook", _form_encoded(delivery("github", "push__tag_lightweight")))
    assert "application/json" in answer.json["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405_json(web: Gunicorn, redis: redis_lib.Redis, method: str) -> None:
    d = signed(delivery("github", "push__tag_lightweight"))
    answer = http(method, f"{web.url}/webhook", d.body, d.headers)
    assert answer.status == 405
    assert json.loads(answer.body)["code"] == "method_not_allowed"
    assert "POST" in answer.headers["Allow"]
    assert nothing_recorded(redis)


def test_forge_without_a_secret_is_401(redis_server: RedisServer, redis: redis_lib.Redis,
                                       tmp_path: Path) -> None:
    web = start_web(redis_server.url, tmp_path, BITBUCKET_WEBHOOK_SECRET="")
    try:
        answer = web.post("/webhook", signed(delivery("bitbucket", "repo_push__tag")))
    finally:
        web.stop()
    assert (answer.status, answer.json["code"]) == (401, "unauthorized")
    assert "not configured" in answer.json["message"]
    assert nothing_recorded(redis)


def test_chunked_body_over_the_cap_is_413(web: Gunicorn, redis: redis_lib.Redis) -> None:
    big = signed(delivery("github", "push__tag_lightweight").with_body(
        b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'))
    conn = HTTPConnection("127.0.0.1", web.port, timeout=10)
    chunks = (big.body[i:i + 65536] for i in range(0, len(big.body), 65536))
    headers = {k: v for k, v in big.headers.items() if k.lower() != "content-length"}
    conn.request("POST", "/webhook", body=chunks, headers=headers, encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 413
    assert json.loads(answer.read())["code"] == "payload_too_large"
    conn.close()
    assert nothing_recorded(redis)
