"""Reading and normalising FHIR values: codes, dates, laterality, grades, forces, angles, pain scores.

Each reader either returns a normalised value (MRC grade with its rank, newtons, degrees…) or
raises `Reject` naming the element and the reason. Units and plausible ranges come from
`rules/terminology.yaml`, so a terminologist can change them without touching Python.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from typing import Any

from cds.content.facts import DataIssue, IssueCode
from cds.content.terminology import ObservationBinding, Side, Terminology
from cds.errors import HipflexError

UCUM = "http://unitsofmeasure.org"
LATERALITY_ATTRIBUTE = ("http://snomed.info/sct", "272741003")


class Reject(HipflexError):
    """A resource (or one value of it) cannot be used: the error issue to report, less the resource, which only the
    caller knows."""

    def __init__(self, *, path: str, code: IssueCode, message: str) -> None:
        super().__init__(message)
        self.path, self.code, self.message = path, code, message

    def issue(self, resource: str) -> DataIssue:
        return DataIssue(resource=resource, path=self.path, severity="error", code=self.code, message=self.message)


SNOMED = "http://snomed.info/sct"
EXPRESSION_LATERALITY = re.compile(r"272741003\s*(?:\|[^|]*\|)?\s*=\s*(\d+)")


def codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept; nothing for anything else. A SNOMED CT post-coordinated
    expression ("64234005 |Patella| : 272741003 = 24028007") counts as its focus concept."""
    coding = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(coding, list):
        return []
    pairs = []
    for c in coding:
        if isinstance(c, dict):
            system, code = str(c.get("system", "")), str(c.get("code", ""))
            pairs.append((system, _focus(code) if system == SNOMED else code))
    return pairs


class CodesOf:
    """The `codings` of each resource's `code`, worked out once in a validation run: a chart record is read by up
    to four checks (is it worth a structure check, which binding, a measurement or a chart record, a red flag),
    and in a large chart that was a fifth of the run. Kept by the resource's id together with the resource itself:
    while it is held here no other dict can be made at its address."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[dict[str, Any], list[tuple[str, str]]]] = {}

    def __call__(self, resource: dict[str, Any]) -> list[tuple[str, str]]:
        seen = self._seen.get(id(resource))
        if seen is not None:
            return seen[1]
        codes = codings(resource.get("code"))
        self._seen[id(resource)] = (resource, codes)
        return codes


def _focus(code: str) -> str:
    return code.split(":", 1)[0].split("|", 1)[0].strip() if ":" in code or "|" in code else code


def _raw_codings(concept: Any) -> list[tuple[str, str]]:
    coding = concept.get("coding") if isinstance(concept, dict) else None
    return [(str(c.get("system", "")), str(c.get("code", ""))) for c in coding if isinstance(c, dict)] \
        if isinstance(coding, list) else []


def to_date(value: Any) -> dt.date | None:
    """FHIR date/dateTime/instant text -> date (partial dates resolve to their first day)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def effective(resource: dict[str, Any], prefix: str) -> tuple[str, dt.date | None]:
    """The element name and date of `{prefix}[x]` (DateTime, Instant, or a Period's end, else start)."""
    date_time, instant, period_name, unknown = _choice_names(prefix)
    for name in (date_time, instant):
        if name in resource:
            return name, to_date(resource[name])
    period = resource.get(period_name)
    if isinstance(period, dict):
        return period_name, to_date(period.get("end") or period.get("start"))
    return unknown, None


@functools.cache
def _choice_names(prefix: str) -> tuple[str, str, str, str]:
    """The element names of a date choice, written once (every chart record asks for them)."""
    return f"{prefix}DateTime", f"{prefix}Instant", f"{prefix}Period", f"{prefix}[x]"


