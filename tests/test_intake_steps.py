"""The intake's steps called directly, without a server: reading odd bodies, and the log line.

The body of a signed delivery is read as `json.loads` reads it, whichever decoder
does the work: NaN, Infinity, huge integers, UTF-16, a byte order mark and lone
surrogates are read; a body that is not JSON, is not UTF-8 or nests deeper than the
stdlib's recursion limit is 400 `invalid_json`, and a lone surrogate in a field the
release keeps is 400 `malformed_payload`. A forge that sends no delivery id
gets one made from the body. The delivery's log line is exactly `json.dumps` of its
fields, whatever text they hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web import CONFIG_YAML, SECRET_ENV, Delivery, delivery, signed
from werkzeug.datastructures import Headers

from webhook import errors, forges
from webhook.intake import Answer, Outcome, Pending, log_delivery, read_pushes
from worker.config import parse_settings

SETTINGS = parse_settings(yaml.safe_load(CONFIG_YAML), SECRET_ENV)
PUSH = delivery("github", "push__tag_lightweight")
HUGE = b"123456789012345678901234567890"


def read(d: Delivery) -> Pending | Answer:
    """`read_pushes` on `d` signed, as a GitHub delivery."""
    d = signed(d)
    return read_pushes(forges.FORGES["github"], Headers(d.headers), d.headers["Content-Type"],
                       d.body, SETTINGS, Outcome())


def with_member(member: bytes) -> Delivery:
    """The tag push with `member` (raw JSON text, `"key": value`) after its other members:
    a key sent twice has its last value."""
    return PUSH.with_body(PUSH.body.rstrip().removesuffix(b"}") + b", " + member + b"}")


PLAIN = read(PUSH)


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e400", HUGE,
                                   b"-" + HUGE, b'"\\ud800"', b'"\xed\xa0\x80"',
                                   b"[" * 500 + b"]" * 500])
def test_values_json_loads_reads_are_read(value: bytes) -> None:
    assert read(with_member(b'"extra": ' + value)) == PLAIN


@pytest.mark.parametrize("encode", [lambda text: text.encode("utf-16"),
                                    lambda text: text.encode("utf-32-le"),
                                    lambda text: text.encode("utf-8-sig")],
                         ids=["utf-16", "utf-32-le", "utf-8-bom"])
def test_encodings_json_loads_reads_are_read(encode: Callable[[str], bytes]) -> None:
    assert read(PUSH.with_body(encode(PUSH.body.decode()))) == PLAIN


def test_a_lone_surrogate_in_what_a_release_keeps_is_malformed() -> None:
    """Read elsewhere in the body (above), a lone surrogate in the tag or the pusher
    would have to be stored, logged and sent to chat, none of which takes it."""
    with pytest.raises(errors.MalformedPayload,
                       match=r"^github payload: the push's pusher is not UTF-8 text"):
        read(with_member(b'"pusher": {"name": "\\udc80"}'))
    body = PUSH.body.replace(b'"refs/tags/v2.0-green"', b'"refs/tags/v2.0\\ud800-green"')
    with pytest.raises(errors.MalformedPayload, match=r"the push's tag is not UTF-8 text"):
        read(PUSH.with_body(body))


def test_a_huge_integer_where_the_ref_belongs_is_malformed() -> None:
    body = PUSH.body.replace(b'"refs/tags/v2.0-green"', HUGE)
    with pytest.raises(errors.MalformedPayload, match=r"^github payload: body.ref must be a "
                                                      r"non-empty string$"):
        read(PUSH.with_body(body))


@pytest.mark.parametrize("body", [
    b'{"ref": ', b'{"ref": "refs/tags/v2.0-green"} x', b"", b"\xff\xfe\xfd",
    PUSH.body.replace(b"acme/myapp", b"acme/\xffmyapp"),
    b"[" * 100_000 + b"]" * 100_000, b"[" * 2000,
], ids=["cut", "trailing", "empty", "binary", "invalid-utf8", "too-deep", "unclosed"])
def test_what_json_loads_refuses_is_invalid_json(body: bytes) -> None:
    with pytest.raises(errors.InvalidJson):
        read(PUSH.with_body(body))


def test_a_delivery_without_an_id_is_named_after_its_body() -> None:
    headers = {k: v for k, v in PUSH.headers.items() if k != "X-GitHub-Delivery"}
    answer = read(Delivery("github", headers, PUSH.body))
    expected = "body-" + hashlib.sha256(PUSH.body).hexdigest()[:32]
    assert isinstance(answer, Pending) and answer.events[0].delivery_id == expected
    assert isinstance(PLAIN, Pending)
    assert PLAIN.events[0].delivery_id == PUSH.headers["X-GitHub-Delivery"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(value=json_values, ensure_ascii=st.booleans())
def test_any_value_json_dumps_writes_is_read(value: object, ensure_ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    member = b'"extra": ' + text.encode("utf-8", "surrogatepass")
    assert read(with_member(member)) == PLAIN


texts = st.text(st.characters(exclude_categories=()), max_size=300)  # surrogates too
outcomes = st.builds(
    Outcome, forge=st.none() | st.sampled_from(sorted(forges.FORGES)),
    delivery=st.none() | texts, repository=st.none() | texts,
    tags=st.lists(texts, max_size=25), releases=st.lists(texts, max_size=3),
    result=st.sampled_from(["queued", "duplicate", "ignored", "error"]),
    reason=st.none() | texts)


def expected_line(outcome: Outcome) -> str:
    """The line as `json.dumps` writes it: values clipped to 200 characters, tags to 20."""
    def clip(value: str | None) -> str | None:
        return None if value is None else value[:200]

    return json.dumps({"event": "webhook", "forge": outcome.forge,
                       "delivery": clip(outcome.delivery),
                       "repository": clip(outcome.repository),
                       "tags": [clip(t) for t in outcome.tags[:20]], "result": outcome.result,
                       "reason": clip(outcome.reason), "status": outcome.status,
                       "releases": outcome.releases}, ensure_ascii=True)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcome=outcomes, status=st.sampled_from([200, 202, 400, 401, 404, 413, 415, 500]))
def test_the_log_line_is_json_dumps_of_its_fields(caplog: pytest.LogCaptureFixture,
                                                  outcome: Outcome, status: int) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bluegreen.webhook"):
        log_delivery(outcome, status)
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("bluegreen.webhook", logging.INFO)
    assert record.getMessage() == expected_line(outcome)
