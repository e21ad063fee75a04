"""Forge payload parsing: each fixture file maps to the tags it creates or why it is ignored.

A new case is one fixture file under tests/fixtures/<forge>/ and one line in CASES.
Also covers forge detection from headers (Forgejo and Gitea before GitHub).
"""

from __future__ import annotations

import pytest
from web import delivery, fixture_names
from werkzeug.datastructures import Headers

from webhook.forges import FORGES, Ignored, MalformedPayload, TagPush, detect

C1 = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
C2 = "a10867b14bb761a232cd80139fbd4c0d33264240"
REPO = "acme/myapp"

# fixture -> [(repository, tag, commit), ...] | "ignored: <words in the reason>" | MalformedPayload
CASES: dict[tuple[str, str], object] = {
    ("github", "push__tag_lightweight"): [(REPO, "v2.0-green", C1)],
    ("github", "push__tag_annotated"): [(REPO, "v2.1-blue", C1)],
    ("github", "push__tag_nonmatching"): [(REPO, "v2.0", C1)],
    ("github", "push__unknown_repo"): [("acme/website", "v2.0-green", C1)],
    ("github", "push__tag_deleted"): "ignored: deleted",
    ("github", "push__branch"): "ignored: branch push",
    ("github", "create__tag"): "ignored: push event",
    ("github", "ping__hook"): "ignored: ping",
    ("github", "issues__opened"): "ignored: not a tag push",
    ("github", "push__malformed_no_repository"): MalformedPayload,
    ("github", "push__malformed_ref_number"): MalformedPayload,
    ("gitlab", "tag_push__lightweight"): [(REPO, "v2.0-green", C1)],
    ("gitlab", "tag_push__annotated"): [(REPO, "v2.1-blue", C1)],
    ("gitlab", "tag_push__deleted"): "ignored: deleted",
    ("gitlab", "push__branch"): "ignored: branch push",
    ("gitlab", "note__comment"): "ignored: not a tag push",
    ("gitlab", "tag_push__malformed_no_project"): MalformedPayload,
    ("gitea", "push__tag"): [(REPO, "v2.0-green", C1)],
    ("gitea", "push__tag_no_head_commit"): [(REPO, "v2.1-blue", C2)],
    ("gitea", "push__tag_deleted"): "ignored: deleted",
    ("gitea", "push__branch"): "ignored: branch push",
    ("gitea", "create__tag"): "ignored: push event",
    ("gitea", "delete__tag"): "ignored: not a tag push",
    ("forgejo", "push__tag"): [(REPO, "v2.0-green", C1)],
    ("bitbucket", "repo_push__tag"): [(REPO, "v2.0-green", C1)],
    ("bitbucket", "repo_push__several_tags"): [
        (REPO, "v2.0-green", C1), (REPO, "v2.1-blue", C2), (REPO, "v2.1", C2)],
    ("bitbucket", "repo_push__tag_deleted"): "ignored: created no tag",
    ("bitbucket", "repo_push__branch"): "ignored: created no tag",
    ("bitbucket", "pullrequest_created__pr"): "ignored: not a tag push",
    ("bitbucket", "repo_push__malformed_no_target"): MalformedPayload,
}


@pytest.mark.parametrize(("forge", "name"), sorted(CASES), ids="/".join)
def test_fixture_parses_to_expected_result(forge: str, name: str) -> None:
    d = delivery(forge, name)
    headers = Headers(d.headers)
    expected = CASES[(forge, name)]
    assert detect(headers) is FORGES[forge]
    if expected is MalformedPayload:
        with pytest.raises(MalformedPayload):
            FORGES[forge].parse(headers, d.json)
        return
    result = FORGES[forge].parse(headers, d.json)
    if isinstance(expected, str):
        assert isinstance(result, Ignored)
        assert expected.removeprefix("ignored: ") in result.reason
        return
    assert isinstance(result, tuple)
    assert [(p.repository, p.tag, p.commit) for p in result] == expected
    assert all(p.forge == forge and p.delivery_id and p.pusher != "unknown" for p in result)


def test_every_fixture_file_has_an_expected_result() -> None:
    assert sorted(fixture_names()) == sorted(CASES)


def test_delivery_id_comes_from_the_forge_header() -> None:
    d = delivery("gitlab", "tag_push__lightweight")
    result = FORGES["gitlab"].parse(Headers(d.headers), d.json)
    assert isinstance(result, tuple)
    assert result[0] == TagPush(forge="gitlab", repository=REPO, tag="v2.0-green", commit=C1,
                                delivery_id=d.headers["Idempotency-Key"], pusher="jdoe")


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Forgejo-Event": "push", "X-Gitea-Event": "push", "X-GitHub-Event": "push"}, "forgejo"),
    ({"X-Gitea-Event": "push", "X-GitHub-Event": "push"}, "gitea"),
    ({"X-GitHub-Event": "push"}, "github"),
    ({"X-Gitlab-Event": "Tag Push Hook"}, "gitlab"),
    ({"X-Event-Key": "repo:push"}, "bitbucket"),
    ({"x-github-event": "push"}, "github"),
])
def test_detect_prefers_gitea_and_forgejo_over_github(headers: dict[str, str],
                                                       expected: str) -> None:
    forge = detect(Headers(headers))
    assert forge is not None and forge.name == expected


def test_no_forge_header_detects_nothing() -> None:
    assert detect(Headers({"User-Agent": "curl/8"})) is None


@pytest.mark.parametrize("body", [None, [], "text", 3, {"ref": None}, {"ref": "refs/tags/"},
                                  {"ref": "refs/tags/v1-blue", "repository": []},
                                  {"ref": "refs/tags/v1-blue", "repository": {"full_name": 1}}])
@pytest.mark.parametrize("forge", ["github", "gitea", "forgejo"])
def test_github_shaped_push_with_a_wrong_shape_is_malformed(forge: str, body: object) -> None:
    headers = Headers({FORGES[forge].event_header: "push"})
    with pytest.raises(MalformedPayload):
        FORGES[forge].parse(headers, body)


@pytest.mark.parametrize("field", ["repository", "tag", "commit", "delivery_id", "pusher"])
def test_a_push_whose_text_holds_a_lone_surrogate_is_malformed(field: str) -> None:
    """What every forge's parser builds: a lone surrogate (JSON can escape one) is no
    text a release could keep, wherever it is; text beyond ASCII is kept as it is."""
    values = dict(forge="github", repository="acme/myapp", tag="v1.0-grün", commit="a" * 40,
                  delivery_id="d-1", pusher="Zoë")
    assert TagPush(**values).tag == "v1.0-grün"
    values[field] += "\udc80"
    with pytest.raises(MalformedPayload,
                       match=f"^the push's {field.replace('_', ' ')} is not UTF-8 text"):
        TagPush(**values)
