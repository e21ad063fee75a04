"""How the chat notifier retries a message it could not send, Slack and Mattermost alike.

A failed send is tried again after a backoff (`first` seconds, doubling with each
attempt, at most `longest`), or after the service's own `Retry-After` when it
rate-limits us. A failure that retrying cannot fix (permanent) waits for the release's
next change instead. A message's first failure leaves one note in the release's audit
trail; the release goes on regardless. `worker.notify` (Slack) and `worker.mattermost`
keep their own records of attempts; this is the policy they share.
"""

from __future__ import annotations

from typing import Any


def retry_after_seconds(value: Any) -> float:
    """A `Retry-After` header as seconds: at least 1, and 1 when missing or not a number."""
    try:
        return max(1.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def next_try_in(backoff: tuple[float, float], attempts: int,
                retry_after: float | None) -> float:
    """Seconds until the next try after `attempts` failed ones: the service's
    `Retry-After` if it gave one, else the backoff `(first, longest)` for that attempt."""
    first, longest = backoff
    return retry_after or min(longest, first * 2 ** (attempts - 1))


def failure_note(what: str, reason: str, *, permanent: bool) -> str:
    """The audit note a message's first failed send leaves (`what`: "Slack message")."""
    then = ("it is tried again when the release next changes" if permanent
            else "retrying with backoff")
    return f"{what} not updated: {reason}; {then} (the release goes on regardless)"
