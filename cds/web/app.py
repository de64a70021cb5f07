"""The CDS Hooks 2.0 HTTP service (https://cds-hooks.hl7.org/2.0/): discovery, hook calls, feedback.

This module only speaks HTTP: it authenticates, reads the body within its limit, hands the work
to the modules of the data flow, and maps their errors to statuses in one place — 400 names the
field and the problem, 401 the failed token check, 404 an unknown service or card, 412 data
that is needed but unobtainable, 413 a body over the limit, 503 a busy engine, and an internal
fault a generic 500 with a correlation id (details only in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import swagger_ui
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cds import __version__
from cds.clinical.explanation import rule_label
from cds.clinical.pipeline import Pipeline
from cds.clinical.response import CDSResponse
from cds.hooks.auth import Authenticator, AuthError, Caller, load_issuers
from cds.hooks.call import HookCaller
from cds.hooks.discovery import Discovery, Service, services
from cds.hooks.ehrprofile import operation_outcome
from cds.hooks.errors import (
    DataUnavailable,
    HookError,
    InvalidRequest,
    LargeCallsQueued,
    UnknownCard,
    UnknownRule,
    UnknownService,
)
from cds.hooks.feedback import FeedbackRequest, FeedbackStored, parse_feedback, store_feedback
from cds.hooks.fhirclient import FetchLimits, FhirReader
from cds.hooks.request import HookRequest, parse_request
from cds.hooks.store import Store, patient_key
from cds.settings import Settings
from cds.web.connections import TimedHttpProtocol
from cds.web.guards import (
    BodyTooLarge,
    CrossSite,
    HostAllowList,
    LoggedCors,
    TrailingSlash,
    host_names,
    read_body,
)
from cds.web.html import STATIC
from cds.web.observability import MULTIPROCESS_DIR, Metrics
from cds.web.review import review_router
from cds.web.rulepages import rule_router

log = logging.getLogger("hipflex_cds.service")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# The one place a domain error becomes an HTTP status (S2 #http-response; 412 per S2 #prefetch).
INLINE_PARSE_BYTES = 64_000
STATUS: dict[type[HookError], int] = {InvalidRequest: 400, UnknownService: 404, UnknownCard: 404, UnknownRule: 404,
                                      DataUnavailable: 412, LargeCallsQueued: 503}


class NotJson(Exception):
    """A hook or feedback body declared as something other than JSON (415): a web page can then only send it
    after a CORS preflight, which the service answers for the configured origins alone."""


class Busy(Exception):
    """Too many hook calls in flight (503 with Retry-After)."""


class HeadAsGet:
    """HEAD wherever GET works (RFC 9110 §9.3.2): answered as a GET whose body is dropped. FastAPI routes
    declared with GET would otherwise answer HEAD with 405."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a stable word, a plain message, and where in the body when it is there."""

    error: str
    message: str
    field: str | None = None


