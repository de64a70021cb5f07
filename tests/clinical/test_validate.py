"""Each profile check of cds/validate.py: what is used, what becomes a data issue, and where."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from cds.clinical.context import Context, Validated
from cds.clinical.validate import bundle_resources, validate
from cds.content.facts import DataIssue, HhdAsymmetryFact, HhdFact, MmtFact
from cds.content.terminology import Range, Terminology
from tests.support.paths import EXAMPLES, load_json

TODAY = dt.date(2026, 11, 24)
P01 = bundle_resources(load_json(EXAMPLES / "P01-classic-right.json"))


def resource(code: str, index: int = 0) -> dict[str, Any]:
    """A deep copy of the index-th P01 resource whose code (or resourceType) is `code`."""
    hits = [r for r in P01 if r["resourceType"] == code
            or any(c.get("code") == code for c in r.get("code", {}).get("coding", []))]
    return copy.deepcopy(hits[index])


PATIENT = resource("Patient")
MMT = "hip-flexion-mmt-seated-endrange"


def run(terminology: Terminology, *resources: dict[str, Any], today: dt.date = TODAY, **ctx: Any) -> Validated:
    return validate([PATIENT, *resources], terminology, Context(today=today, **ctx))


def only_issue(result: Validated) -> DataIssue:
    assert len(result.issues) == 1, result.issues
    return result.issues[0]


def kinds(result: Validated) -> list[str]:
    return [f.kind for f in result.facts if f.kind not in ("age", "records-checked")]


def test_p01_validates_cleanly(terminology: Terminology) -> None:
    result = validate(P01, terminology, Context(today=TODAY))
    assert result.issues == []
    assert sorted(kinds(result)) == sorted(["pain-site", "pain-score", "end-range-mmt", "end-range-mmt",
                                             "standard-mmt", "standard-mmt", "knee-hyperextension",
                                             "knee-hyperextension-gait"])


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_usable_statuses(terminology: Terminology, status: str) -> None:
    obs = resource(MMT) | {"status": status}
    assert kinds(run(terminology, obs)) == ["end-range-mmt"]


@pytest.mark.parametrize(("status", "severity", "code"), [
    ("preliminary", "warning", "preliminary"),
    ("entered-in-error", "information", "entered-in-error"),
    ("bogus", "error", "invalid-status"),
])
def test_unusable_statuses(terminology: Terminology, status: str, severity: str, code: str) -> None:
    result = run(terminology, resource(MMT) | {"status": status})
    issue = only_issue(result)
    assert (issue.severity, issue.code, issue.path) == (severity, code, "Observation.status")
    assert issue.resource == "Observation/p01-mmt-2"
    assert kinds(result) == []


def test_empty_code_is_an_error(terminology: Terminology) -> None:
    issue = only_issue(run(terminology, resource(MMT) | {"code": {}}))
    assert (issue.severity, issue.code, issue.path) == ("error", "no-code", "Observation.code")


def test_unrelated_and_unsupported_codes(terminology: Terminology) -> None:
    unrelated = resource(MMT) | {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}
    checked = run(terminology, unrelated)  # a heart rate: read for red flags, not about the knee, no issue
    assert checked.issues == []
    assert [f.display for f in checked.facts if f.kind == "records-checked"] == ["1 finding"]
    rom = resource(MMT) | {"code": {"coding": [{"system": "http://loinc.org", "code": "41377-3"}]}}
    issue = only_issue(run(terminology, rom))
    assert (issue.severity, issue.code) == ("warning", "unsupported-code")
    assert "sign convention" in issue.message


@pytest.mark.parametrize(("value", "grade"), [
    ({"valueString": "4+/5"}, "4+"), ({"valueInteger": 3}, "3"),
    ({"valueCodeableConcept": {"coding": [{"system": "urn:hipflex-cds:fhir:CodeSystem:mrc-grade", "code": "5-"}]}},
     "5-"),
])
def test_mrc_grade_forms(terminology: Terminology, value: dict[str, Any], grade: str) -> None:
    obs = {k: v for k, v in resource(MMT).items() if not k.startswith("value")} | value
    [fact] = [f for f in run(terminology, obs).facts if isinstance(f, MmtFact)]
    assert (fact.grade, fact.grade_rank) == (grade, terminology.grade_rank(grade))


@pytest.mark.parametrize("value", [{"valueString": "7"}, {"valueInteger": 6}, {"valueString": "4++"}])
def test_invalid_mrc_grade(terminology: Terminology, value: dict[str, Any]) -> None:
    obs = {k: v for k, v in resource(MMT).items() if not k.startswith("value")} | value
    result = run(terminology, obs)
    issue = only_issue(result)
    assert (issue.severity, issue.code) == ("error", "invalid-value")
    assert "not an MRC grade" in issue.message
    assert kinds(result) == ["rejected-input"]


@pytest.mark.parametrize(("score", "ok"), [(0, True), (10, True), (11, False), (-1, False)])
def test_pain_score_range(terminology: Terminology, score: int, ok: bool) -> None:
    result = run(terminology, resource("72514-3") | {"valueInteger": score})
    assert ("pain-score" in kinds(result)) is ok
    assert (not [i for i in result.issues if i.code != "no-current-pain"]) is ok


def hhd(side: str, value: float, unit: str = "N", date: str = "2026-11-19") -> dict[str, Any]:
    obs = resource(MMT)
    obs.pop("valueCodeableConcept")
    obs["code"] = {"coding": [{"system": "urn:hipflex-cds:fhir:CodeSystem:knee-hip",
                               "code": "hip-flexion-hhd-seated-endrange"}]}
    obs["id"] = f"hhd-{side}"
    obs["effectiveDateTime"] = date
    obs["valueQuantity"] = {"value": value, "system": "http://unitsofmeasure.org", "code": unit}
    code = {"left": "7771000", "right": "24028007"}[side]
    obs["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = code
    return obs


def test_force_units_are_converted_to_newtons(terminology: Terminology) -> None:
    result = run(terminology, hhd("left", 10, "kgf"), hhd("right", 30, "[lbf_av]"))
    forces = {f.side: f.newtons for f in result.facts if isinstance(f, HhdFact)}
    assert forces == {"left": pytest.approx(98.07), "right": pytest.approx(133.45)}
    [asym] = [f for f in result.facts if isinstance(f, HhdAsymmetryFact)]
    assert asym.side == "left"
    assert asym.percent == pytest.approx((133.45 - 98.07) / 133.45 * 100, abs=0.01)


@pytest.mark.parametrize(("unit", "value", "code"), [
    ("[lb_av]", 30, "invalid-unit"), ("kg", 10, "invalid-unit"), ("deg", 10, "invalid-unit"),
    ("N", 0, "out-of-range"), ("N", 1500, "out-of-range"),
])
def test_invalid_forces(terminology: Terminology, unit: str, value: float, code: str) -> None:
    issue = only_issue(run(terminology, hhd("left", value, unit)))
    assert (issue.severity, issue.code) == ("error", code)
    assert issue.path.startswith("Observation.valueQuantity")


def test_hhd_from_different_dates_gives_no_asymmetry(terminology: Terminology) -> None:
    result = run(terminology, hhd("left", 100), hhd("right", 150, date="2026-11-01"))
    assert not [f for f in result.facts if isinstance(f, HhdAsymmetryFact)]
    assert only_issue(result).code == "different-dates"


@pytest.mark.parametrize(("degrees", "unit", "ok"), [(8, "deg", True), (-5, "deg", True), (-6, "deg", False),
                                                     (41, "deg", False), (8, "rad", False)])
def test_hyperextension_angle(terminology: Terminology, degrees: float, unit: str, ok: bool) -> None:
    obs = resource("knee-hyperextension-angle")
    obs["valueQuantity"] |= {"value": degrees, "code": unit}
    result = run(terminology, obs)
    assert ("knee-hyperextension" in kinds(result)) is ok


def test_missing_side_is_an_error(terminology: Terminology) -> None:
    obs = resource(MMT)
    obs["bodySite"].pop("extension")
    issue = only_issue(run(terminology, obs))
    assert (issue.severity, issue.code, issue.path) == ("error", "no-side", "Observation.bodySite")


def test_legacy_laterality_is_mapped_with_a_warning(terminology: Terminology) -> None:
    obs = resource(MMT)
    obs["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "419465000"
    result = run(terminology, obs)
    assert [f.side for f in result.facts if isinstance(f, MmtFact)] == ["right"]
    assert (only_issue(result).severity, only_issue(result).code) == ("warning", "legacy-code")


def test_bilateral_expands_to_both_sides(terminology: Terminology) -> None:
    obs = resource(MMT)
    obs["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "51440002"
    assert sorted(f.side for f in run(terminology, obs).facts if isinstance(f, MmtFact)) == ["left", "right"]


@pytest.mark.parametrize(("subject", "code"), [({"reference": "Patient/someone-else"}, "wrong-patient"),
                                               (None, "no-subject")])
def test_subject_must_be_the_patient_in_context(terminology: Terminology, subject: Any, code: str) -> None:
    obs = resource(MMT)
    if subject is None:
        obs.pop("subject")
    else:
        obs["subject"] = subject
    issue = only_issue(run(terminology, obs))
    assert (issue.severity, issue.code, issue.path) == ("error", code, "Observation.subject")


@pytest.mark.parametrize(("days_old", "code"), [(-1, "future-date"), (91, "stale"), (90, None), (0, None)])
def test_effective_date_window(terminology: Terminology, days_old: int, code: str | None) -> None:
    obs = resource(MMT) | {"effectiveDateTime": (TODAY - dt.timedelta(days=days_old)).isoformat()}
    result = run(terminology, obs)
    assert [i.code for i in result.issues] == ([code] if code else [])


def test_lookback_window_is_configurable(terminology: Terminology) -> None:
    obs = resource(MMT) | {"effectiveDateTime": (TODAY - dt.timedelta(days=100)).isoformat()}
    assert kinds(run(terminology, obs, lookback_days=120)) == ["end-range-mmt"]


def test_missing_date_is_an_error(terminology: Terminology) -> None:
    obs = resource(MMT)
    obs.pop("effectiveDateTime")
    assert only_issue(run(terminology, obs)).code == "no-date"


def test_structural_errors_come_from_fhir_resources(terminology: Terminology) -> None:
    obs = resource(MMT) | {"valueInteger": "four"}
    issue = run(terminology, obs).issues[0]
    assert (issue.severity, issue.code) == ("error", "structure")
    assert issue.path.startswith("Observation.valueInteger")


def test_latest_reading_wins_and_ties_conflict(terminology: Terminology) -> None:
    older = resource(MMT) | {"id": "older", "effectiveDateTime": "2026-11-01", "valueString": "3"}
    older.pop("valueCodeableConcept")
    result = run(terminology, resource(MMT), older)
    assert [f.grade for f in result.facts if isinstance(f, MmtFact)] == ["4"]
    tie = older | {"effectiveDateTime": "2026-11-19"}
    result = run(terminology, resource(MMT), tie)
    assert [f for f in result.facts if isinstance(f, MmtFact)] == []
    assert only_issue(result).code == "conflicting-values"


def test_age_and_missing_birth_date(terminology: Terminology) -> None:
    assert [f.years for f in run(terminology).facts if f.kind == "age"] == [24]
    no_birth = {k: v for k, v in PATIENT.items() if k != "birthDate"}
    result = validate([no_birth], terminology, Context(today=TODAY))
    assert kinds(result) == []
    assert only_issue(result).code == "missing"


def condition(code: str, system: str, onset: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": f"c-{code}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/p01"}, "onsetDateTime": onset, **extra}


@pytest.mark.parametrize(("onset", "flagged"), [("2026-11-21", True), ("2026-10-13", True), ("2026-10-12", False)])
def test_trauma_counts_within_six_weeks(terminology: Terminology, onset: str, flagged: bool) -> None:
    local = "urn:hipflex-cds:fhir:CodeSystem:knee-hip"
    result = run(terminology, condition("recent-knee-trauma", local, onset))
    assert ("red-flag" in kinds(result)) is flagged


def test_pfp_diagnosis_side_from_icd_code(terminology: Terminology) -> None:
    result = run(terminology, condition("M22.2X2", "http://hl7.org/fhir/sid/icd-10-cm", "2026-09-01"))
    assert [(f.kind, getattr(f, "side", None)) for f in result.facts if f.kind in kinds(result)] == [
        ("knee-condition", "left")]


def test_refuted_condition_is_ignored(terminology: Terminology) -> None:
    refuted = condition("knee-effusion", "urn:hipflex-cds:fhir:CodeSystem:knee-hip", "2026-11-20",
                        verificationStatus={"coding": [{"code": "refuted"}]})
    assert kinds(run(terminology, refuted)) == []


@pytest.mark.parametrize(("performed", "flagged"), [("2026-06-01", True), ("2026-05-01", False)])
def test_knee_surgery_within_six_months(terminology: Terminology, performed: str, flagged: bool) -> None:
    procedure = {"resourceType": "Procedure", "id": "surgery", "status": "completed",
                 "code": {"text": "Knee arthroscopy"}, "subject": {"reference": "Patient/p01"},
                 "performedDateTime": performed,
                 "bodySite": [{"coding": [{"system": "http://snomed.info/sct", "code": "49076000"}]}]}
    assert ("red-flag" in kinds(run(terminology, procedure))) is flagged


def test_active_physiotherapy_referral(terminology: Terminology) -> None:
    request = {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "308447003"}]},
               "subject": {"reference": "Patient/p01"}}
    assert kinds(run(terminology, request)) == ["physiotherapy-referral"]
    assert kinds(run(terminology, request | {"status": "completed"})) == []


def test_non_resources_and_operation_outcomes_are_reported(terminology: Terminology) -> None:
    result = run(terminology, {"hello": "world"}, {"resourceType": "OperationOutcome", "id": "oo", "issue": []})
    assert [(i.severity, i.code) for i in result.issues] == [("error", "not-fhir"), ("warning", "source-error")]


def test_user_role_becomes_the_audience(terminology: Terminology) -> None:
    result = run(terminology, user_id="RelatedPerson/mum")
    assert [getattr(f, "role", None) for f in result.facts if f.kind == "audience"] == ["related-person"]


def test_structure_verdicts_are_cached_by_content_not_by_id(terminology: Terminology) -> None:
    broken = resource(MMT) | {"effectiveDateTime": "not a date"}
    first = run(terminology, broken).issues
    assert [i.code for i in first] == ["structure"]
    assert run(terminology, copy.deepcopy(broken)).issues == first
    assert run(terminology, resource(MMT)).issues == []  # same id, different content: checked again


def test_plausible_ranges_come_from_the_terminology_file(terminology: Terminology) -> None:
    angle = resource("knee-hyperextension-angle") | {"valueQuantity": {"value": 45, "unit": "deg", "code": "deg",
                                                                     "system": "http://unitsofmeasure.org"}}
    assert only_issue(run(terminology, angle)).code == "out-of-range"
    wider = terminology.model_copy(update={"plausible": terminology.plausible.model_copy(
        update={"angle": Range(min=-5, max=50)})})
    assert "knee-hyperextension" in kinds(run(wider, angle))

