"""Profile checks on records coded the way real EHRs code them: red flags by ICD-10-CM, SNOMED CT, CPT and
local codes; knee records that fit no class; P01 plus one such record, through the whole decision."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from cds.clinical.context import Context
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.validate import bundle_resources
from tests.support.paths import EXAMPLE_DATE, EXAMPLES, load_json

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
KNEE = {"coding": [{"system": SNOMED, "code": "72696002", "display": "Knee region structure"}]}


def days_ago(days: int) -> str:
    return (EXAMPLE_DATE - dt.timedelta(days=days)).isoformat()


def condition(system: str, code: str, days: int = 3, body_site: bool = False) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": f"c-{code}", "subject": {"reference": "Patient/p01"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [{"system": system, "code": code}]}, "onsetDateTime": days_ago(days)}
    if body_site:
        resource["bodySite"] = [KNEE]
    return resource


def procedure(system: str, code: str, days: int = 60, body_site: bool = False) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Procedure", "id": f"p-{code}", "status": "completed",
                                "subject": {"reference": "Patient/p01"},
                                "code": {"coding": [{"system": system, "code": code}]},
                                "performedDateTime": days_ago(days)}
    if body_site:
        resource["bodySite"] = [KNEE]
    return resource


def p01_with(pipeline: Pipeline, *extra: dict[str, Any]) -> Decision:
    resources = bundle_resources(load_json(EXAMPLES / "P01-classic-right.json")) + list(extra)
    return pipeline.decide(resources, Context(today=EXAMPLE_DATE, user_id="Practitioner/1"))


def kinds(decision: Decision) -> list[str]:
    return [c.explanation.recommendation.card for c in decision.cards]


@pytest.mark.parametrize("record", [
    condition(ICD, "S80.01XA"),                                  # contusion of right knee, 3 days ago
    condition(ICD, "S82.001A"),                                  # fracture of right patella
    condition(ICD, "S83.241A"),                                  # meniscus tear, current
    condition(ICD, "S83.411A"),                                  # collateral ligament sprain
    condition(ICD, "S83.511A"),                                  # cruciate ligament sprain
    condition(ICD, "S83.004A"),                                  # patellar dislocation
    condition(ICD, "S83.104A"),                                  # knee dislocation
    condition(ICD, "M25.461", days=400),                         # effusion, right knee (no window)
    condition(ICD, "M25.061", days=400),                         # haemarthrosis, right knee
    condition(ICD, "M00.061", days=400),                         # staphylococcal arthritis, right knee
    condition(ICD, "M10.061", days=400),                         # idiopathic gout, right knee
    condition(ICD, "M11.261", days=400),                         # chondrocalcinosis, right knee
    condition(ICD, "C40.21", days=400),                          # malignant neoplasm, long bones of right leg
    condition(ICD, "C79.51", days=400),                          # secondary neoplasm of bone
    condition(ICD, "Z85.3", days=400),                           # history of breast cancer
    condition(ICD, "R63.4", days=10),                            # abnormal weight loss
    condition(ICD, "M2546", days=400),                           # written without the dot
    condition(SNOMED, "125601008"),                              # injury of knee
    condition(ICD, "M23.51", days=300),                          # chronic instability of the right knee
    condition(ICD, "M22.01", days=300),                          # recurrent dislocation of the right patella
    condition(ICD, "Z96.651", days=900),                         # presence of a right artificial knee joint
    condition(ICD, "M00.9", days=5),                             # pyogenic arthritis, site unspecified
    procedure(CPT, "29881"),                                     # knee arthroscopy, no bodySite
    procedure(CPT, "27447"),                                     # total knee arthroplasty
    procedure(SNOMED, "309431009"),                              # arthroscopy of knee joint
    procedure(SNOMED, "609588000", body_site=True),              # total knee replacement, with bodySite
    procedure(SNOMED, "71388002", body_site=True),               # any procedure on the knee
], ids=lambda r: f"{r['resourceType']}-{r['code']['coding'][0]['code']}")
def test_each_red_flag_family_withholds_treatment_and_shows_the_red_flag_card(pipeline: Pipeline,
                                                                             record: dict[str, Any]) -> None:
    decision = p01_with(pipeline, record)
    assert kinds(decision) == ["red-flag"]
    assert not any(c.card.suggestions for c in decision.cards)
    assert "Recorded: " in (decision.cards[0].card.detail or "")


@pytest.mark.parametrize("record", [
    condition(ICD, "S80.01XA", days=60),        # trauma older than 6 weeks
    procedure(CPT, "29881", days=200),          # surgery older than 6 months
    condition(ICD, "M22.2X1", days=400),        # patellofemoral disorder: benign
    condition(ICD, "M25.561", days=400),        # knee pain: benign
])
def test_old_or_benign_records_do_not_withhold_treatment(pipeline: Pipeline, record: dict[str, Any]) -> None:
    decision = p01_with(pipeline, record)
    assert kinds(decision) == ["hip-strengthening", "patellar-glide"]
    assert re.search(r"No red flag in 1 (condition|procedure)\.", decision.cards[0].card.detail or "")


@pytest.mark.parametrize("record", [
    condition(ICD, "S86.011A"),                                   # Achilles strain: S80 to S89, no red flag family
    condition(ICD, "M17.11", days=300),                           # osteoarthritis of the right knee
    condition(SNOMED, "404684003", body_site=True),               # a finding on the knee, code unknown here
])
def test_an_unclassified_knee_record_is_named_and_holds_back_every_suggestion(pipeline: Pipeline,
                                                                              record: dict[str, Any]) -> None:
    decision = p01_with(pipeline, record)
    assert kinds(decision) == ["check-records"]
    assert not any(c.card.suggestions for c in decision.cards)
    detail = decision.cards[0].card.detail or ""
    code = record["code"]["coding"][0]["code"]
    assert "To check: Condition “no text” (" in detail
    assert code in detail
    assert "No red flag" not in detail
    assert "unknown-knee-record" in {i.code for i in decision.validated.issues}