def laterality(resource: dict[str, Any], t: Terminology) -> tuple[Side | None, str | None]:
    """The side, from wherever real EHRs put it: a bodySite laterality extension, a laterality qualifier coding in
    bodySite or in valueCodeableConcept, a 272741003 |Laterality| component (mCODE-style), or a SNOMED CT
    post-coordinated expression with the laterality attribute. Also the element path of an inactive legacy code
    if one was read (the caller warns). Two different sides -> Reject."""
    rtype = resource["resourceType"]
    given = resource.get("bodySite")
    sites = [s for s in (given if isinstance(given, list) else [given]) if isinstance(s, dict)]
    concepts = [(f"{rtype}.bodySite.extension", ext.get("valueCodeableConcept"))
                for site in sites for ext in listed(site.get("extension")) if isinstance(ext, dict)]
    concepts += [(f"{rtype}.bodySite", site) for site in sites]
    concepts += [(f"{rtype}.valueCodeableConcept", resource.get("valueCodeableConcept"))]
    concepts += [(f"{rtype}.component", comp.get("valueCodeableConcept"))
                 for comp in listed(resource.get("component"))
                 if isinstance(comp, dict) and LATERALITY_ATTRIBUTE in codings(comp.get("code"))]
    lat = t.laterality
    found: list[tuple[str, Side, bool]] = []
    for path, concept in concepts:
        for system, code in _raw_codings(concept):
            qualifier = EXPRESSION_LATERALITY.search(code) if system == SNOMED else None
            value = qualifier.group(1) if qualifier else code
            site = t.site_by_code.get((system, code))
            if site is not None and site.side is not None:
                found.append((path, site.side, False))
            elif system == lat.system and value in lat.codes:
                found.append((path, lat.codes[value], False))
            elif system == lat.system and value in lat.legacy:
                found.append((path, lat.legacy[value], True))
    sides = {side for _, side, _ in found}
    if len(sides) > 1:
        raise Reject(path=f"{rtype}.bodySite", code=IssueCode.conflicting_side,
                     message="laterality is given twice, differently")
    legacy = next((path for path, _, old in found if old), None)
    return next(iter(sides), None), legacy


def listed(value: Any) -> list[Any]:
    """A FHIR array element as a list (a lone object or a string where an array belongs counts as nothing)."""
    return value if isinstance(value, list) else []


def observation_value(resource: dict[str, Any], binding: ObservationBinding, t: Terminology) -> Any:
    """The Observation's value, normalised for the kind of value its code carries."""
    readers: dict[str, Callable[[dict[str, Any], Terminology], Any]] = {
        "mrc-grade": grade, "force": force, "angle": angle, "boolean": boolean, "pain-score": pain_score,
        "body-site": body_site, "temperature": temperature}
    return readers[binding.value](resource, t)


def grade(resource: dict[str, Any], t: Terminology) -> tuple[str, int]:
    grades = ", ".join(t.mrc_grades)
    if "valueCodeableConcept" in resource:
        path = "Observation.valueCodeableConcept"
        graded = [c for s, c in codings(resource["valueCodeableConcept"]) if s == t.mrc_grade_system]
        raw = graded[0] if graded else None
    elif "valueString" in resource:
        path, raw = "Observation.valueString", str(resource["valueString"]).strip().replace("/5", "")
    elif "valueInteger" in resource:
        path, raw = "Observation.valueInteger", str(resource["valueInteger"])
    else:
        raise Reject(path="Observation.value[x]", code=IssueCode.no_value,
                     message=f"no MRC grade recorded (expected one of {grades})")
    rank = t.grade_rank(raw or "")
    if raw is None or rank is None:
        raise Reject(path=path, code=IssueCode.invalid_value,
                     message=f"{raw!r} is not an MRC grade (expected one of {grades})")
    return raw, rank


def quantity(resource: dict[str, Any], what: str) -> tuple[float, str]:
    value = resource.get("valueQuantity")
    if not isinstance(value, dict) or value.get("value") is None:
        raise Reject(path="Observation.valueQuantity", code=IssueCode.no_value, message=f"no {what} recorded")
    if isinstance(value["value"], bool) or not isinstance(value["value"], int | float):
        raise Reject(path="Observation.valueQuantity.value", code=IssueCode.invalid_value,
                     message=f"the {what} is not a number")
    unit = str(value.get("code") or value.get("unit") or "")
    if value.get("system") not in (None, UCUM):
        raise Reject(path="Observation.valueQuantity.system", code=IssueCode.invalid_unit,
                     message=f"unit system must be UCUM ({UCUM})")
    return float(value["value"]), unit


