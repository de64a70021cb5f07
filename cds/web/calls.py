"""The CDS Hooks endpoints: discovery, hook calls and feedback.

Each call is authenticated for its exact URL, its body read within the limit and only as JSON, then handed to
the service; every failure becomes its status in `errors.failure`, in the caller's EHR's error format, and
each call leaves one log line of ids and outcome (never a token or patient data) and its metrics.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cds.hooks.auth import AuthError, VerifiedClient
from cds.hooks.discovery import Discovery, Service
from cds.hooks.errors import HookError, UnknownService
from cds.web.errors import NotJson, error_body, failure, in_format
from cds.web.guards import read_body
from cds.web.openapi import contract
from cds.web.service import CdsService

log = logging.getLogger("hipflex_cds.service")
Handler = Callable[[Service, bytes, VerifiedClient | None], Awaitable[dict[str, Any] | Response]]


def calls_router(cds: CdsService) -> APIRouter:
    router = APIRouter(tags=["CDS Hooks"])

    @router.get("/cds-services", summary="CDS Hooks discovery", openapi_extra=contract(None, "Discovery"))
    async def discovery(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            client = await verified(cds, request, "/cds-services")
            offered = [s for s in cds.services_by_id.values() if client is None or client.profile.offers(s.hook)]
            return Discovery(services=offered).model_dump()
        return await guarded(cds, request, "discovery", "discovery", work)

    @router.post("/cds-services/{service_id}", summary="Call a CDS service (hook request)",
                 openapi_extra=contract("HookRequest", "CDSResponse"))
    async def call(service_id: str, request: Request) -> Response:
        return await posted(cds, service_id, request, "hook", cds.answer)

    @router.post("/cds-services/{service_id}/feedback", summary="Feedback on issued cards",
                 openapi_extra=contract("FeedbackRequest", "FeedbackStored"))
    async def feedback(service_id: str, request: Request) -> Response:
        return await posted(cds, service_id, request, "feedback", cds.feedback)

    return router


async def verified(cds: CdsService, request: Request, path: str) -> VerifiedClient | None:
    """The client verified for this exact URL (None with authentication off); its EHR profile is kept for the
    error format."""
    # a token's check may fetch the issuer's JWKS, so it runs off the event loop; with authentication off there is
    # nothing to check and no reason for the thread hop (about 0.3 ms a call)
    client = await run_in_threadpool(cds.authenticate, request, path) if cds.auth is not None else None
    request.state.profile = client.profile if client else None
    return client


async def posted(cds: CdsService, service_id: str, request: Request, endpoint: str, handle: Handler) -> Response:
    """A POST to a service or its feedback: known service offered to this EHR, token for this exact URL, JSON,
    capped body."""
    async def work() -> dict[str, Any] | Response:
        service = cds.service(service_id)
        suffix = "/feedback" if endpoint == "feedback" else ""
        client = await verified(cds, request, f"/cds-services/{service_id}{suffix}")
        if client is not None and not client.profile.offers(service.hook):
            raise UnknownService(f"no CDS service with id {service_id!r} for this EHR (its profile offers "
                                 f"{', '.join(client.profile.hooks or [])})")
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in ("application/json", "application/fhir+json"):
            raise NotJson(f"the body must be sent as Content-Type: application/json, not {media[:60] or 'none'!r}")
        return await handle(service, await read_body(request, cds.settings.limits.max_body_bytes), client)
    return await guarded(cds, request, service_id, endpoint, work)


async def guarded(cds: CdsService, request: Request, service_id: str, endpoint: str,
                  work: Callable[[], Awaitable[Any]]) -> Response:
    """Run one call, mapping every failure to its status; time it; log ids and outcome only."""
    started, correlation = time.perf_counter(), str(uuid.uuid4())
    if service_id not in cds.services_by_id and service_id != "discovery":
        service_id = "(unknown)"  # a client-chosen path must not become a log field or a metric label
    extra: dict[str, Any] = {"service": service_id, "correlation_id": correlation}
    try:
        result = await work()
        response: Response = result if isinstance(result, Response) else JSONResponse(result)
    except Exception as exc:
        extra |= _logged(exc)
        known = failure(exc)
        if known is None:
            log.exception("internal error", extra=extra)
            known = error_body(500, "internal-error", f"internal error; correlation id {correlation}")
        response = in_format(known, _error_format(cds, request, exc))
    seconds = time.perf_counter() - started
    cds.metrics.observe(service_id, endpoint, response.status_code, seconds)
    log.info("%s %s", endpoint, response.status_code,
             extra=extra | {"status": response.status_code, "duration_ms": round(seconds * 1000, 1)})
    return response


def _logged(exc: Exception) -> dict[str, Any]:
    """What the log line adds for a failure: which check, issuer and kid, or which prefetch key, check or field;
    never the token or the data."""
    if isinstance(exc, AuthError):
        return {"auth_check": exc.check, "issuer": exc.issuer, "kid": exc.kid}
    if isinstance(exc, HookError):
        return exc.log | {"error": exc.error} | ({"field": exc.field} if exc.field else {})
    return {}


def _error_format(cds: CdsService, request: Request, exc: Exception) -> str:
    """The caller's EHR profile's error format: once authenticated, or that of the issuer a refused token named."""
    profile = getattr(request.state, "profile", None)
    if profile is None and isinstance(exc, AuthError) and cds.auth is not None and exc.issuer:
        issuer = cds.auth.issuers.get(exc.issuer)
        profile = issuer.profile if issuer else None
    return str(profile.error_format) if profile else "json"
