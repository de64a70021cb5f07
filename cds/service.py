"""The CDS Hooks 2.0 HTTP service: discovery and hook calls (https://cds-hooks.hl7.org/2.0/).

Errors are mapped to HTTP in this one place: 400 names the field and the problem, 404 an unknown
service, 412 data that is needed but neither prefetched nor obtainable, 413 a body over the
limit, and an internal fault a generic 500 with a correlation id (details only in the log).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds.engine import EngineBusy
from cds.pipeline import Pipeline
from cds.settings import Settings
from cds.terminology import Terminology
from cds.validate import Context

log = logging.getLogger("hipflex_cds.service")
REFERENCE = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def prefetch_templates(terminology: Terminology) -> dict[str, str]:
    """Prefetch templates; the Observation codes come from rules/terminology.yaml, not a copy."""
    codes = ",".join(f"{system}|{code}" for system, code in terminology.observation_by_code)
    return {
        "patient": "Patient/{{context.patientId}}",
        "observations": f"Observation?patient={{{{context.patientId}}}}&code={codes}",
        "conditions": "Condition?patient={{context.patientId}}",
        "procedures": "Procedure?patient={{context.patientId}}",
        "serviceRequests": "ServiceRequest?patient={{context.patientId}}&status=active",
    }


REQUIRED_PREFETCH = ("patient", "observations")


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
    usage = ("Needs the patient's Patient and Observations (prefetch 'patient' and 'observations', or FHIR "
             "access); Conditions, Procedures and ServiceRequests are used for red flags and referrals.")
    base = "Suggests end-range hip-flexor strengthening and inferior patellar glides for anterior knee pain."
    return [
        Service(hook="patient-view", id="hipflex-patient-view", title="Hip flexion and knee pain (chart open)",
                description=base, prefetch=prefetch, usageRequirements=usage),
        Service(hook="encounter-start", id="hipflex-encounter-start",
                title="Hip flexion and knee pain (encounter start)", description=base, prefetch=prefetch,
                usageRequirements=usage),
        Service(hook="order-select", id="hipflex-order-select", title="Hip flexion and knee pain (physiotherapy order)",
                description=base + " Reacts when a physiotherapy ServiceRequest is selected.", prefetch=prefetch,
                usageRequirements=usage),
    ]


REQUIRED_CONTEXT = {"patient-view": ("userId", "patientId"), "encounter-start": ("userId", "patientId", "encounterId"),
                    "order-select": ("userId", "patientId", "selections", "draftOrders")}


class HookRequest(BaseModel):
    """The CDS Hooks request body (S2 #http-request); unknown members such as `extension` are allowed."""

    model_config = ConfigDict(extra="allow")

    hook: str
    hookInstance: str = Field(pattern=r"^[0-9a-fA-F-]{32,36}$")  # noqa: N815 - spec name
    fhirServer: str | None = None  # noqa: N815 - spec name
    fhirAuthorization: dict[str, Any] | None = None  # noqa: N815 - spec name
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class RequestError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field


def error_body(status: int, error: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if field:
        body["field"] = field
    return JSONResponse(status_code=status, content=body)


def parse_request(raw: bytes, service: Service) -> HookRequest:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid-json", f"body is not JSON: {exc}") from None
    try:
        request = HookRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise RequestError(400, "invalid-request", f"{field}: {first['msg']}", field) from None
    if request.hook != service.hook:
        raise RequestError(400, "wrong-hook", f"service {service.id} answers {service.hook}, not {request.hook}",
                           "hook")
    for name in REQUIRED_CONTEXT[service.hook]:
        if name not in request.context:
            raise RequestError(400, "invalid-context", f"context.{name} is required for {service.hook}",
                               f"context.{name}")
    for name in ("userId",):
        if not REFERENCE.match(str(request.context[name])):
            raise RequestError(400, "invalid-context", f"context.{name} must be a reference like Practitioner/123",
                               f"context.{name}")
    if request.fhirAuthorization is not None and not request.fhirServer:
        raise RequestError(400, "invalid-request", "fhirAuthorization requires fhirServer (cds-r-1)", "fhirServer")
    return request


def prefetched_resources(request: HookRequest) -> list[Any]:
    """Resources from prefetch; a required key that is absent cannot be fetched yet, so 412."""
    prefetch = request.prefetch or {}
    missing = [k for k in REQUIRED_PREFETCH if k not in prefetch]
    if missing:
        how = ("fetching from fhirServer is not available in this version" if request.fhirServer
               else "no fhirServer was given to fetch it from")
        raise RequestError(412, "data-unavailable", f"prefetch {', '.join(missing)} missing and {how}",
                           f"prefetch.{missing[0]}")
    resources: list[Any] = []
    for value in prefetch.values():
        if value is None:
            continue  # the client found no data for this key
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources += [e.get("resource") for e in value.get("entry") or [] if isinstance(e, dict)]
        else:
            resources.append(value)
    return resources


def create_app(settings: Settings) -> FastAPI:
    pipeline = Pipeline(settings)
    catalog = {s.id: s for s in services(pipeline.terminology)}
    app = FastAPI(title="hipflex-cds", version="0.1.0", description=__doc__)

    @app.get("/cds-services")
    def discovery() -> dict[str, Any]:
        return {"services": [s.model_dump() for s in catalog.values()]}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "rules": len(pipeline.ruleset.compiled), "ruleset": pipeline.ruleset.source.version}

    @app.post("/cds-services/{service_id}")
    async def call(service_id: str, request: Request) -> JSONResponse:
        service = catalog.get(service_id)
        if service is None:
            return error_body(404, "unknown-service", f"no CDS service with id {service_id!r}")
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            return error_body(413, "too-large", f"body is {len(raw)} bytes; the limit is {settings.max_body_bytes}")
        try:
            hook = parse_request(raw, service)
            resources = prefetched_resources(hook)
            context = Context(today=dt.datetime.now(dt.UTC).date(), patient_id=str(hook.context["patientId"]),
                              user_id=str(hook.context["userId"]), lookback_days=settings.lookback_days)
            decision = pipeline.decide(resources, context)
        except RequestError as exc:
            return error_body(exc.status, exc.error, exc.message, exc.field)
        except EngineBusy:
            return error_body(503, "busy", "the rule engine is busy; try again")
        except Exception:
            correlation = str(uuid.uuid4())
            log.exception("internal error %s on service %s", correlation, service_id)
            return error_body(500, "internal-error", f"internal error; correlation id {correlation}")
        return JSONResponse(decision.response().dump())

    return app


def serve(settings: Settings, *, host: str, port: int) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.error("refusing to listen on %s: authentication is not available in this version", host)
        return 2
    log.warning("AUTHENTICATION IS OFF: listening on %s:%d for local development only", host, port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0
