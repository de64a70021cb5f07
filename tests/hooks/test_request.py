"""Request checks per hook (S2 #http-request, CDS Hooks Library contexts), including sandbox-shaped bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds.content.terminology import Terminology
from cds.hooks.errors import InvalidRequest
from cds.hooks.request import parse_request, selected_knee_physiotherapy
from tests.support.builders import hook_request

SNOMED = "http://snomed.info/sct"


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def physio_order(ident: str = "draft-1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": ident, "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p01"},
            "code": {"coding": [{"system": SNOMED, "code": "91251008", "display": "Physical therapy procedure"}]}
            } | extra


def order_select(*resources: dict[str, Any], selections: list[str] | None = None) -> dict[str, Any]:
    body = hook_request("order-select")
    body["context"] |= {"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]},
                        "selections": selections or [f"{r['resourceType']}/{r['id']}" for r in resources]}
    return body


@pytest.mark.parametrize(("body", "field", "message"), [
    ([1, 2], "(body)", "JSON object"),
    ({"hook": "patient-view", "context": {}}, "hookInstance", "Field required"),
    (hook_request(hookInstance="not-a-uuid"), "hookInstance", "pattern"),
    (hook_request(hook="order-sign"), "hook", "answers patient-view, not order-sign"),
    (hook_request(context={"patientId": "p01"}), "context.userId", "required"),
    (hook_request(context={"patientId": "p01", "userId": "bob"}), "context.userId", "reference"),
    (hook_request(context={"patientId": "a b", "userId": "Practitioner/1"}), "context.patientId", "FHIR id"),
    (hook_request(fhirAuthorization={"access_token": "t"}), "fhirServer", "cds-r-1"),
    (hook_request(fhirServer="https://ehr.example/fhir", fhirAuthorization={
        "access_token": "t", "token_type": "MAC", "expires_in": 300, "scope": "s", "subject": "c"}),
     "fhirAuthorization.token_type", "Bearer"),
    (hook_request(fhirServer="ftp://ehr.example"), "fhirServer", "pattern"),
])
def test_spec_violations_name_the_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request(raw(body), "patient-view")
    assert raised.value.field == field
    assert message in raised.value.message


def test_encounter_start_requires_the_encounter() -> None:
    body = hook_request("encounter-start")
    assert parse_request(raw(body), "encounter-start").context["encounterId"] == "enc-1"
    del body["context"]["encounterId"]
    with pytest.raises(InvalidRequest, match=r"context\.encounterId is required"):
        parse_request(raw(body), "encounter-start")


def test_sandbox_patient_view_without_encounter_and_with_extension_is_accepted() -> None:
    body = hook_request(fhirServer="http://localhost:8080/fhir", extension={"org.example.x": 1})
    assert parse_request(raw(body), "patient-view").hook == "patient-view"


def test_order_select_selections_must_be_in_draft_orders() -> None:
    body = order_select(physio_order(), selections=["ServiceRequest/other"])
    with pytest.raises(InvalidRequest) as raised:
        parse_request(raw(body), "order-select")
    assert raised.value.field == "context.selections.0"


def test_sandbox_order_select_without_intent_or_bundle_type_is_accepted(terminology: Terminology) -> None:
    medication = {"resourceType": "MedicationRequest", "id": "request-123", "status": "draft"}
    request = parse_request(raw(order_select(medication)), "order-select")
    assert selected_knee_physiotherapy(request, terminology) == []


@pytest.mark.parametrize(("extra", "reacts"), [
    ({}, True),
    ({"bodySite": [{"coding": [{"system": SNOMED, "code": "72696002", "display": "Knee region"}]}]}, True),
    ({"reasonCode": [{"coding": [{"system": SNOMED, "code": "430725003"}]}]}, True),
    ({"bodySite": [{"coding": [{"system": SNOMED, "code": "53120007", "display": "Upper limb"}]}]}, False),
])
def test_order_select_reacts_to_physiotherapy_for_the_knee(terminology: Terminology, extra: dict[str, Any],
                                                           reacts: bool) -> None:
    request = parse_request(raw(order_select(physio_order(**extra))), "order-select")
    assert bool(selected_knee_physiotherapy(request, terminology)) is reacts


def test_an_unselected_physiotherapy_draft_does_not_count(terminology: Terminology) -> None:
    other = {"resourceType": "ServiceRequest", "id": "lab-1", "status": "draft", "code": {"text": "FBC"}}
    body = order_select(physio_order(), other, selections=["ServiceRequest/lab-1"])
    assert selected_knee_physiotherapy(parse_request(raw(body), "order-select"), terminology) == []