def error_body(status: int, error: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


class CdsService:
    """The loaded pipeline, store, authenticator and hook caller behind the HTTP routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings)
        self.catalog = {s.id: s for s in services(self.pipeline.terminology)}
        self.store = Store(settings.database_url, patient_key(settings.patient_hash_key, settings.key_file))
        issuers = load_issuers(settings.issuers_file) if settings.issuers_file else []
        self.auth = Authenticator(issuers, self.store.first_use_of_token,
                                  max_lifetime_seconds=settings.jwt_max_lifetime_seconds) if issuers else None
        self.reader = FhirReader(FetchLimits(settings.fhir_connect_seconds, settings.fhir_read_seconds,
                                             settings.fhir_max_bytes, settings.fhir_max_pages,
                                             settings.fhir_deadline_seconds, settings.fhir_call_bytes))
        self.in_flight = 0  # hook calls being answered; only touched on the event loop
        self.health_pool = ThreadPoolExecutor(1, thread_name_prefix="health")  # never queues behind hook calls
        self.caller = HookCaller(self.pipeline, self.reader, self.store)
        self.metrics = Metrics(engine=self.pipeline.engine, cache=self.pipeline.cache)

    def service(self, service_id: str) -> Service:
        service = self.catalog.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        return service

    def authenticate(self, request: Request, path: str) -> Caller | None:
        """The verified caller, or None when authentication is off (loopback development only)."""
        if self.auth is None:
            return None
        audience = (self.settings.public_url or "").rstrip("/") + path
        return self.auth.verify(request.headers.get("authorization"), audience)

    async def answer(self, service: Service, raw: bytes, caller: Caller | None) -> Response:
        """One hook call from its raw body: the response, encoded once; counts the cards by rule. Beyond
        max_calls_in_flight the call is refused (503) before any work, so a flood cannot queue without end."""
        if self.in_flight >= self.settings.max_calls_in_flight:
            raise Busy(f"more than {self.settings.max_calls_in_flight} hook calls in flight; try again")
        self.in_flight += 1
        try:
            if len(raw) <= INLINE_PARSE_BYTES:  # a typical visit's body parses in ~0.1 ms: not worth a thread hop
                request = parse_request(raw, service.hook)
            else:
                request = await run_in_threadpool(parse_request, raw, service.hook)
            answer = await self.caller.call_async(service, request, caller=caller)
        finally:
            self.in_flight -= 1
        for card in answer.issued:
            self.metrics.cards.labels(card.card_kind).inc()
            for rule in card.rules:
                self.metrics.card_rules.labels(card.card_kind, rule_label(rule["id"], rule["version"])).inc()
        return Response(answer.response.json(), media_type="application/json")

    async def feedback(self, service: Service, raw: bytes, caller: Caller | None) -> dict[str, Any]:
        return await run_in_threadpool(self._feedback, service, raw, caller)

    def _feedback(self, service: Service, raw: bytes, caller: Caller | None) -> dict[str, Any]:
        request = parse_feedback(raw, self.settings.max_feedback_items)
        stored = store_feedback(request, service.id, self.store, caller)
        for item, new in zip(request.feedback, stored, strict=True):
            if new:
                issued = self.store.issued(item.card.lower())
                self.metrics.feedback.labels(issued.card_kind if issued else "unknown", item.outcome).inc()
        return FeedbackStored(stored=sum(stored), duplicates=len(stored) - sum(stored)).model_dump()

    def health(self) -> tuple[int, dict[str, Any]]:
        """Ready (200) while the store answers; 'degraded' (still 200: other EHRs are served) while some FHIR
        server fills its pool or keeps running out of time; 503 without the store."""
        store_ok = self.store.reachable()
        fhir = self.reader.health()
        status = "unavailable" if not store_ok else fhir["status"]
        body = {"status": status, "rules": len(self.pipeline.ruleset.source.rules),
                "compiled_rules": len(self.pipeline.ruleset.compiled), "ruleset": self.pipeline.ruleset.source.version,
                "store": "ok" if store_ok else "unreachable", "fhir_client": fhir,
                "authentication": "on" if self.auth else "off"}
        return (200 if store_ok else 503), body


def failure(exc: Exception) -> JSONResponse | None:
    """The response for an expected failure, or None for an internal fault (500)."""
    if isinstance(exc, HookError):
        status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
        answer = error_body(status, exc.error, exc.message, exc.field)
        if status == 503:
            answer.headers["Retry-After"] = "1"
        return answer
    if isinstance(exc, AuthError):
        return error_body(401, "unauthorized", str(exc))
    if isinstance(exc, BodyTooLarge):
        return error_body(413, "too-large", str(exc))
    if isinstance(exc, ClientDisconnect):  # the body's time ran out (408 already sent) or the client left
        return error_body(400, "client-disconnected", "the connection closed before the request body arrived")
    if isinstance(exc, CrossSite):
        return error_body(403, "cross-site", str(exc))
    if isinstance(exc, NotJson):
        return error_body(415, "unsupported-media-type", str(exc))
    if isinstance(exc, Busy):
        busy = error_body(503, "busy", str(exc))
        busy.headers["Retry-After"] = "1"
        return busy
    return None


def _schema(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _contract(body: str | None, answer: str) -> dict[str, Any]:
    """OpenAPI for a route that reads its body raw (for the size limit) but speaks a pydantic contract."""
    errors = {str(code): {"description": text, "content": _schema("ErrorBody")} for code, text in (
        (400, "the body breaks CDS Hooks 2.0 (field named)"), (401, "token refused (check named)"),
        (404, "unknown service or card"), (412, "required data could not be had"), (413, "body over the limit"),
        (503, "the engine is busy"))}
    extra: dict[str, Any] = {"responses": {"200": {"description": "OK", "content": _schema(answer)}, **errors}}
    if body is not None:
        extra["requestBody"] = {"required": True, "content": _schema(body)}
    return extra


def _openapi(app: FastAPI, service_ids: list[str]) -> Callable[[], dict[str, Any]]:
    """The generated OpenAPI document plus the CDS Hooks models the routes read and answer, and the service ids
    discovery lists (so a client or a schema-driven fuzzer reaches the real services)."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, definitions = models_json_schema(
                [(HookRequest, "validation"), (FeedbackRequest, "validation"), (CDSResponse, "serialization"),
                 (Discovery, "serialization"), (ErrorBody, "serialization"),
                 (FeedbackStored, "serialization")],
                ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "service_id":
                            parameter["schema"] = {"type": "string", "enum": service_ids}
            app.openapi_schema = schema
        return app.openapi_schema
    return build


def create_app(settings: Settings, bind: str | None = None) -> FastAPI:
    """The ASGI app; content files, issuers and the store are loaded now, so mistakes stop start-up. `bind` is
    the address served on (a Host naming it is answered)."""
    cds = CdsService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await cds.reader.aclose()
        cds.store.close()
        cds.health_pool.shutdown(wait=False)

    app = FastAPI(title="hipflex-cds", version=__version__, description=__doc__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, redirect_slashes=False)  # Starlette's follow the Host header
    app.openapi = _openapi(app, list(cds.catalog))  # type: ignore[method-assign]
    app.add_middleware(HeadAsGet)
    app.add_middleware(TrailingSlash)
    app.state.cds = cds
    if settings.cors_origins:
        app.add_middleware(LoggedCors, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HostAllowList, names=host_names(bind, settings.public_url, settings.allowed_hosts))

    if cds.auth is None:  # its buttons send feedback without a JWT, so it exists only where auth is off
        app.include_router(review_router(cds.caller, cds.catalog, cds.store))
    app.include_router(rule_router(cds.pipeline, settings.coverage_report, review_pages=cds.auth is None))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UnknownRule)
    async def unknown_rule(request: Request, exc: UnknownRule) -> JSONResponse:
        return failure(exc) or error_body(404, exc.error, exc.message)
    app.mount("/docs/static", StaticFiles(directory=Path(swagger_ui.__file__).with_name("static")), name="docs-static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        name = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return error_body(exc.status_code, name, f"{request.method} {request.url.path}: {exc.detail}")

    def error_format(request: Request, exc: Exception) -> str:
        """The caller's EHR profile's error format: once authenticated, or the issuer a refused token named."""
        profile = getattr(request.state, "profile", None)
        if profile is None and isinstance(exc, AuthError) and cds.auth is not None and exc.issuer:
            issuer = cds.auth.issuers.get(exc.issuer)
            profile = issuer.profile if issuer else None
        return str(profile.error_format) if profile else "json"

    async def guarded(request: Request, service_id: str, endpoint: str, work: Callable[[], Any]) -> Response:
        """Run one call, mapping every failure to its status; time it; log ids and outcome only."""
        started, correlation = time.perf_counter(), str(uuid.uuid4())
        if service_id not in cds.catalog and service_id != "discovery":
            service_id = "(unknown)"  # a caller-chosen path must not become a log field or a metric label
        extra: dict[str, Any] = {"service": service_id, "correlation_id": correlation}
        try:
            result = await work()
            response: Response = result if isinstance(result, Response) else JSONResponse(result)
        except Exception as exc:
            known = failure(exc)
            if known is None:
                log.exception("internal error", extra=extra)
                known = error_body(500, "internal-error", f"internal error; correlation id {correlation}")
            if isinstance(exc, AuthError):  # which check failed, for whom: never the token itself
                extra |= {"auth_check": exc.check, "issuer": exc.issuer, "kid": exc.kid}
            if isinstance(exc, HookError):  # which prefetch key and check, or which field: never the data
                extra |= exc.log | ({"error": exc.error, "field": exc.field} if exc.field else {"error": exc.error})
            if error_format(request, exc) == "operation-outcome":
                known = JSONResponse(operation_outcome(known.status_code, json.loads(bytes(known.body))),
                                     status_code=known.status_code, media_type="application/fhir+json",
                                     headers={k: v for k, v in known.headers.items()
                                              if k.lower() in ("retry-after", "www-authenticate")})
            response = known
        seconds = time.perf_counter() - started
        cds.metrics.observe(service_id, endpoint, response.status_code, seconds)
        log.info("%s %s", endpoint, response.status_code,
                 extra=extra | {"status": response.status_code, "duration_ms": round(seconds * 1000, 1)})
        return response

    @app.get("/cds-services", summary="CDS Hooks discovery", openapi_extra=_contract(None, "Discovery"))
    async def discovery(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            caller = await run_in_threadpool(cds.authenticate, request, "/cds-services")
            request.state.profile = caller.profile if caller else None
            offered = [s for s in cds.catalog.values() if caller is None or caller.profile.offers(s.hook)]
            return Discovery(services=offered).model_dump()
        return await guarded(request, "discovery", "discovery", work)

    async def posted(service_id: str, request: Request, endpoint: str,
                     handle: Callable[[Service, bytes, Caller | None], Awaitable[dict[str, Any] | Response]]
                     ) -> Response:
        """A POST to a service or its feedback: known service, token for this exact URL, JSON, capped body."""
        async def work() -> dict[str, Any] | Response:
            service = cds.service(service_id)
            suffix = "/feedback" if endpoint == "feedback" else ""
            caller = await run_in_threadpool(cds.authenticate, request, f"/cds-services/{service_id}{suffix}")
            request.state.profile = caller.profile if caller else None
            if caller is not None and not caller.profile.offers(service.hook):
                raise UnknownService(f"no CDS service with id {service_id!r} for this EHR (its profile offers "
                                     f"{', '.join(caller.profile.hooks or [])})")
            media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media not in ("application/json", "application/fhir+json"):
                raise NotJson(f"the body must be sent as Content-Type: application/json, not {media[:60] or 'none'!r}")
            raw = await read_body(request, settings.max_body_bytes)
            return await handle(service, raw, caller)
        return await guarded(request, service_id, endpoint, work)

    @app.post("/cds-services/{service_id}", summary="Call a CDS service (hook request)",
              openapi_extra=_contract("HookRequest", "CDSResponse"))
    async def call(service_id: str, request: Request) -> Response:
        return await posted(service_id, request, "hook", cds.answer)

    @app.post("/cds-services/{service_id}/feedback", summary="Feedback on issued cards",
              openapi_extra=_contract("FeedbackRequest", "FeedbackStored"))
    async def feedback(service_id: str, request: Request) -> Response:
        return await posted(service_id, request, "feedback", cds.feedback)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        """A browser opening the service lands on a page: the review page while it is served, else the rules."""
        return RedirectResponse("/review" if cds.auth is None else "/rules", status_code=307)

    @app.get("/health", summary="Readiness: rules loaded and store reachable")
    async def health() -> JSONResponse:
        status, body = await asyncio.get_running_loop().run_in_executor(cds.health_pool, cds.health)
        return JSONResponse(body, status_code=status)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """Browsers ask for it on every page; the SVG icon the pages link to."""
        return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/health/live", summary="Liveness")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(cds.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI 5 (OpenAPI 3.1) from the swagger-ui-py package: works without internet (no CDN)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title="hipflex-cds API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    return app


def _raise_open_file_limit() -> None:
    """Up to the hard limit: each connection is a file, and the connection limit should bind before this one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit cannot always be taken
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def app_from_environment() -> FastAPI:
    """The app of one worker process, configured like its parent from HIPFLEX_* variables."""
    from cds.web.observability import configure_logging

    configure_logging()
    settings = Settings()
    TimedHttpProtocol.configure(settings.request_head_seconds, settings.request_body_seconds)
    app = create_app(settings)
    gc.collect()
    gc.freeze()  # the loaded content never dies: keep it out of every later full collection (shorter pauses)
    return app


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> int:
    """Run the service in `workers` processes sharing the store (JWT replay ids and feedback are in it); without
    trusted issuers only a loopback address is allowed. uvloop and httptools are used when installed."""
    import uvicorn

    from cds.web.observability import configure_logging

    configure_logging()
    public = [i.iss for i in load_issuers(settings.issuers_file) if i.public_signing_key] \
        if settings.issuers_file is not None else []
    if public and host not in LOOPBACK:
        log.error("refusing to listen on %s: issuer %s signs with a published private key, so anyone can sign as "
                  "it; listen on 127.0.0.1 (development only) or drop it from HIPFLEX_ISSUERS_FILE", host, public[0])
        return 2
    if public:
        log.warning("issuer %s signs with a published private key: anyone on this machine can sign as it; for "
                    "development only", public[0])
    if settings.issuers_file is None:
        if host not in LOOPBACK:
            log.error("refusing to listen on %s without trusted JWT issuers: set HIPFLEX_ISSUERS_FILE and "
                      "HIPFLEX_PUBLIC_URL, or listen on 127.0.0.1", host)
            return 2
        log.warning("AUTHENTICATION IS OFF: listening on %s:%d for local development only; anyone on this "
                    "machine can call the service", host, port)
    _raise_open_file_limit()
    TimedHttpProtocol.configure(settings.request_head_seconds, settings.request_body_seconds)
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "log_config": None, "http": "cds.web.connections:TimedHttpProtocol",
                               "limit_concurrency": settings.max_connections,
                               "timeout_keep_alive": settings.keep_alive_seconds}
    if workers > 1:
        # Load everything once here first: a content error stops start-up before any worker starts, and the
        # store's tables and patient-hash key are created by one process, not raced by several.
        CdsService(settings).store.close()
        os.environ["HIPFLEX_ALLOWED_HOSTS"] = json.dumps([*settings.allowed_hosts, host])  # for every worker
        with tempfile.TemporaryDirectory(prefix="hipflex-metrics-") as shared:
            os.environ[MULTIPROCESS_DIR] = shared  # /metrics then adds up every worker's values
            uvicorn.run("cds.web.app:app_from_environment", factory=True, workers=workers, **options)
        return 0
    app = create_app(settings, bind=host)
    gc.collect()
    gc.freeze()  # the loaded content never dies: keep it out of every later full collection (shorter pauses)
    uvicorn.run(app, **options)
    return 0
