"""This project's profile checks, one method per resource type: what makes a resource usable.

fhir.resources accepts `status: "bogus"` and an empty `code`; these checks do not. A usable
Observation becomes a `Reading` (assembled into facts later); a Condition, Procedure or
ServiceRequest that matters becomes a fact at once; anything unusable becomes a data issue
naming resource, element, severity and a plain reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cds.clinical.assemble import Reading
from cds.clinical.context import Context, Validated
from cds.clinical.fhirvalues import Reject, codings, effective, laterality, observation_value, to_date
from cds.content.facts import (
    AgeFact,
    AudienceFact,
    KneeConditionFact,
    RedFlagFact,
    ReferralFact,
    RejectedInputFact,
    UnclassifiedKneeRecordsFact,
)
from cds.content.terminology import ObservationBinding, RedFlag, Side, Terminology

USABLE_STATUS = {"final", "amended", "corrected"}
USER_ROLES = {"Practitioner": "practitioner", "PractitionerRole": "practitioner-role",
              "Patient": "patient", "RelatedPerson": "related-person"}


class Profiles:
    """The checks of one validation run; findings go to `out`, observation values to `readings`."""

    def __init__(self, terminology: Terminology, context: Context, out: Validated) -> None:
        self.t, self.ctx, self.out = terminology, context, out
        self.readings: list[Reading] = []
        self.patients: list[dict[str, Any]] = []
        self.unclassified = 0  # knee records neither red flag nor benign

    def check(self, resource: dict[str, Any]) -> None:
        handler = {"Observation": self.observation, "Condition": self.condition, "Procedure": self.procedure,
                   "ServiceRequest": self.service_request}.get(resource["resourceType"])
        if handler is not None:
            handler(resource)

    # ---- Patient and user --------------------------------------------------------------------------
    def patient(self, resource: dict[str, Any]) -> None:
        ref = f"Patient/{resource.get('id')}"
        if any(seen == resource for seen in self.patients):
            return  # the same Patient again (a search that _include-s it): nothing new
        if any(seen.get("id") == resource.get("id") for seen in self.patients):
            self.out.issue(ref, "Patient", "error", "conflicting-patient",
                           "the same Patient was sent twice with different contents: neither copy is used")
            self.out.facts[:] = [f for f in self.out.facts if f.kind != "age"]
            return
        self.patients.append(resource)
        if self.out.patient_id is None:
            self.out.patient_id = resource.get("id")
        elif resource.get("id") != self.out.patient_id:
            self.out.issue(ref, "Patient.id", "error", "wrong-patient",
                           f"a different patient than the one in context (Patient/{self.out.patient_id})")
            return
        birth = to_date(resource.get("birthDate"))
        if birth is None:
            self.out.issue(ref, "Patient.birthDate", "warning", "missing",
                           "no birth date: age unknown, so no exercise suggestions can be made")
            return
        today = self.ctx.today
        years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        if years < 0:
            self.out.issue(ref, "Patient.birthDate", "error", "future-date", "birth date is in the future")
            return
        self.out.facts.append(AgeFact(id="age", source=ref, years=years))

    def knee_records(self) -> None:
        """One fact for the cards: how many knee records could not be classified (none: no fact)."""
        if self.unclassified:
            self.out.facts.append(UnclassifiedKneeRecordsFact(id="unclassified-knee-records", count=self.unclassified))

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
            self.out.issue(ref, f"{rtype}.{field_name}", "error", "no-subject", "no subject: whose data is this?")
            return False
        if self.out.patient_id and subject.split("/_history")[0].rsplit("/", 2)[-2:] != expected.split("/"):
            self.out.issue(ref, f"{rtype}.{field_name}", "error", "wrong-patient",
                           f"subject {subject} is not the patient in context ({expected})")
            return False
        return True

    def _date_ok(self, ref: str, path: str, when: dt.date | None, *, window: int | None) -> bool:
        if when is None:
            self.out.issue(ref, path, "error", "no-date", "no usable date: cannot tell how recent it is")
            return False
        if when > self.ctx.today:
            self.out.issue(ref, path, "error", "future-date", f"dated {when.isoformat()}, in the future")
            return False
        if window is not None and (self.ctx.today - when).days > window:
            self.out.issue(ref, path, "warning", "stale",
                           f"dated {when.isoformat()}, older than {window} days: not used")
            return False
        return True

    def _side(self, resource: dict[str, Any], ref: str) -> Side | None:
        side, legacy = laterality(resource, self.t)
        if legacy is not None:
            self.out.issue(ref, legacy, "warning", "legacy-code",
                           "laterality uses an inactive SNOMED code (419161000/419465000); "
                           "read as left/right, please use 7771000/24028007")
        return side

    # ---- Observation -------------------------------------------------------------------------------
    def observation(self, resource: dict[str, Any]) -> None:
        ref = f"Observation/{resource.get('id')}"
        if resource.get("status") == "entered-in-error":
            self.out.issue(ref, "Observation.status", "information", "entered-in-error", "entered in error: ignored")
            return
        status_ok = self._status_ok(resource, ref)
        binding = self._binding(resource, ref)
        if binding is None or not status_ok or not self._subject_ok(resource, ref):
            return
        path, when = effective(resource, "effective")
        if not self._date_ok(ref, f"Observation.{path}", when, window=self.ctx.lookback_days) or when is None:
            return
        try:
            side = self._side(resource, ref)
            if binding.lateralised and side is None and binding.kind != "pain-location":
                raise Reject("Observation.bodySite", "no-side", f"{binding.display}: no side (left/right) recorded")
            value = observation_value(resource, binding, self.t)
        except Reject as exc:
            self.out.issue(ref, exc.path, exc.severity, exc.code, exc.message)
            self.out.facts.append(RejectedInputFact(id=f"rejected:{ref}", source=ref, input=binding.kind))
            return
        issued = str(resource.get("issued", ""))
        self.readings.append(Reading(binding.kind, side, when, issued, ref, value))
        if binding.kind == "pain-severity":
            self._pain_site_from_body_site(resource, ref, side, when, issued, value)

    def _binding(self, resource: dict[str, Any], ref: str) -> ObservationBinding | None:
        codes = codings(resource.get("code"))
        if not codes:
            self.out.issue(ref, "Observation.code", "error", "no-code",
                           "code has no coding: cannot tell what was measured")
            return None
        for key in codes:
            binding = self.t.observation_by_code.get(key)
            if binding is not None:
                return binding
        for key in codes:
            if key in self.t.unsupported_by_code:
                self.out.issue(ref, "Observation.code", "warning", "unsupported-code", self.t.unsupported_by_code[key])
                return None
        self.out.issue(ref, "Observation.code", "information", "not-used",
                       "observation code is not one these rules use")
        return None

    def _status_ok(self, resource: dict[str, Any], ref: str) -> bool:
        status = resource.get("status")
        if status in USABLE_STATUS:
            return True
        if status == "preliminary":
            self.out.issue(ref, "Observation.status", "warning", "preliminary",
                           "preliminary result: not used until final")
        else:
            self.out.issue(ref, "Observation.status", "error", "invalid-status",
                           f"status {status!r} is not a usable observation status (final, amended, corrected)")
        return False

    def _pain_site_from_body_site(self, resource: dict[str, Any], ref: str, side: Side | None,
                                  when: dt.date, issued: str, score: int) -> None:
        """A pain score with a body site also says where it hurts, when it says it hurts at all."""
        sites = [self.t.site_by_code[k] for k in codings(resource.get("bodySite")) if k in self.t.site_by_code]
        if not sites:
            return
        if score < self.t.current_pain_from:
            self.out.issue(ref, "Observation.valueInteger", "information", "no-current-pain",
                           f"pain {score}/10 at the {sites[0].site.replace('-', ' ')}: below "
                           f"{self.t.current_pain_from}/10, not counted as current pain")
            return
        self.readings.append(Reading("pain-location", side, when, issued, ref, sites[0].site))

    # ---- Condition / Procedure / ServiceRequest ----------------------------------------------------
    def condition(self, resource: dict[str, Any]) -> None:
        ref = f"Condition/{resource.get('id')}"
        clinical = {c for _, c in codings(resource.get("clinicalStatus"))}
        verification = {c for _, c in codings(resource.get("verificationStatus"))}
        if verification & {"entered-in-error", "refuted"}:
            return
        if not clinical & {"active", "recurrence", "relapse"} or not self._subject_ok(resource, ref):
            return
        codes = codings(resource.get("code"))
        classified = False
        for system, code in codes:
            flag = self.t.red_flag(system, code)
            if flag is not None:
                self._red_flag(resource, ref, flag, "onset")
                classified = True
            pfp = self.t.patellofemoral_by_code.get((system, code))
            if pfp is not None:
                self._knee_condition(resource, ref, pfp.side)
            classified = classified or self.t.benign_knee(system, code)
        self._classify(resource, ref, codes, classified)

    def _classify(self, resource: dict[str, Any], ref: str, codes: list[tuple[str, str]], classified: bool) -> None:
        """A record about the knee that is neither a red flag nor known to be benign: ask the clinician to check it,
        so that no card ever says "no red flag" while such a record exists."""
        about_knee = any(self.t.about_knee(s, c) for s, c in codes) or bool(
            {k for site in _listed(resource.get("bodySite")) for k in codings(site)} & self.t.knee_structure_codes)
        if about_knee and not classified:
            shown = ", ".join(c for _, c in codes[:3]) or "no code"
            self.out.issue(ref, f"{resource['resourceType']}.code", "warning", "unclassified-knee-record",
                           f"a knee record ({shown}) that is neither a known red flag nor known to be benign: "
                           "check it before acting on a suggestion")
            self.unclassified += 1

    def _knee_condition(self, resource: dict[str, Any], ref: str, side_rule: str) -> None:
        try:
            side = self._side(resource, ref) if side_rule == "from-body-site" else side_rule
        except Reject as exc:
            self.out.issue(ref, exc.path, "error", exc.code, exc.message)
            return
        if side is None:
            self.out.issue(ref, "Condition.bodySite", "warning", "no-side",
                           "patellofemoral pain recorded without a side: not used for side-specific rules")
            return
        when = effective(resource, "onset")[1] or to_date(resource.get("recordedDate"))
        for one in ("left", "right") if side == "bilateral" else (side,):
            self.out.facts.append(KneeConditionFact(id=f"knee-condition:{ref}:{one}", source=ref, date=when,
                                                    side=one, condition="patellofemoral-pain"))

    def _red_flag(self, resource: dict[str, Any], ref: str, flag: RedFlag, prefix: str) -> None:
        path, when = effective(resource, prefix)
        when = when or to_date(resource.get("recordedDate"))
        rtype = resource["resourceType"]
        window = self.t.window_days(flag)
        if when is not None and window is not None and (self.ctx.today - when).days > window:
            return
        if when is None and window is not None:
            self.out.issue(ref, f"{rtype}.{path}", "warning", "no-date",
                           "red flag without a date: treated as recent, to be safe")
        display = flag.display + (f" (counted within {window} days)" if window else "")
        ident = f"red-flag:{ref}:{flag.flag}"
        if all(f.id != ident for f in self.out.facts):
            self.out.facts.append(RedFlagFact(id=ident, source=ref, date=when, flag=flag.flag, display=display))

    def procedure(self, resource: dict[str, Any]) -> None:
        ref = f"Procedure/{resource.get('id')}"
        if resource.get("status") not in ("completed", "in-progress") or not self._subject_ok(resource, ref):
            return
        codes = codings(resource.get("code"))
        flags = [f for f in (self.t.red_flag(s, c) for s, c in codes) if f is not None]
        sites = {k for site in _listed(resource.get("bodySite")) for k in codings(site)}
        knee = self.t.knee_procedure_flag
        if knee is not None and sites & self.t.knee_structure_codes:
            flags.append(knee)
        for flag in {f.flag: f for f in flags}.values():
            self._red_flag(resource, ref, flag, "performed")
        self._classify(resource, ref, codes, bool(flags) or any(self.t.benign_knee(s, c) for s, c in codes))

    def service_request(self, resource: dict[str, Any]) -> None:
        ref = f"ServiceRequest/{resource.get('id')}"
        being_ordered = resource.get("status") == "draft" and str(resource.get("id")) in self.ctx.selected_orders
        if (resource.get("status") != "active" and not being_ordered) or not self._subject_ok(resource, ref):
            return
        if set(codings(resource.get("code"))) & self.t.physiotherapy_codes:
            self.out.facts.append(ReferralFact(id=f"referral:{ref}", source=ref,
                                               date=to_date(resource.get("authoredOn"))))


def _listed(value: Any) -> list[Any]:
    """A FHIR array element as a list (a lone object or a string where an array belongs counts as nothing)."""
    return value if isinstance(value, list) else []
