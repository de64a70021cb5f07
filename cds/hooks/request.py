"""Parse and check a CDS Hooks request body (https://cds-hooks.hl7.org/2.0/#http-request).

A request that breaks the spec is refused here with the field and the problem named, before any data is
gathered. Hook contexts are checked against one model per hook (`CONTEXTS`, also in the OpenAPI document) for
the fields each hook requires (CDS Hooks Library STU1), but leniently beyond that: the sandbox's order-select
drafts lack `intent` and Bundle `type`, and a service that demanded them would fail real clients.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cds import jsonlimits
from cds.clinical.fhirvalues import codings, listed
from cds.content.terminology import Terminology
from cds.hooks.errors import InvalidRequest

REFERENCE = re.compile(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}")  # always fullmatch: `$` would accept a trailing newline
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")



class HookContext(BaseModel):
    """The context fields every hook this service answers carries (CDS Hooks Library STU1); others are allowed."""

    model_config = ConfigDict(extra="allow")

    userId: str = Field(min_length=1, description="Who is using the EHR, e.g. Practitioner/123")  # noqa: N815
    patientId: str = Field(min_length=1, description="The patient in context (a FHIR id)")  # noqa: N815
    encounterId: str | None = Field(default=None, description="The encounter, if any (a FHIR id)")  # noqa: N815

    @field_validator("userId")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not REFERENCE.fullmatch(value):
            raise ValueError("must be a reference like Practitioner/123")
        return value

    @field_validator("patientId", "encounterId")
    @classmethod
    def _fhir_id(cls, value: str | None) -> str | None:
        if value is not None and not FHIR_ID.fullmatch(value):
            raise ValueError("must be a FHIR id (letters, digits, '-', '.')")
        return value


class PatientViewContext(HookContext):
    """patient-view: the chart is opened."""


class EncounterStartContext(HookContext):
    """encounter-start: a visit begins; the encounter is required."""

    encounterId: str = Field(min_length=1, description="The encounter starting (a FHIR id)")  # noqa: N815


class OrderSelectContext(HookContext):
    """order-select: orders are being chosen; the selected ones must be among the drafts."""

    selections: list[str] = Field(min_length=1, description="References of the draft orders selected, e.g. "
                                                            "ServiceRequest/123")
    draftOrders: dict[str, Any] = Field(min_length=1, description="A FHIR Bundle of the draft orders")  # noqa: N815

    @field_validator("selections")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        if not all(REFERENCE.fullmatch(s) for s in value):
            raise ValueError("must be a list of references like ServiceRequest/123")
        return value

    @field_validator("draftOrders")
    @classmethod
    def _bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("must be a FHIR Bundle")
        return value


CONTEXTS: dict[str, type[HookContext]] = {"patient-view": PatientViewContext,
                                          "encounter-start": EncounterStartContext,
                                          "order-select": OrderSelectContext}
HOOKS = tuple(CONTEXTS)  # the hooks this service answers, in discovery order


class FhirAuthorization(BaseModel):
    """S2 #passing-the-access-token-to-the-cds-service; the token is never logged or stored."""

    model_config = ConfigDict(extra="allow")

    access_token: str = Field(min_length=1, repr=False)
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None

    @field_validator("access_token")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("access_token must be printable ASCII without spaces (it is sent as a Bearer header)")
        return value

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("token_type must be 'Bearer'")
        return value


