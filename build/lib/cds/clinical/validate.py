"""Validate FHIR R4 resources and turn them into facts plus data issues.

Structure is checked by fhir.resources (R4B, identical to R4 for these resources); meaning by
this project's profile checks, because fhir.resources alone accepts `status: "bogus"` and an
empty `code`. Nothing invalid becomes a fact: it becomes a DataIssue naming resource, element
path, severity and a plain reason, and the rules then see the data as missing.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds.content.facts import (
    AgeFact,
    AudienceFact,
    DataIssue,
    GaitFact,
    HhdAsymmetryFact,
    HhdFact,
    HyperextensionFact,
    InputFact,
    KneeConditionFact,
    MmtFact,
    PainScoreFact,
    PainSiteFact,
    RedFlagFact,
    ReferralFact,
    RejectedInputFact,
)
from cds.content.terminology import ObservationBinding, Side, Terminology

SUPPORTED = ("Patient", "Observation", "Condition", "Procedure", "ServiceRequest")
USABLE_STATUS = {"final", "amended", "corrected"}
LATERALITY_ATTRIBUTE = ("http://snomed.info/sct", "272741003")
UCUM = "http://unitsofmeasure.org"
MASS_UNITS = {"kg", "g", "lb", "[lb_av]", "[oz_av]"}
USER_ROLES = {"Practitioner": "practitioner", "PractitionerRole": "practitioner-role",
              "Patient": "patient", "RelatedPerson": "related-person"}


@dataclass(frozen=True)
class Context:
    """What validation needs to know about the call: whose data, as of when, for whom."""

    today: dt.date
    patient_id: str | None = None
    user_id: str | None = None
    lookback_days: int = 90
    selected_orders: frozenset[str] = frozenset()  # ServiceRequest ids being ordered now (order-select)


@dataclass
class Validated:
    facts: list[InputFact] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    patient_id: str | None = None

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


class _Reject(Exception):
    """A resource (or one value of it) cannot be used; carries the issue to report."""

    def __init__(self, path: str, code: str, message: str, severity: str = "error") -> None:
        super().__init__(message)
        self.path, self.code, self.message, self.severity = path, code, message, severity


@dataclass
class _Reading:
    """One usable observation value before duplicates are resolved."""

    kind: str
    side: Side | None
    date: dt.date
    issued: str
    ref: str
    value: Any
    extra: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def structure_errors(canonical: str) -> tuple[tuple[str, str], ...]:
    """fhir.resources' verdict on one resource (canonical JSON), as (element path, message) pairs.

    Cached by content: the same patient's resources come back with every hook of a visit (patient-view,
    encounter-start, order-select, re-opened charts), and this check is most of a call's cost. The cache
    lives in process memory only and is bounded; a changed resource is a different key.
    """
    resource = json.loads(canonical)
    rtype = resource["resourceType"]
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        return tuple((".".join(str(p) for p in (rtype, *e["loc"]) if not str(p).startswith("function")), e["msg"])
                     for e in exc.errors()[:3])
    return ()


def codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [(str(c.get("system", "")), str(c.get("code", ""))) for c in concept.get("coding") or []]


def _to_date(value: Any) -> dt.date | None:
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


def _effective(resource: dict[str, Any], prefix: str) -> tuple[str, dt.date | None]:
    for name in (f"{prefix}DateTime", f"{prefix}Instant"):
        if name in resource:
            return name, _to_date(resource[name])
    period = resource.get(f"{prefix}Period")
    if isinstance(period, dict):
        return f"{prefix}Period", _to_date(period.get("end") or period.get("start"))
    return f"{prefix}[x]", None


class _Validator:
    def __init__(self, terminology: Terminology, context: Context) -> None:
        self.t, self.ctx = terminology, context
        self.out = Validated(patient_id=context.patient_id)
        self.readings: list[_Reading] = []

    # ---- reporting ----------------------------------------------------------------------
    def issue(self, ref: str, path: str, severity: str, code: str, message: str) -> None:
        self.out.issues.append(DataIssue(resource=ref, path=path, severity=severity,
                                         code=code, message=message))

    # ---- entry point --------------------------------------------------------------------
    def run(self, resources: Iterable[Any]) -> Validated:
        parsed = [r for r in (self._parse(i, r) for i, r in enumerate(resources)) if r]
        for resource in (r for r in parsed if r["resourceType"] == "Patient"):
            self._patient(resource)
        if self.out.patient_id is None:
            self.issue("Bundle", "Bundle.entry", "error", "no-patient",
                       "no patient in context and no Patient resource: cannot tell whose data this is")
        handlers = {"Observation": self._observation, "Condition": self._condition,
                    "Procedure": self._procedure, "ServiceRequest": self._servicerequest}
        for resource in parsed:
            handler = handlers.get(resource["resourceType"])
            if handler is not None:
                handler(resource)
        self._resolve_readings()
        self._audience()
        return self.out

    def _parse(self, index: int, resource: Any) -> dict[str, Any] | None:
        where = f"entry[{index}]"
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self.issue(where, f"Bundle.{where}.resource", "error", "not-fhir",
                       "not a FHIR resource (no resourceType)")
            return None
        rtype = resource["resourceType"]
        ref = f"{rtype}/{resource.get('id', where)}"
        if rtype == "OperationOutcome":
            self.issue(ref, rtype, "warning", "source-error",
                       "the data source sent an OperationOutcome instead of data")
            return None
        if rtype not in SUPPORTED:
            self.issue(ref, rtype, "information", "not-used",
                       f"{rtype} resources are not used by these rules")
            return None
        if not self._may_be_used(resource):
            return resource  # its handler reports it as unrelated; its structure cannot matter
        errors = structure_errors(json.dumps(resource, sort_keys=True, separators=(",", ":")))
        for path, message in errors:
            self.issue(ref, path, "error", "structure", f"not valid FHIR R4: {message}")
        if errors:
            return None
        if not resource.get("id"):
            self.issue(ref, f"{rtype}.id", "warning", "no-id", "resource has no id")
        return resource

    def _may_be_used(self, resource: dict[str, Any]) -> bool:
        """Whether a resource carries a code the rules read. The structure check (fhir.resources, about
        0.5 ms a resource) runs only on those: a chart's vital signs and labs are recognised and skipped."""
        rtype = resource["resourceType"]
        if rtype == "Observation":
            codes = codings(resource.get("code"))
            return not codes or any(k in self.t.observation_by_code or k in self.t.unsupported_by_code
                                    for k in codes)
        if rtype == "Condition":
            return any(k in self.t.red_flag_by_code or k in self.t.patellofemoral_by_code
                       for k in codings(resource.get("code")))
        if rtype == "ServiceRequest":
            return bool(set(codings(resource.get("code"))) & self.t.physiotherapy_codes)
        return True

    # ---- Patient ------------------------------------------------------------------------
    def _patient(self, resource: dict[str, Any]) -> None:
        ref = f"Patient/{resource.get('id')}"
        if self.out.patient_id is None:
            self.out.patient_id = resource.get("id")
        elif resource.get("id") != self.out.patient_id:
            self.issue(ref, "Patient.id", "error", "wrong-patient",
                       f"a different patient than the one in context (Patient/{self.out.patient_id})")
            return
        birth = _to_date(resource.get("birthDate"))
        if birth is None:
            self.issue(ref, "Patient.birthDate", "warning", "missing",
                       "no birth date: age unknown, so no exercise suggestions can be made")
            return
        today = self.ctx.today
        years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        if years < 0:
            self.issue(ref, "Patient.birthDate", "error", "future-date", "birth date is in the future")
            return
        self.out.facts.append(AgeFact(id="age", source=ref, years=years))

    def _audience(self) -> None:
        if not self.ctx.user_id:
            return
        role = USER_ROLES.get(self.ctx.user_id.split("/", 1)[0], "other")
        self.out.facts.append(AudienceFact(id="audience", source=self.ctx.user_id, role=role))

    # ---- shared checks ------------------------------------------------------------------
    def _subject_ok(self, resource: dict[str, Any], ref: str, field_name: str = "subject") -> bool:
        rtype = resource["resourceType"]
        subject = (resource.get(field_name) or {}).get("reference")
        expected = f"Patient/{self.out.patient_id}"
        if not subject:
            self.issue(ref, f"{rtype}.{field_name}", "error", "no-subject", "no subject: whose data is this?")
            return False
        if self.out.patient_id and subject.split("/_history")[0].rsplit("/", 2)[-2:] != expected.split("/"):
            self.issue(ref, f"{rtype}.{field_name}", "error", "wrong-patient",
                       f"subject {subject} is not the patient in context ({expected})")
            return False
        return True

    def _date_ok(self, ref: str, path: str, when: dt.date | None, *, window: int | None) -> bool:
        if when is None:
            self.issue(ref, path, "error", "no-date", "no usable date: cannot tell how recent it is")
            return False
        if when > self.ctx.today:
            self.issue(ref, path, "error", "future-date", f"dated {when.isoformat()}, in the future")
            return False
        if window is not None and (self.ctx.today - when).days > window:
            self.issue(ref, path, "warning", "stale",
                       f"dated {when.isoformat()}, older than {window} days: not used")
            return False
        return True

    def _side(self, resource: dict[str, Any], ref: str) -> Side | None:
        """Laterality from a bodySite extension or a 272741003 component (mCODE-style)."""
        rtype = resource["resourceType"]
        site = resource.get("bodySite") or {}
        concepts = [(f"{rtype}.bodySite.extension", ext.get("valueCodeableConcept"))
                    for body_site in (site if isinstance(site, list) else [site])
                    for ext in (body_site or {}).get("extension") or []]
        concepts += [(f"{rtype}.component", comp.get("valueCodeableConcept"))
                     for comp in resource.get("component") or []
                     if LATERALITY_ATTRIBUTE in codings(comp.get("code"))]
        found = [hit for path, concept in concepts for system, code in codings(concept)
                 for hit in self._laterality(system, code, path)]
        legacy = [path for path, _ in found if path.endswith("#legacy")]
        if legacy:
            self.issue(ref, legacy[0].removesuffix("#legacy"), "warning", "legacy-code",
                       "laterality uses an inactive SNOMED code (419161000/419465000); "
                       "read as left/right, please use 7771000/24028007")
        sides = {side for _, side in found}
        if len(sides) > 1:
            raise _Reject(f"{rtype}.bodySite", "conflicting-side", "laterality is given twice, differently")
        return next(iter(sides), None)

    def _laterality(self, system: str, code: str, path: str) -> list[tuple[str, Side]]:
        lat = self.t.laterality
        if system != lat.system:
            return []
        if code in lat.codes:
            return [(path, lat.codes[code])]
        if code in lat.legacy:
            return [(f"{path}#legacy", lat.legacy[code])]
        return []

    # ---- Observation --------------------------------------------------------------------
    def _observation(self, resource: dict[str, Any]) -> None:
        ref = f"Observation/{resource.get('id')}"
        if resource.get("status") == "entered-in-error":
            self.issue(ref, "Observation.status", "information", "entered-in-error", "entered in error: ignored")
            return
        status_ok = self._status_ok(resource, ref)
        binding = self._binding(resource, ref)
        if binding is None or not status_ok or not self._subject_ok(resource, ref):
            return
        path, when = _effective(resource, "effective")
        if not self._date_ok(ref, f"Observation.{path}", when, window=self.ctx.lookback_days):
            return
        assert when is not None
        try:
            side = self._side(resource, ref)
            if binding.lateralised and side is None and binding.kind != "pain-location":
                raise _Reject("Observation.bodySite", "no-side",
                              f"{binding.display}: no side (left/right) recorded")
            value = self._value(resource, binding)
        except _Reject as exc:
            self.issue(ref, exc.path, exc.severity, exc.code, exc.message)
            self.out.facts.append(RejectedInputFact(id=f"rejected:{ref}", source=ref, input=binding.kind))
            return
        issued = str(resource.get("issued", ""))
        self.readings.append(_Reading(binding.kind, side, when, issued, ref, value))
        if binding.kind == "pain-severity":
            self._pain_site_from_body_site(resource, ref, side, when, issued)

    def _binding(self, resource: dict[str, Any], ref: str) -> ObservationBinding | None:
        codes = codings(resource.get("code"))
        if not codes:
            self.issue(ref, "Observation.code", "error", "no-code", "code has no coding: cannot tell what was measured")
            return None
        for system, code in codes:
            binding = self.t.observation_by_code.get((system, code))
            if binding is not None:
                return binding
        for key in codes:
            if key in self.t.unsupported_by_code:
                self.issue(ref, "Observation.code", "warning", "unsupported-code", self.t.unsupported_by_code[key])
                return None
        self.issue(ref, "Observation.code", "information", "not-used",
                   "observation code is not one these rules use")
        return None

    def _status_ok(self, resource: dict[str, Any], ref: str) -> bool:
        status = resource.get("status")
        if status in USABLE_STATUS:
            return True
        if status == "preliminary":
            self.issue(ref, "Observation.status", "warning", "preliminary",
                       "preliminary result: not used until final")
        else:
            self.issue(ref, "Observation.status", "error", "invalid-status",
                       f"status {status!r} is not a usable observation status (final, amended, corrected)")
        return False

    def _value(self, resource: dict[str, Any], binding: ObservationBinding) -> Any:
        reader = {"mrc-grade": self._grade, "force": self._force, "angle": self._angle,
                  "boolean": self._boolean, "pain-score": self._pain_score,
                  "body-site": self._site_value}[binding.value]
        return reader(resource)

    def _grade(self, resource: dict[str, Any]) -> tuple[str, int]:
        grades = ", ".join(self.t.mrc_grades)
        if "valueCodeableConcept" in resource:
            path = "Observation.valueCodeableConcept"
            graded = [c for s, c in codings(resource["valueCodeableConcept"]) if s == self.t.mrc_grade_system]
            raw = graded[0] if graded else None
        elif "valueString" in resource:
            path, raw = "Observation.valueString", str(resource["valueString"]).strip().replace("/5", "")
        elif "valueInteger" in resource:
            path, raw = "Observation.valueInteger", str(resource["valueInteger"])
        else:
            raise _Reject("Observation.value[x]", "no-value", f"no MRC grade recorded (expected one of {grades})")
        rank = self.t.grade_rank(raw or "")
        if raw is None or rank is None:
            raise _Reject(path, "invalid-value", f"{raw!r} is not an MRC grade (expected one of {grades})")
        return raw, rank

    def _quantity(self, resource: dict[str, Any], what: str) -> tuple[float, str]:
        quantity = resource.get("valueQuantity")
        if not isinstance(quantity, dict) or quantity.get("value") is None:
            raise _Reject("Observation.valueQuantity", "no-value", f"no {what} recorded")
        unit = str(quantity.get("code") or quantity.get("unit") or "")
        if quantity.get("system") not in (None, UCUM):
            raise _Reject("Observation.valueQuantity.system", "invalid-unit", f"unit system must be UCUM ({UCUM})")
        return float(quantity["value"]), unit

    def _force(self, resource: dict[str, Any]) -> float:
        value, unit = self._quantity(resource, "force")
        if unit in MASS_UNITS:
            raise _Reject("Observation.valueQuantity.code", "invalid-unit",
                          f"{unit!r} is a unit of mass; dynamometer force must be N, kgf or [lbf_av]")
        factor = self.t.force_units.get(unit)
        if factor is None:
            raise _Reject("Observation.valueQuantity.code", "invalid-unit",
                          f"unit {unit!r} is not a force unit (N, kgf, [lbf_av])")
        newtons = round(value * factor, 2)
        if not 0 < newtons < 1000:
            raise _Reject("Observation.valueQuantity.value", "out-of-range",
                          f"{newtons:g} N is outside the plausible range (above 0, below 1000 N)")
        return newtons

    def _angle(self, resource: dict[str, Any]) -> float:
        value, unit = self._quantity(resource, "angle")
        if unit != self.t.angle_unit:
            raise _Reject("Observation.valueQuantity.code", "invalid-unit",
                          f"angle unit must be {self.t.angle_unit!r}, not {unit!r}")
        if not -5 <= value <= 40:
            raise _Reject("Observation.valueQuantity.value", "out-of-range",
                          f"{value:g}° is outside -5° … 40° (degrees beyond neutral, positive = hyperextension)")
        return round(value, 2)

    def _boolean(self, resource: dict[str, Any]) -> bool:
        if not isinstance(resource.get("valueBoolean"), bool):
            raise _Reject("Observation.valueBoolean", "no-value", "expected a yes/no value (valueBoolean)")
        return bool(resource["valueBoolean"])

    def _pain_score(self, resource: dict[str, Any]) -> int:
        if "valueInteger" in resource:
            path, raw = "Observation.valueInteger", resource["valueInteger"]
        elif isinstance(resource.get("valueQuantity"), dict):
            path, raw = "Observation.valueQuantity.value", resource["valueQuantity"].get("value")
        else:
            raise _Reject("Observation.value[x]", "no-value", "no pain score recorded")
        if not isinstance(raw, int | float) or raw != int(raw) or not 0 <= raw <= 10:
            raise _Reject(path, "out-of-range", f"pain score {raw} is not a whole number from 0 to 10")
        return int(raw)

    def _site_value(self, resource: dict[str, Any]) -> str:
        for key in codings(resource.get("valueCodeableConcept")):
            site = self.t.site_by_code.get(key)
            if site is not None:
                return site.site
        raise _Reject("Observation.valueCodeableConcept", "unknown-site", "pain location is not a recognised body site")

    def _pain_site_from_body_site(self, resource: dict[str, Any], ref: str, side: Side | None,
                                  when: dt.date, issued: str) -> None:
        sites = [self.t.site_by_code[k] for k in codings(resource.get("bodySite")) if k in self.t.site_by_code]
        if not sites:
            return
        if side is None:
            self.issue(ref, "Observation.bodySite", "warning", "no-side",
                       "pain site recorded without a side: not used for side-specific rules")
            return
        self.readings.append(_Reading("pain-location", side, when, issued, ref, sites[0].site))

    # ---- Condition / Procedure / ServiceRequest -----------------------------------------
    def _condition(self, resource: dict[str, Any]) -> None:
        ref = f"Condition/{resource.get('id')}"
        clinical = {c for _, c in codings(resource.get("clinicalStatus"))}
        verification = {c for _, c in codings(resource.get("verificationStatus"))}
        if verification & {"entered-in-error", "refuted"}:
            return
        if not clinical & {"active", "recurrence", "relapse"} or not self._subject_ok(resource, ref):
            return
        codes = codings(resource.get("code"))
        for key in codes:
            flag = self.t.red_flag_by_code.get(key)
            if flag is not None:
                self._red_flag(resource, ref, flag.flag, "onset", flag.window_days)
            pfp = self.t.patellofemoral_by_code.get(key)
            if pfp is not None:
                self._knee_condition(resource, ref, pfp.side)

    def _knee_condition(self, resource: dict[str, Any], ref: str, side_rule: str) -> None:
        try:
            side = self._side(resource, ref) if side_rule == "from-body-site" else side_rule
        except _Reject as exc:
            self.issue(ref, exc.path, "error", exc.code, exc.message)
            return
        if side is None:
            self.issue(ref, "Condition.bodySite", "warning", "no-side",
                       "patellofemoral pain recorded without a side: not used for side-specific rules")
            return
        when = _effective(resource, "onset")[1] or _to_date(resource.get("recordedDate"))
        for one in ("left", "right") if side == "bilateral" else (side,):
            self.out.facts.append(KneeConditionFact(id=f"knee-condition:{ref}:{one}", source=ref, date=when,
                                                    side=one, condition="patellofemoral-pain"))

    def _red_flag(self, resource: dict[str, Any], ref: str, flag: str, prefix: str,
                  window: int | None) -> None:
        path, when = _effective(resource, prefix)
        when = when or _to_date(resource.get("recordedDate"))
        rtype = resource["resourceType"]
        if when is not None and window is not None and (self.ctx.today - when).days > window:
            return
        if when is None and window is not None:
            self.issue(ref, f"{rtype}.{path}", "warning", "no-date",
                       "red flag without a date: treated as recent, to be safe")
        display = self.t.red_flag_by_name[flag].display
        ident = f"red-flag:{ref}:{flag}"
        if all(f.id != ident for f in self.out.facts):
            self.out.facts.append(RedFlagFact(id=ident, source=ref, date=when, flag=flag, display=display))

    def _procedure(self, resource: dict[str, Any]) -> None:
        ref = f"Procedure/{resource.get('id')}"
        if resource.get("status") not in ("completed", "in-progress") or not self._subject_ok(resource, ref):
            return
        sites = {k for site in resource.get("bodySite") or [] for k in codings(site)}
        if sites & self.t.knee_structure_codes:
            window = self.t.red_flag_by_name["recent-knee-surgery"].window_days
            self._red_flag(resource, ref, "recent-knee-surgery", "performed", window)

    def _servicerequest(self, resource: dict[str, Any]) -> None:
        ref = f"ServiceRequest/{resource.get('id')}"
        being_ordered = resource.get("status") == "draft" and resource.get("id") in self.ctx.selected_orders
        if (resource.get("status") != "active" and not being_ordered) or not self._subject_ok(resource, ref):
            return
        if set(codings(resource.get("code"))) & self.t.physiotherapy_codes:
            self.out.facts.append(ReferralFact(id=f"referral:{ref}", source=ref,
                                               date=_to_date(resource.get("authoredOn"))))

    # ---- duplicates, bilateral readings, asymmetry --------------------------------------
    def _resolve_readings(self) -> None:
        """Keep the latest reading per input and side; same time, different value = conflict."""
        expanded: list[_Reading] = []
        for r in self.readings:
            sides = ("left", "right") if r.side == "bilateral" else (r.side,)
            if r.side == "bilateral" and r.kind == "end-range-hhd":
                self.issue(r.ref, "Observation.bodySite", "error", "no-side",
                           "dynamometer force must be recorded for each side separately")
                continue
            expanded += [_Reading(r.kind, s, r.date, r.issued, r.ref, r.value) for s in sides]  # type: ignore[arg-type]
        latest: dict[tuple[str, Side | None], list[_Reading]] = {}
        for r in expanded:
            latest.setdefault((r.kind, r.side), []).append(r)
        chosen: dict[tuple[str, Side | None], _Reading] = {}
        for key, group in latest.items():
            group.sort(key=lambda r: (r.date, r.issued), reverse=True)
            top = [r for r in group if (r.date, r.issued) == (group[0].date, group[0].issued)]
            if len({repr(r.value) for r in top}) > 1:
                refs = ", ".join(sorted({r.ref for r in top}))
                self.issue(top[0].ref, "Observation.value[x]", "warning", "conflicting-values",
                           f"{key[0]} {key[1] or ''} recorded twice at the same time with different "
                           f"values ({refs}): neither is used")
                continue
            chosen[key] = top[0]
        for reading in chosen.values():
            self._fact(reading)
        self._asymmetry(chosen)

    def _fact(self, r: _Reading) -> None:
        base = {"id": f"{r.kind}:{r.ref}:{r.side or '-'}", "source": r.ref, "date": r.date}
        side = r.side
        fact: InputFact
        if r.kind in ("end-range-mmt", "standard-mmt"):
            fact = MmtFact(**base, kind=r.kind, side=side, grade=r.value[0], grade_rank=r.value[1])
        elif r.kind == "end-range-hhd":
            fact = HhdFact(**base, side=side, newtons=r.value)
        elif r.kind == "knee-hyperextension":
            fact = HyperextensionFact(**base, side=side, degrees=r.value)
        elif r.kind == "knee-hyperextension-gait":
            fact = GaitFact(**base, side=side, observed="yes" if r.value else "no")
        elif r.kind == "pain-severity":
            fact = PainScoreFact(**base, score=r.value)
        else:
            if side is None:
                self.issue(r.ref, "Observation.bodySite", "warning", "no-side",
                           "pain location recorded without a side: not used for side-specific rules")
                return
            fact = PainSiteFact(**base, side=side, site=r.value)
        self.out.facts.append(fact)

    def _asymmetry(self, chosen: dict[tuple[str, Side | None], _Reading]) -> None:
        left, right = chosen.get(("end-range-hhd", "left")), chosen.get(("end-range-hhd", "right"))
        if left is None or right is None:
            one = left or right
            if one is not None:
                self.issue(one.ref, "Observation", "information", "one-side-only",
                           "dynamometer force for one side only: asymmetry needs both sides")
            return
        if left.date != right.date:
            self.issue(right.ref, "Observation.effective[x]", "warning", "different-dates",
                       "left and right dynamometer forces are from different dates: asymmetry not computed")
            return
        weaker, stronger = (left, right) if left.value < right.value else (right, left)
        percent = round((stronger.value - weaker.value) / stronger.value * 100, 2)
        self.out.facts.append(HhdAsymmetryFact(
            id="hhd-asymmetry", source=weaker.ref, date=weaker.date,
            side=weaker.side if percent > 0 else "left", percent=percent))


def validate(resources: Iterable[Any], terminology: Terminology, context: Context) -> Validated:
    """Validate FHIR resources (as parsed JSON) into facts and data issues."""
    return _Validator(terminology, context).run(resources)


def bundle_resources(bundle: dict[str, Any]) -> list[Any]:
    """The resources of a Bundle's entries, in order (entries without a resource are kept as-is)."""
    return [entry.get("resource", entry) if isinstance(entry, dict) else entry
            for entry in bundle.get("entry") or []]