def force(resource: dict[str, Any], t: Terminology) -> float:
    value, unit = quantity(resource, "force")
    if unit in t.mass_units:
        raise Reject(path="Observation.valueQuantity.code", code=IssueCode.invalid_unit,
                     message=f"{unit!r} is a unit of mass; dynamometer force must be N, kgf or [lbf_av]")
    factor = t.force_units.get(unit)
    if factor is None:
        raise Reject(path="Observation.valueQuantity.code", code=IssueCode.invalid_unit,
                     message=f"unit {unit!r} is not a force unit (N, kgf, [lbf_av])")
    newtons = round(value * factor, 2)
    limits = t.plausible.force
    if not limits.holds(newtons):
        raise Reject(path="Observation.valueQuantity.value", code=IssueCode.out_of_range,
                     message=f"{newtons:g} N is outside the plausible range ({limits.describe('N')})")
    return newtons


def angle(resource: dict[str, Any], t: Terminology) -> float:
    value, unit = quantity(resource, "angle")
    if unit != t.angle_unit:
        raise Reject(path="Observation.valueQuantity.code", code=IssueCode.invalid_unit,
                     message=f"angle unit must be {t.angle_unit!r}, not {unit!r}")
    limits = t.plausible.angle
    if not limits.holds(value):
        raise Reject(path="Observation.valueQuantity.value", code=IssueCode.out_of_range,
                     message=f"{value:g}° is outside {limits.describe('°')} "
                             "(degrees beyond neutral, positive = hyperextension)")
    return round(value, 2)


def boolean(resource: dict[str, Any], _t: Terminology) -> bool:
    if not isinstance(resource.get("valueBoolean"), bool):
        raise Reject(path="Observation.valueBoolean", code=IssueCode.no_value,
                     message="expected a yes/no value (valueBoolean)")
    return bool(resource["valueBoolean"])


def pain_score(resource: dict[str, Any], t: Terminology) -> int:
    if "valueInteger" in resource:
        path, raw = "Observation.valueInteger", resource["valueInteger"]
    elif isinstance(resource.get("valueQuantity"), dict):
        path, raw = "Observation.valueQuantity.value", resource["valueQuantity"].get("value")
    else:
        raise Reject(path="Observation.value[x]", code=IssueCode.no_value, message="no pain score recorded")
    limits = t.plausible.pain_score
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != int(raw) or not limits.holds(raw):
        raise Reject(path=path, code=IssueCode.out_of_range,
                     message=f"pain score {raw} is not a whole number in {limits.describe('')}")
    return int(raw)


def body_site(resource: dict[str, Any], t: Terminology) -> str:
    for key in codings(resource.get("valueCodeableConcept")):
        site = t.site_by_code.get(key)
        if site is not None:
            return site.site
    raise Reject(path="Observation.valueCodeableConcept", code=IssueCode.unknown_site,
                 message="pain location is not a recognised body site")


def temperature(resource: dict[str, Any], t: Terminology) -> float:
    """Body temperature in degrees Celsius (UCUM Cel or [degF]); implausible values are refused."""
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, dict):
        raise Reject(path="Observation.valueQuantity", code=IssueCode.no_value, message="no temperature recorded")
    raw, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Reject(path="Observation.valueQuantity.value", code=IssueCode.invalid_value,
                     message="the temperature is not a number")
    conversion = t.temperature_units.get(str(unit))
    if conversion is None:
        raise Reject(path="Observation.valueQuantity.code", code=IssueCode.invalid_unit,
                     message=f"temperature unit is not one of {', '.join(t.temperature_units)}")
    celsius = raw * conversion[0] + conversion[1]
    if not 25 <= celsius <= 45:
        raise Reject(path="Observation.valueQuantity.value", code=IssueCode.out_of_range,
                     message="temperature outside 25 to 45 °C")
    return round(celsius, 1)


def years_between(born: dt.date, day: dt.date) -> int:
    """Whole years from a birth date to a day (an age; negative when born after it)."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
