"""Value readers: each one normalises or refuses with the element and the reason, never an exception of its own."""

from __future__ import annotations

from typing import Any

import pytest

from cds.clinical import fhirvalues
from cds.clinical.fhirvalues import CodesOf, Reject
from cds.content.terminology import Terminology


def quantity(value: Any, code: str = "N") -> dict[str, Any]:
    return {"resourceType": "Observation", "valueQuantity": {"value": value, "code": code,
                                                             "system": "http://unitsofmeasure.org"}}


@pytest.mark.parametrize("value", ["heavy", True, [1], {"n": 1}])
def test_a_force_that_is_not_a_number_is_refused_by_element(terminology: Terminology, value: Any) -> None:
    with pytest.raises(Reject) as refused:
        fhirvalues.force(quantity(value), terminology)
    assert (refused.value.code, refused.value.path) == ("invalid-value", "Observation.valueQuantity.value")


@pytest.mark.parametrize(("value", "code", "newtons"), [(10, "kgf", 98.07), (100, "N", 100.0), (999.99, "N", 999.99)])
def test_forces_are_converted_to_newtons(terminology: Terminology, value: float, code: str, newtons: float) -> None:
    assert fhirvalues.force(quantity(value, code), terminology) == pytest.approx(newtons)


@pytest.mark.parametrize(("value", "ok"), [(-5, True), (40, True), (-5.1, False), (40.1, False)])
def test_angle_range_edges_are_those_of_the_terminology(terminology: Terminology, value: float, ok: bool) -> None:
    assert terminology.plausible.angle.holds(value) is ok
    if ok:
        assert fhirvalues.angle(quantity(value, "deg"), terminology) == value
    else:
        with pytest.raises(Reject, match="outside -5° … 40°"):
            fhirvalues.angle(quantity(value, "deg"), terminology)


def test_codings_ignore_what_is_not_a_coding() -> None:
    assert fhirvalues.codings({"coding": ["x", 3, {"system": "s", "code": "c"}]}) == [("s", "c")]
    assert fhirvalues.codings("not a concept") == []


@pytest.mark.parametrize(("text", "date"), [
    ("2026", "2026-01-01"), ("2026-11", "2026-11-01"), ("2026-11-19T10:00:00Z", "2026-11-19"), ("yesterday", None),
    (20261119, None)])
def test_dates_read_partial_and_refuse_the_rest(text: Any, date: str | None) -> None:
    found = fhirvalues.to_date(text)
    assert (found.isoformat() if found else None) == date


def test_a_resources_codes_are_read_once_a_run_and_never_taken_for_another_resources() -> None:
    codes_of = CodesOf()
    first = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}
    read = codes_of(first)
    assert read == [("http://loinc.org", "8867-4")]
    assert codes_of(first) is read  # the same record, read again: the pairs already worked out
    others = [{"resourceType": "Observation", "code": {"coding": [{"system": "urn:x", "code": str(i)}]}}
              for i in range(200)]
    assert [codes_of(r) for r in others] == [[("urn:x", str(i))] for i in range(200)]
