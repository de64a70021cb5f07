"""What operators and browsers ask of the service besides CDS Hooks: readiness and liveness, Prometheus metrics,
the API documentation (Swagger UI served from the package, no CDN), the favicon, and where `/` leads."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cds.web.html import STATIC
from cds.web.service import CdsService


def operations_router(cds: CdsService) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        """A browser opening the service lands on a page: the review page while it is served, else the rules."""
        return RedirectResponse("/review" if cds.auth is None else "/rules", status_code=307)

    @router.get("/health", summary="Readiness: rules loaded and store reachable")
    async def health() -> JSONResponse:
        """On its own thread, so it answers while hook calls queue."""
        status, body = await asyncio.get_running_loop().run_in_executor(cds.health_pool, cds.health)
        return JSONResponse(body, status_code=status)

    @router.get("/health/live", summary="Liveness")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(cds.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """Browsers ask for it on every page; the SVG icon the pages link to."""
        return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    @router.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI 5 (OpenAPI 3.1) from the swagger-ui-py package: works without internet (no CDN)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title="hipflex-cds API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    return router