class HookRequest(BaseModel):
    """The request body; unknown members such as `extension` are allowed (S2 #extensions)."""

    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1)
    hookInstance: str = Field(pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")  # noqa: N815, E501
    fhirServer: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")  # noqa: N815 - spec name
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815 - spec name
    context: dict[str, Any] = Field(json_schema_extra={"anyOf": [
        {"$ref": f"#/components/schemas/{model.__name__}"} for model in CONTEXTS.values()]},
        description="The hook's context: one of the context models, by `hook`")
    prefetch: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _usable_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise ValueError("fhirServer is not a usable URL") from None
        if url.scheme not in ("http", "https") or not url.host or len(value) > 2000:
            raise ValueError("fhirServer must be an http(s) URL with a host")
        return value

    @property
    def patient_id(self) -> str:
        return str(self.context["patientId"])

    @property
    def user_id(self) -> str:
        return str(self.context["userId"])

    @property
    def access_token(self) -> str | None:
        return self.fhirAuthorization.access_token if self.fhirAuthorization else None


def parse_body(raw: bytes) -> Any:
    """The body as JSON, nested at most JSON_DEPTH_LIMIT deep and all characters (else 400 naming the limit or the
    lone surrogate's place, never a crash)."""
    try:
        return jsonlimits.parse_json(raw, "the body", characters_only=True)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not JSON: {exc}", error="invalid-json") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body is not UTF-8 text", error="invalid-json") from None
    except ValueError as exc:
        raise InvalidRequest(str(exc), error="invalid-json") from None


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The first pydantic error as (dotted field path, message), for a 400 body."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(body)"
    return field, str(first["msg"])


def parse_request(raw: bytes, hook: str) -> HookRequest:
    """The request for a service registered on `hook`, or InvalidRequest naming the field."""
    data = parse_body(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", "(body)")
    if data.get("fhirAuthorization") is not None and not data.get("fhirServer"):
        raise InvalidRequest("fhirAuthorization requires fhirServer (cds-r-1)", "fhirServer")
    try:
        request = HookRequest.model_validate(data)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise InvalidRequest(f"{field}: {message}", field) from None
    if request.hook != hook:
        raise InvalidRequest(f"this service answers {hook}, not {request.hook}", "hook", error="wrong-hook")
    _check_context(request.context, hook)
    return request


def _check_context(context: dict[str, Any], hook: str) -> None:
    """The hook's context model, its first problem as a 400 naming the field; then the selections' drafts."""
    try:
        typed = CONTEXTS[hook].model_validate(context)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "context." + ".".join(str(p) for p in first["loc"])
        missing = first["type"] in ("missing", "string_too_short", "too_short") or first.get("input") is None
        if missing:
            message = f"{name} is required for {hook}"
        elif first["type"] == "value_error":  # ours: "context.userId must be a reference like ..."
            message = f"{name} {str(first['msg']).removeprefix('Value error, ')}"
        else:
            message = f"{name}: {first['msg']}"
        raise InvalidRequest(message, name, error="invalid-context") from None
    if isinstance(typed, OrderSelectContext):
        _check_selections(typed)


def _check_selections(context: OrderSelectContext) -> None:
    present = {f"{r.get('resourceType')}/{r.get('id')}" for r in entry_resources(context.draftOrders)}
    for index, selected in enumerate(context.selections):
        if selected not in present:
            raise InvalidRequest(f"{selected} is selected but not in context.draftOrders",
                               f"context.selections.{index}", error="invalid-context")


def entry_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries, skipping entries that hold none (draft orders, search pages)."""
    entries = bundle.get("entry")
    return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)] \
        if isinstance(entries, list) else []


def selected_knee_physiotherapy(request: HookRequest, terminology: Terminology) -> list[dict[str, Any]]:
    """Selected draft orders that are physiotherapy for the knee: what order-select reacts to.

    A physiotherapy ServiceRequest counts when its body site or reason names the knee or
    patellofemoral pain, or when it names neither (the patient's data then decide).
    """
    selected = set(request.context.get("selections") or [])
    found = []
    for resource in entry_resources(request.context.get("draftOrders") or {}):
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        physiotherapy = bool(set(codings(resource.get("code"))) & terminology.physiotherapy_codes)
        if ref in selected and resource.get("resourceType") == "ServiceRequest" and physiotherapy \
                and _about_knee(resource, terminology):
            found.append(resource)
    return found


def _about_knee(resource: dict[str, Any], terminology: Terminology) -> bool:
    concepts = [c for name in ("bodySite", "reasonCode") for c in listed(resource.get(name))]
    named = {code for concept in concepts for code in codings(concept)}
    knee = terminology.knee_structure_codes | set(terminology.site_by_code) | set(terminology.patellofemoral_by_code)
    return not named or bool(named & knee)

