"""The CDS Hooks 2.0 HTTP service (https://cds-hooks.hl7.org/2.0/): discovery, hook calls, feedback, pages.

`create_app` loads the service (`service.py`) and puts the pieces together: the middlewares that check a request
before any work (`guards.py`), the routers per concern (CDS Hooks calls, operations, the clinician and rule
pages) and the one error mapping (`errors.py`). `serve` runs it under uvicorn with the connection limits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import swagger_ui
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds import __version__
from cds.clinical.gctuning import settle_after_loading
from cds.hooks.auth import load_issuers
from cds.hooks.errors import UnknownRule
from cds.settings import Settings
from cds.web.calls import calls_router
from cds.web.connections import TimedHttpProtocol
from cds.web.errors import error_body, failure
from cds.web.guards import HostAllowList, LoggedCors, TrailingSlash, host_names
from cds.web.html import STATIC
from cds.web.observability import MULTIPROCESS_DIR
from cds.web.openapi import openapi_builder
from cds.web.operations import operations_router
from cds.web.releasepages import release_router
from cds.web.review import review_router
from cds.web.rulepages import rule_router
from cds.web.service import CdsService

log = logging.getLogger("hipflex_cds.service")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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


def create_app(settings: Settings, bind: str | None = None) -> FastAPI:
    """The ASGI app; content files, issuers and the store are loaded now, so mistakes stop start-up. `bind` is
    the address served on (a Host naming it is answered)."""
    cds = CdsService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await cds.reader.aclose()
        cds.calls.live.stop()
        if cds.calls.shadows is not None:
            cds.calls.shadows.close()  # the shadow decisions already waiting are stored first
        cds.calls.close()  # and the cards waiting for their commit
        cds.store.close()
        cds.health_pool.shutdown(wait=False)

    app = FastAPI(title="hipflex-cds", version=__version__, description=__doc__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, redirect_slashes=False)  # Starlette's follow the Host header
    app.openapi = openapi_builder(app, list(cds.services_by_id))  # type: ignore[method-assign]
    app.state.cds = cds
    _middlewares(app, settings, bind)
    app.include_router(calls_router(cds))
    app.include_router(operations_router(cds))
    if cds.auth is None:  # its buttons send feedback without a JWT, so it exists only where auth is off
        app.include_router(review_router(cds.calls, cds.services_by_id, cds.store))
        app.include_router(release_router(cds.calls, cds.store))
    app.include_router(rule_router(lambda: cds.pipeline, settings.content.coverage_report,
                                   review_pages=cds.auth is None))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/static", StaticFiles(directory=Path(swagger_ui.__file__).with_name("static")), name="docs-static")
    app.add_exception_handler(UnknownRule, _known_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


def _middlewares(app: FastAPI, settings: Settings, bind: str | None) -> None:
    """Innermost first: HEAD as GET, a trailing slash dropped, CORS, and outermost the Host allow-list."""
    app.add_middleware(HeadAsGet)
    app.add_middleware(TrailingSlash)
    if settings.auth.cors_origins:
        app.add_middleware(LoggedCors, allow_origins=settings.auth.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HostAllowList, names=host_names(bind, settings.auth.public_url, settings.auth.allowed_hosts))


async def _known_error(_request: Request, exc: Exception) -> JSONResponse:
    return failure(exc) or error_body(500, "internal-error", "internal error")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    name = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
    return error_body(status, name, f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}")


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> int:
    """Run the service in `workers` processes sharing the store (JWT replay ids and feedback are in it); without
    trusted issuers only a loopback address is allowed. uvloop and httptools are used when installed."""
    import uvicorn

    from cds.web.observability import configure_logging

    configure_logging()
    public = [i.iss for i in load_issuers(settings.auth.issuers_file) if i.public_signing_key] \
        if settings.auth.issuers_file is not None else []
    if public and host not in LOOPBACK:
        log.error("refusing to listen on %s: issuer %s signs with a published private key, so anyone can sign as "
                  "it; listen on 127.0.0.1 (development only) or drop it from HIPFLEX_ISSUERS_FILE", host, public[0])
        return 2
    if public:
        log.warning("issuer %s signs with a published private key: anyone on this machine can sign as it; for "
                    "development only", public[0])
    if settings.auth.issuers_file is None:
        if host not in LOOPBACK:
            log.error("refusing to listen on %s without trusted JWT issuers: set HIPFLEX_ISSUERS_FILE and "
                      "HIPFLEX_PUBLIC_URL, or listen on 127.0.0.1", host)
            return 2
        log.warning("AUTHENTICATION IS OFF: listening on %s:%d for local development only; anyone on this "
                    "machine can call the service", host, port)
    _raise_open_file_limit()
    TimedHttpProtocol.configure(settings.limits.request_head_seconds, settings.limits.request_body_seconds)
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "log_config": None, "http": "cds.web.connections:TimedHttpProtocol",
                               "limit_concurrency": settings.limits.max_connections,
                               "timeout_keep_alive": settings.limits.keep_alive_seconds}
    if workers > 1:
        # Load everything once here first: a content error stops start-up before any worker starts, and the
        # store's tables and patient-hash key are created by one process, not raced by several.
        loaded = CdsService(settings)
        loaded.calls.live.stop()
        loaded.store.close()
        os.environ["HIPFLEX_ALLOWED_HOSTS"] = json.dumps([*settings.auth.allowed_hosts, host])  # for every worker
        with tempfile.TemporaryDirectory(prefix="hipflex-metrics-") as shared:
            os.environ[MULTIPROCESS_DIR] = shared  # /metrics then adds up every worker's values
            uvicorn.run("cds.web.app:app_from_environment", factory=True, workers=workers, **options)
        return 0
    app = create_app(settings, bind=host)
    settle_after_loading()
    uvicorn.run(app, **options)
    return 0


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
    TimedHttpProtocol.configure(settings.limits.request_head_seconds, settings.limits.request_body_seconds)
    app = create_app(settings)
    settle_after_loading()
    return app
