"""A site's terminology server answers what the shipped ValueSets cannot: SNOMED CT descendants of a red-flag
concept. Tested through the HTTP service against a real HTTP terminology stub on localhost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from cds.clinical.explanation import Explanation
from cds.web.app import create_app
from tests.support.builders import hook_request
from tests.support.servers import FhirStub, free_port, running, service_settings

PATIENT_VIEW = "/cds-services/hipflex-patient-view"
SNOMED = "http://snomed.info/sct"
EFFUSION_SET = "urn:hipflex-cds:fhir:ValueSet:red-flag-knee-effusion"
DESCENDANT = "999000111"  # stands for a concept below the listed effusion concept in the site's SNOMED CT


def parameters(result: bool) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "result", "valueBoolean": result}]}


def with_descendant() -> dict[str, Any]:
    """P01 with an active Condition coded only by a SNOMED CT concept no shipped set lists, with no knee word."""
    body = hook_request()
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "Condition", "id": "c-descendant", "subject": {"reference": "Patient/p01"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [{"system": SNOMED, "code": DESCENDANT, "display": "Traumatic haemarthrosis"}]},
        "onsetDateTime": "2026-11-20"}}]}
    return body


def cards_of(url: str) -> list[Any]:
    response = httpx.post(f"{url}{PATIENT_VIEW}", json=with_descendant(), timeout=20)
    assert response.status_code == 200, response.text
    return list(response.json()["cards"])


def test_a_descendant_of_a_red_flag_concept_per_the_server_gets_the_red_flag_card(tmp_path: Path,
                                                                                  fhir_stub: FhirStub) -> None:
    fhir_stub.serve("ValueSet/$validate-code", parameters(False))
    fhir_stub.serve(f"ValueSet/$validate-code?url={EFFUSION_SET}&system={SNOMED}&code={DESCENDANT}", parameters(True))
    with running(create_app(service_settings(tmp_path, terminology_server=fhir_stub.base))) as url:
        cards = cards_of(url)
        asked = len(fhir_stub.seen)
        again = cards_of(url)
    assert [Explanation.of(c).recommendation.card for c in cards] == ["red-flag"]
    assert not any(c.get("suggestions") for c in cards)
    assert asked > 0
    assert all(s.path.startswith("ValueSet/$validate-code?url=") for s in fhir_stub.seen)
    assert len(fhir_stub.seen) == asked  # the second call was answered from the cache
    assert [Explanation.of(c).recommendation.card for c in again] == ["red-flag"]


def test_without_a_server_the_shipped_sets_decide_and_the_pages_say_descendants_need_one(tmp_path: Path) -> None:
    with running(create_app(service_settings(tmp_path))) as url:
        cards = cards_of(url)
    assert [Explanation.of(c).recommendation.card for c in cards] == ["hip-strengthening", "patellar-glide"]
    assert "No red flag in 1 condition." in cards[0]["detail"]


def test_a_server_that_does_not_answer_is_named_on_the_card_within_its_deadline(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    settings = service_settings(tmp_path, terminology_server=dead, terminology_deadline_seconds=1)
    with running(create_app(settings)) as url:
        started = time.monotonic()
        cards = cards_of(url)
        took = time.monotonic() - started
    detail = cards[0]["detail"]
    assert "the terminology server did not answer" in detail
    assert took < 10
