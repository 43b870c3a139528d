"""The vendor error tree every adapter maps its SDK's failures onto.

    VendorError
    ├── Throttled(retry_after)   vendor said "slow down"; retry the same bytes later
    ├── Transient                timeout, 5xx, connection reset, malformed answer; retry
    │   ├── MalformedAnswer      the vendor answered, but not in its documented format
    │   ├── AnswerLost           the worker that sent the request died; the vendor may have billed it
    │   └── TimedOut             we stopped waiting for the answer; the vendor may have billed it
    ├── Rejected                 the vendor (or our pre-flight check) refuses this input
    ├── AuthError                credentials missing or refused; stop the job
    └── Fatal                    anything else that retrying cannot fix

Adapters translate foreign exceptions in exactly one function each and re-raise
``from`` the original, so the engine never sees an SDK's own exception types.
Messages never carry credentials.
"""

from __future__ import annotations

from apiwrap.errors import ApiwrapError

__all__ = [
    "AnswerLost",
    "AuthError",
    "Fatal",
    "MalformedAnswer",
    "Rejected",
    "Throttled",
    "TimedOut",
    "Transient",
    "VendorError",
]


class VendorError(ApiwrapError):
    """Base of every failure of a vendor query."""

    #: Short machine-readable outcome recorded in the journal and the budget ledger.
    outcome = "error"
    #: Whether sending the same bytes again may succeed.
    retryable = False


class Throttled(VendorError):
    """The vendor refused the request for rate or quota reasons."""

    outcome = "throttled"
    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(VendorError):
    """A failure that may not happen again: timeout, 5xx, reset connection."""

    outcome = "transient"
    retryable = True


class MalformedAnswer(Transient):
    """The vendor answered with a body we cannot parse."""

    outcome = "malformed"


class AnswerLost(Transient):
    """The request may have reached the vendor, but the process that sent it died before the answer.

    Retried with the same bytes like any transient failure; billed by default, because the
    vendor may have done the work and a cap must hold in that case too.
    """

    outcome = "lost"


class TimedOut(Transient):
    """No answer came within the client timeout; the request may still be served, and billed.

    Retried with the same bytes; counted against every cap as *possibly billed*, since a vendor
    bills the work it did whether or not the client still waited for the answer.
    """

    outcome = "timeout"


class Rejected(VendorError):
    """The input itself is refused (size, format, dimensions)."""

    outcome = "rejected"


class AuthError(VendorError):
    """Credentials are missing, invalid or lack permission."""

    outcome = "auth"


class Fatal(VendorError):
    """A failure that no retry can fix (unknown error, bad configuration)."""

    outcome = "fatal"
