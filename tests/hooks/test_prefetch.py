"""Gathering data: prefetch first, then the EHR's FHIR server (a real HTTP stub on localhost)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cds.content.terminology import Terminology
from cds.hooks.errors import DataUnavailable
from cds.hooks.fhirclient import FhirReader
from cds.hooks.prefetch import Gathered, gather, prefetch_templates, render
from cds.hooks.request import HookRequest
from cds.settings import FhirReads
from tests.support.builders import example_prefetch, hook_request, searchset
from tests.support.servers import FhirStub

TOKEN = "secret-access-token-123"


@pytest.fixture
def templates(terminology: Terminology) -> dict[str, str]:
    return prefetch_templates(terminology)


@pytest.fixture
def reader() -> FhirReader:
    return FhirReader(FhirReads(connect_seconds=1, read_seconds=0.5, max_bytes=200_000, max_pages=3))


def collect(request: HookRequest, templates: dict[str, str], reader: FhirReader, stub: FhirStub) -> Gathered:
    """Gather with the stub's base URL allow-listed (its loopback address listed on purpose)."""
    return asyncio.run(gather(request, templates, reader, [stub.base]))


def request_for(stub: FhirStub | None, prefetch: dict[str, Any] | None, token: str | None = TOKEN) -> HookRequest:
    body = hook_request(prefetch=prefetch)
    if stub is not None:
        body["fhirServer"] = stub.base
        if token:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "user/Observation.read", "subject": "hipflex"}
    return HookRequest.model_validate(body)


def serve_example(stub: FhirStub, templates: dict[str, str], request: HookRequest) -> dict[str, Any]:
    """Serve P01 from the stub at the rendered template paths."""
    data = example_prefetch()
    for key, template in templates.items():
        path = render(template, request)
        assert path is not None
        stub.serve(path, data[key])
    return data


def test_render_fills_context_and_user_tokens(terminology: Terminology) -> None:
    request = request_for(None, None)
    assert render("Patient/{{context.patientId}}", request) == "Patient/p01"
    assert render("Practitioner/{{userPractitionerId}}", request) == "Practitioner/COREPRACTITIONER1"
    assert render("Encounter/{{context.encounterId}}", request) is None
    assert render("PractitionerRole/{{userPractitionerRoleId}}", request) is None


def test_complete_prefetch_needs_no_fetch(fhir_stub: FhirStub, templates: dict[str, str], reader: FhirReader) -> None:
    gathered = collect(request_for(fhir_stub, example_prefetch()), templates, reader, fhir_stub)
    assert set(gathered.origin.values()) == {"prefetch"}
    assert fhir_stub.seen == []
    assert {r["resourceType"] for r in gathered.resources} >= {"Patient", "Observation"}


def test_missing_keys_are_fetched_with_the_bearer_token(fhir_stub: FhirStub, templates: dict[str, str],
                                                        reader: FhirReader) -> None:
    request = request_for(fhir_stub, None)
    data = serve_example(fhir_stub, templates, request)
    gathered = collect(request, templates, reader, fhir_stub)
    assert gathered.origin == dict.fromkeys(templates, "fetched")
    assert sorted(fhir_stub.paths()) == ["Condition", "MedicationRequest", "MedicationStatement", "Observation",
                                         "Observation", "Patient/p01", "Procedure", "ServiceRequest"]
    assert {s.authorization for s in fhir_stub.seen} == {f"Bearer {TOKEN}"}
    assert len([r for r in gathered.resources if r["resourceType"] == "Observation"]) == len(
        data["observations"]["entry"])


def test_null_means_no_data_and_is_not_refetched(fhir_stub: FhirStub, templates: dict[str, str],
                                                 reader: FhirReader) -> None:
    prefetch = example_prefetch() | {"conditions": None, "procedures": None}
    gathered = collect(request_for(fhir_stub, prefetch), templates, reader, fhir_stub)
    assert (gathered.origin["conditions"], gathered.origin["procedures"]) == ("empty", "empty")
    assert fhir_stub.seen == []


def test_an_operation_outcome_in_prefetch_is_fetched_again(fhir_stub: FhirStub, templates: dict[str, str],
                                                           reader: FhirReader) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    request = request_for(fhir_stub, example_prefetch() | {"observations": outcome})
    serve_example(fhir_stub, templates, request)
    gathered = collect(request, templates, reader, fhir_stub)
    assert gathered.origin["observations"] == "fetched"
    assert fhir_stub.paths() == ["Observation"]


def test_next_pages_are_followed_on_the_same_server(fhir_stub: FhirStub, templates: dict[str, str],
                                                    reader: FhirReader) -> None:
    observations = example_prefetch()["observations"]["entry"]
    first = searchset([observations[0]["resource"]]) | {"link": [{"relation": "next",
                                                                  "url": f"{fhir_stub.base}/page2"}]}
    fhir_stub.serve("page2", searchset([e["resource"] for e in observations[1:]]))
    gathered = collect(request_for(fhir_stub, example_prefetch() | {"observations": first}), templates, reader,
                       fhir_stub)
    assert len([r for r in gathered.resources if r["resourceType"] == "Observation"]) == len(observations)
    assert fhir_stub.paths() == ["page2"]


@pytest.mark.parametrize(("setup", "reason"), [
    ("no-server", "no fhirServer to fetch it from"),
    ("server-error", "could not be read"),
    ("timeout", "could not be read"),
    ("not-json", "not a FHIR resource"),
    ("too-large", "over 200000 bytes"),
    ("foreign-next", "not on the request's fhirServer"),
    ("endless-pages", "more than 3 pages"),
])
def test_unobtainable_observations_are_412_with_the_reason(fhir_stub: FhirStub, templates: dict[str, str],
                                                           reader: FhirReader, setup: str, reason: str) -> None:
    prefetch = {k: v for k, v in example_prefetch().items() if k != "observations"}
    request = request_for(None if setup == "no-server" else fhir_stub, prefetch)
    path = render(templates["observations"], request)
    assert path is not None
    if setup == "server-error":
        fhir_stub.serve(path, {"resourceType": "OperationOutcome"}, status=500)
    elif setup == "timeout":
        fhir_stub.delay_seconds = 1.5
    elif setup == "not-json":
        fhir_stub.serve(path, ["not", "a", "resource"])
    elif setup == "too-large":
        fhir_stub.serve(path, searchset([{"resourceType": "Basic", "id": "x" * 64, "note": "y" * 250_000}]))
    elif setup in ("foreign-next", "endless-pages"):
        target = "http://127.0.0.2:9/fhir/p" if setup == "foreign-next" else f"{fhir_stub.base}/{path}"
        fhir_stub.serve(path, searchset([]) | {"link": [{"relation": "next", "url": target}]})
    with pytest.raises(DataUnavailable) as raised:
        collect(request, templates, reader, fhir_stub)
    assert raised.value.field == "prefetch.observations"
    assert reason in raised.value.message
    assert TOKEN not in raised.value.message


def test_unobtainable_conditions_become_a_data_issue(fhir_stub: FhirStub, templates: dict[str, str],
                                                     reader: FhirReader) -> None:
    prefetch = {k: v for k, v in example_prefetch().items() if k != "conditions"}
    request = request_for(fhir_stub, prefetch)
    fhir_stub.serve("Condition", {"resourceType": "OperationOutcome"}, status=503)
    gathered = collect(request, templates, reader, fhir_stub)
    assert gathered.origin["conditions"] == "unavailable"
    [issue] = gathered.issues
    assert (issue.code, issue.severity) == ("unavailable", "warning")
    assert "Condition" in issue.resource
    assert "could not be read" in issue.message
