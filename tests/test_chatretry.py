"""The retry policy Slack and Mattermost messages share (`worker.chatretry`).

The notifier tests (test_notify.py, test_mattermost.py) run it against fake services;
these pin its edges: odd `Retry-After` headers, the cap on the backoff, and the note
a person reads in the release's audit trail.
"""

from __future__ import annotations

import pytest

from worker import chatretry


@pytest.mark.parametrize(("header", "seconds"), [
    ("2", 2.0), ("7.5", 7.5), ("0", 1.0), ("-3", 1.0), ("0.2", 1.0), (None, 1.0),
    ("", 1.0), ("soon", 1.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0), (30, 30.0),
])
def test_retry_after_is_at_least_a_second(header: object, seconds: float) -> None:
    assert chatretry.retry_after_seconds(header) == seconds


def test_the_backoff_doubles_up_to_its_cap_and_yields_to_retry_after() -> None:
    backoff = (1.0, 300.0)
    assert [chatretry.next_try_in(backoff, n, None) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert chatretry.next_try_in(backoff, 9, 12.0) == 12.0  # the service asked for 12 s


def test_the_audit_note_says_what_happens_next() -> None:
    assert chatretry.failure_note("Slack message", "Slack answered HTTP 500",
                                  permanent=False) == (
        "Slack message not updated: Slack answered HTTP 500; retrying with backoff "
        "(the release goes on regardless)")
    assert chatretry.failure_note("Mattermost post", "Mattermost answered HTTP 403",
                                  permanent=True) == (
        "Mattermost post not updated: Mattermost answered HTTP 403; it is tried again "
        "when the release next changes (the release goes on regardless)")
