"""Why a hook call or a feedback call cannot be answered, in domain words.

Raised where the problem is found (request parsing, gathering, feedback); the web layer turns
each class into its HTTP status in one place (`cds.web.app.STATUS`). `error` is a stable
machine-readable word, `message` says what is wrong in plain words (never a token or patient
data), `field` names where in the body, when it is somewhere in the body.
"""

from __future__ import annotations

from cds.errors import HipflexError


class HookError(HipflexError):
    """Base of the domain errors; never raised itself."""

    error = "hook-error"

    def __init__(self, message: str, field: str | None = None, *, error: str | None = None,
                 log: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field
        self.log = log or {}  # what the log line adds (ids and check words only, never patient data)
        if error is not None:
            self.error = error


class InvalidRequest(HookError):
    """The body breaks CDS Hooks 2.0 or this service's request rules (bad JSON, a missing context field…)."""

    error = "invalid-request"


class UnknownService(HookError):
    """No CDS service has this id."""

    error = "unknown-service"


class UnknownCard(HookError):
    """Feedback names a card this service did not issue (or issued on another service id)."""

    error = "unknown-card"


class DataUnavailable(HookError):
    """Data the decision needs (the patient, the observations) could not be had from prefetch or fhirServer."""

    error = "data-unavailable"


class UnknownRule(HookError):
    """No rule has this id (the rule pages)."""

    error = "unknown-rule"


class LargeCallsQueued(HookError):
    """Too many large calls (by resources carried) are already waiting for their turn (503 with Retry-After)."""

    error = "busy"
