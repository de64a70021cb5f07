"""The CDS Hooks 2.0 HTTP service (https://cds-hooks.hl7.org/2.0/): discovery, hook calls, feedback.

This module only speaks HTTP: it authenticates, reads the body within its limit, hands the work
to the modules of the data flow, and maps their errors to statuses in one place — 400 names the
field and the problem, 401 the failed token check, 404 an unknown service or card, 412 data
that is needed but unobtainable, 413 a body over the limit, 503 a busy engine, and an internal
fault a generic 500 with a correlation id (details only in the log).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds.clinical.cards import EXPLANATION_KEY
from cds.clinical.engine import EngineBusy
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.response import Card
from cds.clinical.validate import Context
from cds.content.terminology import Terminology
from cds.hooks.auth import Authenticator, AuthError, Caller, load_issuers
from cds.hooks.feedback import parse_feedback, store_feedback
from cds.hooks.prefetch import FetchLimits, FhirReader, gather, prefetch_templates
from cds.hooks.request import HookRequest, RequestError, parse_request, selected_knee_physiotherapy
from cds.hooks.store import IssuedCard, Store, patient_key
from cds.settings import Settings
from cds.web.observability import Metrics

log = logging.getLogger("hipflex_cds.service")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Service(BaseModel):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str  # noqa: N815 - spec name


def services(terminology: Terminology) -> list[Service]:
    """The discovery document: one service per supported hook."""
    prefetch = prefetch_templates(terminology)
    usage = ("Needs the patient's Patient and Observations (prefetch 'patient' and 'observations', or fhirServer "
             "access); Conditions, Procedures and ServiceRequests are used for red flags and referrals, and the "
             "cards say when they could not be read.")
    base = "Suggests end-range hip-flexor strengthening and inferior patellar glides for anterior knee pain."
    return [
        Service(hook="patient-view", id="hipflex-patient-view", title="Hip flexion and knee pain (chart open)",
                description=base, prefetch=prefetch, usageRequirements=usage),
        Service(hook="encounter-start", id="hipflex-encounter-start",
                title="Hip flexion and knee pain (encounter start)", description=base, prefetch=prefetch,
                usageRequirements=usage),
        Service(hook="order-select", id="hipflex-order-select", title="Hip flexion and knee pain (physiotherapy order)",
                description=base + " Answers only when a physiotherapy ServiceRequest for the knee is selected.",
                prefetch=prefetch, usageRequirements=usage),
    ]


def error_body(status: int, error: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def issued_cards(cards: list[Card], service_id: str, hook_instance: str) -> list[IssuedCard]:
    """What the store keeps of each card: ids, kind, side and the rule versions behind it."""
    out = []
    for card in cards:
        explanation = (card.extension or {}).get(EXPLANATION_KEY, {})
        recommendation = explanation.get("recommendation", {})
        out.append(IssuedCard(card_uuid=card.uuid, service_id=service_id, hook_instance=hook_instance.lower(),
                              card_kind=str(recommendation.get("card", "unknown")), side=recommendation.get("side"),
                              rules=[{"id": r["id"], "version": r["version"]} for r in explanation.get("rules", [])],
                              suggestions=[s.uuid for s in card.suggestions or []]))
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes the limit (not after reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "too-large", f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, "too-large", f"body is over the limit of {limit} bytes")
    return bytes(body)


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    decision: Decision | None  # None when the hook had nothing to decide (order-select of another order)


class CdsService:
    """The loaded pipeline, store, authenticator and FHIR reader behind the HTTP routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings)
        self.catalog = {s.id: s for s in services(self.pipeline.terminology)}
        self.store = Store(settings.database_url, patient_key(settings.patient_hash_key, settings.patient_key_file))
        issuers = load_issuers(settings.issuers_file) if settings.issuers_file else []
        self.auth = Authenticator(issuers, self.store.first_use_of_token,
                                  max_lifetime_seconds=settings.jwt_max_lifetime_seconds) if issuers else None
        self.reader = FhirReader(FetchLimits(settings.fhir_connect_seconds, settings.fhir_read_seconds,
                                             settings.fhir_max_bytes, settings.fhir_max_pages))
        self.metrics = Metrics()
        # Deciding is pure CPU under the GIL: threads running it side by side only thrash (measured with 8
        # connections: 149 req/s and p99 858 ms, against 212 req/s with one). Waiting threads sleep on this
        # lock while FHIR fetches, in other threads, go on. Scale with worker processes instead.
        self.deciding = threading.Lock()

    def authenticate(self, request: Request, path: str) -> Caller | None:
        """The verified caller, or None when authentication is off (loopback development only)."""
        if self.auth is None:
            return None
        audience = (self.settings.public_url or "").rstrip("/") + path
        try:
            return self.auth.verify(request.headers.get("authorization"), audience)
        except AuthError as exc:
            raise RequestError(401, "unauthorized", str(exc)) from None

    def answer(self, service: Service, raw: bytes) -> dict[str, Any]:
        """One hook call from its raw body: the response body."""
        return self.respond(service, parse_request(raw, service.hook)).body

    def respond(self, service: Service, hook: HookRequest, today: dt.date | None = None) -> Answer:
        """Gather, decide, remember the cards; the decision is kept for the review page (which may set `today`)."""
        drafts: list[dict[str, Any]] = []
        if service.hook == "order-select":
            drafts = selected_knee_physiotherapy(hook, self.pipeline.terminology)
            if not drafts:
                return Answer({"cards": []}, None)
        gathered = gather(hook, service.prefetch, self.reader)
        today = today or self.settings.as_of or dt.datetime.now(dt.UTC).date()
        context = Context(today=today, patient_id=hook.patient_id, user_id=hook.user_id,
                          lookback_days=self.settings.lookback_days,
                          selected_orders=frozenset(str(d.get("id")) for d in drafts))
        with self.deciding:
            decision = self.pipeline.decide(gathered.resources + drafts, context, gathered.issues)
        issued = issued_cards(decision.cards, service.id, hook.hookInstance)
        self.store.record_cards(issued, hook.patient_id)
        for card in issued:
            for rule in card.rules:
                self.metrics.cards.labels(card.card_kind, f"{rule['id']}@{rule['version']}").inc()
        return Answer(decision.response().dump(), decision)

    def feedback(self, service: Service, raw: bytes) -> dict[str, Any]:
        request = parse_feedback(raw)
        stored = store_feedback(request, service.id, self.store)
        for item, new in zip(request.feedback, stored, strict=True):
            if new:
                issued = self.store.issued(item.card.lower())
                self.metrics.feedback.labels(issued.card_kind if issued else "unknown", item.outcome).inc()
        return {"stored": sum(stored), "duplicates": len(stored) - sum(stored)}

    def health(self) -> tuple[int, dict[str, Any]]:
        store_ok = self.store.reachable()
        body = {"status": "ok" if store_ok else "unavailable", "rules": len(self.pipeline.ruleset.compiled),
                "ruleset": self.pipeline.ruleset.source.version, "store": "ok" if store_ok else "unreachable",
                "authentication": "on" if self.auth else "off"}
        return (200 if store_ok else 503), body


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; content files, issuers and the store are loaded now, so mistakes stop start-up."""
    cds = CdsService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        cds.reader.close()
        cds.store.close()

    app = FastAPI(title="hipflex-cds", version="0.1.0", description=__doc__, lifespan=lifespan)
    app.state.cds = cds
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)

    if cds.auth is None:  # its buttons send feedback without a JWT, so it exists only where auth is off
        from cds.web.review import STATIC, review_router

        app.include_router(review_router(cds))
        app.mount("/review/static", StaticFiles(directory=STATIC), name="review-static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return error_body(exc.status_code, name, f"{request.method} {request.url.path}: {exc.detail}")

    async def guarded(service_id: str, endpoint: str, work: Callable[[], Any]) -> Response:
        """Run one call, mapping every failure to its status; time it; log ids and outcome only."""
        started, correlation = time.perf_counter(), str(uuid.uuid4())
        if service_id not in cds.catalog and service_id != "discovery":
            service_id = "(unknown)"  # a caller-chosen path must not become a log field or a metric label
        try:
            response: Response = JSONResponse(await work())
        except RequestError as exc:
            response = error_body(exc.status, exc.error, exc.message, exc.field)
        except EngineBusy:
            response = error_body(503, "busy", "the rule engine is busy; try again")
        except Exception:
            log.exception("internal error", extra={"correlation_id": correlation, "service": service_id})
            response = error_body(500, "internal-error", f"internal error; correlation id {correlation}")
        seconds = time.perf_counter() - started
        cds.metrics.observe(service_id, endpoint, response.status_code, seconds)
        log.info("%s %s", endpoint, response.status_code, extra={
            "service": service_id, "status": response.status_code, "correlation_id": correlation,
            "duration_ms": round(seconds * 1000, 1)})
        return response

    @app.get("/cds-services", summary="CDS Hooks discovery")
    async def discovery(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            cds.authenticate(request, "/cds-services")
            return {"services": [s.model_dump() for s in cds.catalog.values()]}
        return await guarded("discovery", "discovery", work)

    async def posted(service_id: str, request: Request, endpoint: str,
                     handle: Callable[[Service, bytes], dict[str, Any]]) -> Response:
        """A POST to a service or its feedback: known service, token for this exact URL, capped body."""
        async def work() -> dict[str, Any]:
            service = known(service_id)
            suffix = "/feedback" if endpoint == "feedback" else ""
            cds.authenticate(request, f"/cds-services/{service_id}{suffix}")
            raw = await read_body(request, settings.max_body_bytes)
            return await run_in_threadpool(handle, service, raw)
        return await guarded(service_id, endpoint, work)

    @app.post("/cds-services/{service_id}", summary="Call a CDS service (hook request)")
    async def call(service_id: str, request: Request) -> Response:
        return await posted(service_id, request, "hook", cds.answer)

    @app.post("/cds-services/{service_id}/feedback", summary="Feedback on issued cards")
    async def feedback(service_id: str, request: Request) -> Response:
        return await posted(service_id, request, "feedback", cds.feedback)

    def known(service_id: str) -> Service:
        service = cds.catalog.get(service_id)
        if service is None:
            raise RequestError(404, "unknown-service", f"no CDS service with id {service_id!r}")
        return service

    @app.get("/health", summary="Readiness: rules loaded and store reachable")
    async def health() -> JSONResponse:
        status, body = await run_in_threadpool(cds.health)
        return JSONResponse(body, status_code=status)

    @app.get("/health/live", summary="Liveness")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(cds.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app


def serve(settings: Settings, *, host: str, port: int) -> int:
    """Run the service; without trusted issuers only a loopback address is allowed."""
    import uvicorn

    from cds.web.observability import configure_logging

    configure_logging()
    if settings.issuers_file is None:
        if host not in LOOPBACK:
            log.error("refusing to listen on %s without trusted JWT issuers: set HIPFLEX_ISSUERS_FILE and "
                      "HIPFLEX_PUBLIC_URL, or listen on 127.0.0.1", host)
            return 2
        log.warning("AUTHENTICATION IS OFF: listening on %s:%d for local development only; anyone on this "
                    "machine can call the service", host, port)
    app = create_app(settings)
    gc.collect()
    gc.freeze()  # the loaded content never dies: keep it out of every later full collection (shorter pauses)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, log_config=None)
    return 0
