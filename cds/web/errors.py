"""The one place an error becomes an HTTP status (S2 #http-response; 412 per S2 #prefetch).

Every expected failure is a class with its status as data in `REGISTRY`: 400 names the field and the problem,
401 the failed token check, 403 a cross-site form, 404 an unknown service, card or rule, 412 data that is needed
but unobtainable, 413 a body over the limit, 415 a body not sent as JSON, 503 too much at once (with
Retry-After). Anything else is an internal fault: a generic 500 with a correlation id, details in the log only.
An EHR whose profile asks for it gets the body as a FHIR OperationOutcome.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from cds.errors import HipflexError
from cds.hooks.auth import AuthError
from cds.hooks.ehrprofile import operation_outcome
from cds.hooks.errors import DataUnavailable, InvalidRequest, LargeCallsQueued, UnknownCard, UnknownRule, UnknownService


class WebError(HipflexError):
    """An HTTP-level failure (the body, the connection, the load); `status` and `error` are its answer."""

    status = 400
    error = "bad-request"


class NotJson(WebError):
    """A hook or feedback body declared as something other than JSON: a web page can then only send it after a
    CORS preflight, which the service answers for the configured origins alone."""

    status, error = 415, "unsupported-media-type"


class Busy(WebError):
    """Too many hook calls in flight."""

    status, error = 503, "busy"


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a stable word, a plain message, and where in the body when it is there."""

    error: str
    message: str
    field: str | None = None


# (class, status); a class's own `error` word is used when it has one, else the word given here.
REGISTRY: list[tuple[type[Exception], int, str | None]] = [
    (InvalidRequest, 400, None), (UnknownService, 404, None), (UnknownCard, 404, None), (UnknownRule, 404, None),
    (DataUnavailable, 412, None), (LargeCallsQueued, 503, None), (AuthError, 401, "unauthorized"),
    (ClientDisconnect, 400, "client-disconnected"), (WebError, 0, None)]
MESSAGES: dict[type[Exception], str] = {ClientDisconnect: "the connection closed before the request body arrived"}


def error_body(status: int, error: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(status_code=status, content=body, headers=headers)


def failure(exc: Exception) -> JSONResponse | None:
    """The response for an expected failure, or None for an internal fault (500)."""
    for kind, status, word in REGISTRY:
        if isinstance(exc, kind):
            message = MESSAGES.get(kind) or getattr(exc, "message", None) or str(exc)
            return error_body(status or getattr(exc, "status", 400), str(word or getattr(exc, "error", "error")),
                              message, getattr(exc, "field", None))
    return None


def in_format(response: JSONResponse, error_format: str) -> JSONResponse:
    """The error as the caller's EHR wants it: this service's JSON, or a FHIR OperationOutcome."""
    if error_format != "operation-outcome":
        return response
    kept = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    return JSONResponse(operation_outcome(response.status_code, json.loads(bytes(response.body))),
                        status_code=response.status_code, media_type="application/fhir+json", headers=kept)
