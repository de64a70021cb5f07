"""The OpenAPI document: FastAPI's, plus the CDS Hooks models the routes read raw (for the size limit) and answer,
and the service ids discovery lists, so a client or a schema-driven fuzzer reaches the real services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from cds.clinical.response import CDSResponse
from cds.hooks.discovery import Discovery
from cds.hooks.feedback import FeedbackRequest, FeedbackStored
from cds.hooks.request import CONTEXTS, HookRequest
from cds.web.errors import ErrorBody


def schema_ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def contract(body: str | None, answer: str) -> dict[str, Any]:
    """OpenAPI for a route that reads its body raw (for the size limit) but speaks a pydantic contract."""
    errors = {str(code): {"description": text, "content": schema_ref("ErrorBody")} for code, text in (
        (400, "the body breaks CDS Hooks 2.0 (field named)"), (401, "token refused (check named)"),
        (404, "unknown service or card"), (412, "required data could not be had"), (413, "body over the limit"),
        (503, "too much at once; try again"))}
    extra: dict[str, Any] = {"responses": {"200": {"description": "OK", "content": schema_ref(answer)}, **errors}}
    if body is not None:
        extra["requestBody"] = {"required": True, "content": schema_ref(body)}
    return extra


def openapi_builder(app: FastAPI, service_ids: list[str]) -> Callable[[], dict[str, Any]]:
    """The generated OpenAPI document plus the CDS Hooks models the routes read and answer, and the service ids
    discovery lists (so a client or a schema-driven fuzzer reaches the real services)."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, definitions = models_json_schema(
                [(HookRequest, "validation"), (FeedbackRequest, "validation"), (CDSResponse, "serialization"),
                 (Discovery, "serialization"), (ErrorBody, "serialization"),
                 (FeedbackStored, "serialization"), *((model, "validation") for model in CONTEXTS.values())],
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
