"""This project's profile checks, one method per resource type: what makes a resource usable.

fhir.resources accepts `status: "bogus"` and an empty `code`; these checks do not. A usable
Observation becomes a `Reading` (assembled into facts later); a Condition, Procedure or
ServiceRequest that matters becomes a fact at once; anything unusable becomes a data issue
naming resource, element, severity and a plain reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cds.clinical.assemble import Reading
from cds.clinical.chart import CURRENT_CLINICAL, NEVER_VERIFIED, ChartCheck
from cds.clinical.context import Context, Validated
from cds.clinical.fhirvalues import (
    CodesOf,
    Reject,
    codings,
    effective,
    laterality,
    observation_value,
    to_date,
    years_between,
)
from cds.content.facts import (
    AgeFact,
    AudienceFact,
    DataIssue,
    IssueCode,
    KneeConditionFact,
    ReferralFact,
    RejectedInputFact,
    UnsidedPainSiteFact,
)
from cds.content.terminology import ObservationBinding, Side, Terminology

USABLE_STATUS = {"final", "amended", "corrected"}
USER_ROLES = {"Practitioner": "practitioner", "PractitionerRole": "practitioner-role",
              "Patient": "patient", "RelatedPerson": "related-person"}


class Profiles:
    """The checks of one validation run; findings go to `out`, observation values to `readings`."""

    def __init__(self, terminology: Terminology, context: Context, out: Validated,
                 codes_of: CodesOf | None = None) -> None:
        self.t, self.ctx, self.out = terminology, context, out
        self.codes_of = codes_of or CodesOf()
        self.readings: list[Reading] = []
        self.patients: list[dict[str, Any]] = []
        self.chart = ChartCheck(terminology, context, out, self.codes_of)

    def check(self, resource: dict[str, Any]) -> None:
        handler = _HANDLERS.get(resource["resourceType"])
        if handler is not None:
            handler(self, resource)

    # ---- Patient and user --------------------------------------------------------------------------
    def patient(self, resource: dict[str, Any]) -> None:
        ref = f"Patient/{resource.get('id')}"
        if any(seen == resource for seen in self.patients):
            return  # the same Patient again (a search that _include-s it): nothing new
        if any(seen.get("id") == resource.get("id") for seen in self.patients):
            self.out.issues.append(DataIssue(resource=ref, path="Patient", severity="error",
                                             code=IssueCode.conflicting_patient,
                                             message="the same Patient was sent twice with different contents: "
                                                     "neither copy is used"))
            self.out.facts[:] = [f for f in self.out.facts if f.kind != "age"]
            return
        self.patients.append(resource)
        if self.out.patient_id is None:
            self.out.patient_id = resource.get("id")
        elif resource.get("id") != self.out.patient_id:
            self.out.issues.append(DataIssue(resource=ref, path="Patient.id", severity="error",
                                             code=IssueCode.wrong_patient,
                                             message="a different patient than the one in context "
                                                     f"(Patient/{self.out.patient_id})"))
            return
        birth = to_date(resource.get("birthDate"))
        if birth is None:
            self.out.issues.append(DataIssue(resource=ref, path="Patient.birthDate", severity="warning",
                                             code=IssueCode.missing,
                                             message="no birth date: age unknown, so no exercise suggestions can "
                                                     "be made"))
            return
        years = years_between(birth, self.ctx.today)
        if years < 0:
            self.out.issues.append(DataIssue(resource=ref, path="Patient.birthDate", severity="error",
                                             code=IssueCode.future_date, message="birth date is in the future"))
            return
        self.out.facts.append(AgeFact(id="age", source=ref, years=years))

    def knee_records(self) -> None:
        """The chart's classification as facts: records to check, what was read, what could not be."""
        self.chart.finish()

    def audience(self) -> None:
        if not self.ctx.user_id:
            return
        role = USER_ROLES.get(self.ctx.user_id.split("/", 1)[0], "other")
        self.out.facts.append(AudienceFact(id="audience", source=self.ctx.user_id, role=role))

    # ---- shared checks -----------------------------------------------------------------------------
    def _subject_ok(self, resource: dict[str, Any], ref: str, field_name: str = "subject") -> bool:
        rtype = resource["resourceType"]
        holder = resource.get(field_name)
        subject = holder.get("reference") if isinstance(holder, dict) else None
        expected = f"Patient/{self.out.patient_id}"
        if not isinstance(subject, str) or not subject:
            self.out.issues.append(DataIssue(resource=ref, path=f"{rtype}.{field_name}", severity="error",
                                             code=IssueCode.no_subject, message="no subject: whose data is this?"))
            return False
        if subject == expected:
            return True  # as nearly every record says it; otherwise a full URL or a version may follow
        if self.out.patient_id and subject.split("/_history")[0].rsplit("/", 2)[-2:] != expected.split("/"):
            self.out.issues.append(DataIssue(resource=ref, path=f"{rtype}.{field_name}", severity="error",
                                             code=IssueCode.wrong_patient,
                                             message=f"subject {subject} is not the patient in context ({expected})"))
            return False
        return True

    def _date_ok(self, ref: str, path: str, when: dt.date | None, *, window: int | None) -> bool:
        if when is None:
            self.out.issues.append(DataIssue(resource=ref, path=path, severity="error", code=IssueCode.no_date,
                                             message="no usable date: cannot tell how recent it is"))
            return False
        if when > self.ctx.today:
            self.out.issues.append(DataIssue(resource=ref, path=path, severity="error", code=IssueCode.future_date,
                                             message=f"dated {when.isoformat()}, in the future"))
            return False
        if window is not None and (self.ctx.today - when).days > window:
            self.out.issues.append(DataIssue(resource=ref, path=path, severity="warning", code=IssueCode.stale,
                                             message=f"dated {when.isoformat()}, older than {window} days: not used"))
            return False
        return True

    def _side(self, resource: dict[str, Any], ref: str) -> Side | None:
        side, legacy = laterality(resource, self.t)
        if legacy is not None:
            self.out.issues.append(DataIssue(resource=ref, path=legacy, severity="warning", code=IssueCode.legacy_code,
                                             message="laterality uses an inactive SNOMED code (419161000/419465000); "
                                                     "read as left/right, please use 7771000/24028007"))
        return side

    # ---- Observation -------------------------------------------------------------------------------
    def observation(self, resource: dict[str, Any]) -> None:
        ref = f"Observation/{resource.get('id')}"
        if resource.get("status") == "entered-in-error":
            self.out.issues.append(DataIssue(resource=ref, path="Observation.status", severity="information",
                                             code=IssueCode.entered_in_error, message="entered in error: ignored"))
            return
        binding = self._binding(resource, ref)
        if binding is None:
            codes = self.codes_of(resource)
            if not codes:
                self._status_ok(resource, ref)  # say everything that is wrong with it
            elif self.t.unsupported_by_code.keys().isdisjoint(codes) and self._subject_ok(resource, ref):
                self.chart.observation(resource, ref)
            return
        if not self._status_ok(resource, ref) or not self._subject_ok(resource, ref):
            return
        path, when = effective(resource, "effective")
        if not self._date_ok(ref, f"Observation.{path}", when, window=self.ctx.lookback_days) or when is None:
            return
        try:
            side = self._side(resource, ref)
            if binding.lateralised and side is None and binding.kind != "pain-location":
                raise Reject(path="Observation.bodySite", code=IssueCode.no_side,
                             message=f"{binding.display}: no side (left/right) recorded")
            value = observation_value(resource, binding, self.t)
        except Reject as exc:
            self.out.issues.append(exc.issue(ref))
            self.out.facts.append(RejectedInputFact(id=f"rejected:{ref}", source=ref, input=binding.kind))
            return
        issued = str(resource.get("issued", ""))
        self.readings.append(Reading(binding.kind, side, when, issued, ref, value))
        if binding.kind == "pain-severity":
            self._pain_site_from_body_site(resource, ref, side, when, issued, value)

    def _binding(self, resource: dict[str, Any], ref: str) -> ObservationBinding | None:
        codes = self.codes_of(resource)
        if not codes:
            self.out.issues.append(DataIssue(resource=ref, path="Observation.code", severity="error",
                                             code=IssueCode.no_code,
                                             message="code has no coding: cannot tell what was measured"))
            return None
        for key in codes:
            binding = self.t.observation_by_code.get(key)
            if binding is not None:
                return binding
        for key in codes:
            if key in self.t.unsupported_by_code:
                self.out.issues.append(DataIssue(resource=ref, path="Observation.code", severity="warning",
                                                 code=IssueCode.unsupported_code,
                                                 message=self.t.unsupported_by_code[key]))
                return None
        return None

    def _status_ok(self, resource: dict[str, Any], ref: str) -> bool:
        status = resource.get("status")
        if status in USABLE_STATUS:
            return True
        if status == "preliminary":
            self.out.issues.append(DataIssue(resource=ref, path="Observation.status", severity="warning",
                                             code=IssueCode.preliminary,
                                             message="preliminary result: not used until final"))
        else:
            self.out.issues.append(DataIssue(resource=ref, path="Observation.status", severity="error",
                                             code=IssueCode.invalid_status,
                                             message=f"status {status!r} is not a usable observation status "
                                                     "(final, amended, corrected)"))
        return False

    def _pain_site_from_body_site(self, resource: dict[str, Any], ref: str, side: Side | None,
                                  when: dt.date, issued: str, score: int) -> None:
        """A pain score with a body site also says where it hurts, when it says it hurts at all."""
        sites = [self.t.site_by_code[k] for k in codings(resource.get("bodySite")) if k in self.t.site_by_code]
        if not sites:
            return
        if score < self.t.current_pain_from:
            self.out.issues.append(DataIssue(resource=ref, path="Observation.valueInteger", severity="information",
                                             code=IssueCode.no_current_pain,
                                             message=f"pain {score}/10 at the {sites[0].site.replace('-', ' ')}: below "
                                                     f"{self.t.current_pain_from}/10, not counted as current pain"))
            return
        self.readings.append(Reading("pain-location", side, when, issued, ref, sites[0].site))

    # ---- Condition / Procedure / ServiceRequest ----------------------------------------------------
    def condition(self, resource: dict[str, Any]) -> None:
        ref = f"Condition/{resource.get('id')}"
        if not self._subject_ok(resource, ref):
            return
        self.chart.condition(resource, ref)
        clinical = {c for _, c in codings(resource.get("clinicalStatus"))}
        verification = {c for _, c in codings(resource.get("verificationStatus"))}
        if verification & NEVER_VERIFIED or (clinical and not clinical & CURRENT_CLINICAL):
            return
        for system, code in codings(resource.get("code")):
            pfp = self.t.patellofemoral_by_code.get((system, code))
            if pfp is not None:
                self._knee_condition(resource, ref, pfp.side, (system, code))

    def _knee_condition(self, resource: dict[str, Any], ref: str, side_rule: str, code: tuple[str, str]) -> None:
        """A patellofemoral pain diagnosis on its side (from the code, else the body site); without a readable
        side it still says there is anterior knee pain, so that no card says none is recorded."""
        when = effective(resource, "onset")[1] or to_date(resource.get("recordedDate"))
        try:
            side = self._side(resource, ref) if side_rule == "from-body-site" else side_rule
        except Reject as exc:
            self.out.issues.append(exc.issue(ref))
            return
        side = side or self.t.side_in_code(*code)
        if side is None:
            self.out.issues.append(DataIssue(resource=ref, path="Condition.bodySite", severity="warning",
                                             code=IssueCode.no_side,
                                             message="patellofemoral pain recorded without a side: not used for "
                                                     "side-specific rules"))
            self.out.facts.append(UnsidedPainSiteFact(id=f"pain-site-unsided:{ref}", source=ref, date=when,
                                                      site="patellofemoral-joint"))
            return
        for one in ("left", "right") if side == "bilateral" else (side,):
            self.out.facts.append(KneeConditionFact(id=f"knee-condition:{ref}:{one}", source=ref, date=when,
                                                    side=one, condition="patellofemoral-pain"))

    def procedure(self, resource: dict[str, Any]) -> None:
        ref = f"Procedure/{resource.get('id')}"
        if self._subject_ok(resource, ref):
            self.chart.procedure(resource, ref)

    def medicine(self, resource: dict[str, Any]) -> None:
        ref = f"{resource['resourceType']}/{resource.get('id')}"
        if self._subject_ok(resource, ref):
            self.chart.medicine(resource, ref)

    def service_request(self, resource: dict[str, Any]) -> None:
        ref = f"ServiceRequest/{resource.get('id')}"
        being_ordered = resource.get("status") == "draft" and str(resource.get("id")) in self.ctx.selected_orders
        if (resource.get("status") != "active" and not being_ordered) or not self._subject_ok(resource, ref):
            return
        if set(codings(resource.get("code"))) & self.t.physiotherapy_codes:
            self.out.facts.append(ReferralFact(id=f"referral:{ref}", source=ref,
                                               date=to_date(resource.get("authoredOn"))))


# by resource type, as plain functions: a dict of bound methods on the instance would be a reference cycle, and
# every validation's whole chart would then wait for the garbage collector instead of being freed at once
_HANDLERS: dict[str, Callable[[Profiles, dict[str, Any]], None]] = {
    "Observation": Profiles.observation, "Condition": Profiles.condition, "Procedure": Profiles.procedure,
    "ServiceRequest": Profiles.service_request, "MedicationRequest": Profiles.medicine,
    "MedicationStatement": Profiles.medicine}
