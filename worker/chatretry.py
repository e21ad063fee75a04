"""How the chat notifier retries a message it could not send, Slack and Mattermost alike.

A failed send is tried again after a backoff (`first` seconds, doubling with each
attempt, at most `longest`), or after the service's own `Retry-After` when it
rate-limits us. A failure that retrying cannot fix (permanent) waits for the release's
next change instead. A message's first failure leaves one note in the release's audit
trail (`failure_note`), and its catching up another (`caught_up_note`); the release
goes on regardless. `worker.notify` (Slack) and `worker.mattermost`
keep their own records of attempts; this is the policy they share, with the failure
both raise (`ChatFailure`) and how far back a send that may have worked is looked for
(`LOOKBACK`).
"""

from __future__ import annotations

from typing import Any

# s before the first send that may have worked to look for its message from: the
# service's clock is not ours.
LOOKBACK = 120.0


class ChatFailure(Exception):
    """A Slack or Mattermost call that did not work; `reason` is safe to log and to note.
    `status` is the service's HTTP status, 0 when no answer came; `error` the error code
    it answered, if any; `unsure` that the service says the call may have done part of
    its work (Slack's `fatal_error`, say) though it answered with an error."""

    def __init__(self, reason: str, *, retry_after: float | None = None,
                 permanent: bool = False, error: str = "", status: int = 0,
                 unsure: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.permanent, self.error, self.status = (
            reason, retry_after, permanent, error, status)
        self.unsure = unsure

    @property
    def may_have_worked(self) -> bool:
        """No answer, a 5xx (a proxy's 502 or 504 may come after the service did it) or an
        `unsure` error: the call may have done its work (a post may be there) all the same."""
        return self.status == 0 or self.status >= 500 or self.unsure

    @property
    def is_transient(self) -> bool:
        """No answer, a rate limit or the service's own trouble: asking again may work."""
        return self.may_have_worked or self.retry_after is not None


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


def caught_up_note(what: str, attempts: int) -> str:
    """The audit note a message's send after `attempts` failed ones leaves (`what`: as for
    `failure_note`)."""
    return f"{what} caught up after {attempts} failed attempt{'s' if attempts > 1 else ''}"
