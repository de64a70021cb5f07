"""What a request is checked for before any work: its body size, the Host it names, and where a browser sent it
from. Kept apart from the routes so the review page's form and the hook endpoints share one set of limits.

- Body: refused as soon as it passes the limit, never read whole first (a 200 MB upload once took 1.5 GB).
- Host: only the names the service is reached by (the bind address, loopback, the public URL's host, and
  HIPFLEX_ALLOWED_HOSTS); any other is refused before routing, so a DNS-rebinding page cannot read the
  review pages through a name it controls.
- Cross-site: a browser's form POST needs no CORS preflight, so a page on another site could submit one to a
  clinician's local service; a POST whose Sec-Fetch-Site or Origin says it came from elsewhere is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from cds.web.errors import WebError

log = logging.getLogger("hipflex_cds.service")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class BodyTooLarge(WebError):
    """The request body is over HIPFLEX_MAX_BODY_BYTES."""

    status, error = 413, "too-large"


class CrossSite(WebError):
    """A state-changing request a browser sent from another site."""

    status, error = 403, "cross-site"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with BodyTooLarge as soon as it passes the limit (not after reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


def refuse_cross_site(request: Request) -> None:
    """CrossSite unless the request came from this service's own pages (or from no browser at all)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CrossSite(f"a {fetch_site} request: this form only accepts what the service's own page sends")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and _host_port(origin) != _host_port(f"//{request.headers.get('host')}"):
        raise CrossSite("the request's Origin is another site: this form only accepts what the service's own page "
                        "sends")


def _host_port(url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(url)
        return (parts.hostname or "").lower() or None, parts.port
    except ValueError:
        return None, None


def host_names(bind: str | None, public_url: str | None, listed: Iterable[str]) -> frozenset[str]:
    """The Host names the service answers to: loopback, the bind address, the public URL's host, the listed."""
    names = set(LOOPBACK_NAMES) | {name.lower() for name in listed}
    if bind and bind not in ("0.0.0.0", "::"):
        names.add(bind.lower())
    if public_url:
        names.add((urlsplit(public_url).hostname or "").lower())
    return frozenset(names - {""})


class LoggedCors(CORSMiddleware):
    """Starlette's CORS, plus a log line for each refused preflight naming its origin and what was refused: a
    browser shows the integrator only "failed to fetch", so the service's log is where the cause must be."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code >= 400:
            log.warning("CORS preflight refused: %s", bytes(response.body).decode("utf-8", "replace")[:200],
                        extra={"cors_origin": request_headers.get("origin", "")[:200], "status": response.status_code,
                               "error": "cors-refused"})
        return response


class TrailingSlash:
    """ASGI middleware: `/cds-services/` is served as `/cds-services` (a redirect would make a client resend,
    and some then fail the token's audience). The token's `aud` may name either form."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            scope = {**scope, "path": stripped, "raw_path": stripped.encode()}
        await self.app(scope, receive, send)


class HostAllowList:
    """ASGI middleware: 400 for a Host header naming none of `names` ("*" in them turns the check off)."""

    def __init__(self, app: Any, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "*" not in self.names:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = _host_port(f"//{host}")[0]
            if name not in self.names:
                await _refuse(send, host)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Any, host: str) -> None:
    body = json.dumps({"error": "host-not-allowed", "message": f"Host {host[:100]!r} is not a name this service "
                       "answers to; list it in HIPFLEX_ALLOWED_HOSTS"}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
