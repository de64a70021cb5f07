"""Classify every clinical record of the chart before anything is suggested: default deny.

Each Condition, Procedure, Observation the bindings do not read as a measurement, and medicine is, within its
window, a *red flag*, *compatible* (known not to stand against these suggestions), *unknown* (about the knee, or
not readable at all, and not understood), or *not about the knee*. Lists of codes will always miss some code an
EHR sends, so "about the knee" is read from every signal a record has: its codes' place in the knee ValueSet, a
knee body site (lateralised ones included) and, last, the words of its text and displays. Unknown records hold
back every treatment suggestion and are named on a card; records in code systems the service cannot read are
counted, so that no card claims "no red flag" over them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from cds.clinical.context import Context, Validated
from cds.clinical.fhirvalues import CodesOf, codings, effective, listed, to_date
from cds.clinical.structure import content
from cds.content.facts import (
    AnticoagulationFact,
    DataIssue,
    IssueCode,
    KneeSwellingFact,
    RecordsCheckedFact,
    RedFlagFact,
    UnclassifiedKneeRecordsFact,
    UnreadRecordsFact,
    date_words,
)
from cds.content.terminology import RedFlag, Terminology

Kind = Literal["condition", "procedure", "observation", "medicine"]
CURRENT_CLINICAL = {"active", "recurrence", "relapse"}
RESOLVED_CLINICAL = {"inactive", "remission", "resolved"}
NEVER_VERIFIED = {"entered-in-error", "refuted"}
PROCEDURE_NOT_DONE = {"not-done", "entered-in-error", "preparation"}
OBSERVATION_VOID = {"entered-in-error", "cancelled"}
MEDICINE_CURRENT = {"MedicationRequest": {"active", "on-hold"},
                    "MedicationStatement": {"active", "intended", "on-hold"}}
SHOWN_PER_KIND = 5  # the card names the first few records to check; the data issues have them all
NOTHING_RECORDED = "the record (no conditions, procedures or medicines)"


@dataclass
class ChartCheck:
    """The classification of one chart's records; `finish()` turns it into facts for the rules."""

    t: Terminology
    ctx: Context
    out: Validated
    codes_of: CodesOf = field(default_factory=CodesOf)
    checked: dict[Kind, int] = field(default_factory=lambda: {"condition": 0, "procedure": 0, "observation": 0,
                                                               "medicine": 0})
    to_check: list[str] = field(default_factory=list)
    unread: dict[tuple[Kind, str], int] = field(default_factory=dict)

    # ---- one record per resource type ------------------------------------------------------------------
    def condition(self, resource: dict[str, Any], ref: str) -> None:
        """Refuted and entered-in-error never count; resolved does not; no clinicalStatus (an encounter diagnosis)
        counts within its window."""
        verification = {c for _, c in codings(resource.get("verificationStatus"))}
        clinical = {c for _, c in codings(resource.get("clinicalStatus"))}
        if verification & NEVER_VERIFIED or (clinical & RESOLVED_CLINICAL and not clinical & CURRENT_CLINICAL):
            return
        when = effective(resource, "onset")[1] or to_date(resource.get("recordedDate"))
        self._record(resource, ref, "condition", when, status_given=bool(clinical))

    def procedure(self, resource: dict[str, Any], ref: str) -> None:
        if resource.get("status") in PROCEDURE_NOT_DONE:
            return
        self._record(resource, ref, "procedure", effective(resource, "performed")[1])

    def observation(self, resource: dict[str, Any], ref: str) -> None:
        """An Observation the bindings do not read as a measurement: an examination finding or flowsheet row."""
        if resource.get("status") in OBSERVATION_VOID:
            return
        when = effective(resource, "effective")[1] or to_date(resource.get("issued"))
        if when is not None and (self.ctx.today - when).days > self.ctx.lookback_days:
            return
        self._record(resource, ref, "observation", when)

    def medicine(self, resource: dict[str, Any], ref: str) -> None:
        rtype = resource["resourceType"]
        if resource.get("status") not in MEDICINE_CURRENT[rtype]:
            return
        concept = resource.get("medicationCodeableConcept")
        self.checked["medicine"] += 1
        codes = codings(concept)
        if any(self.t.in_set(self.t.value_sets.anticoagulants, s, c, self.ctx.memberships) for s, c in codes):
            when = to_date(resource.get("authoredOn")) or effective(resource, "effective")[1]
            self.out.facts.append(AnticoagulationFact(id=f"anticoagulation:{ref}", source=ref, date=when))
        elif not any(self.t.code_system(s) for s, _ in codes):
            system = codes[0][0] if codes else "no code"
            self._unread(ref, "medicine", system, f"{rtype}.medication[x]", _words(concept) or "a medicine")

    # ---- classification -------------------------------------------------------------------------------------
    def _record(self, resource: dict[str, Any], ref: str, kind: Kind, when: dt.date | None,
                status_given: bool = True) -> None:
        self.checked[kind] += 1
        known = self.ctx.memberships
        # what a record's codes and body site alone settle is remembered, by their full content; a terminology
        # server's answers for this call (`known`) may settle it otherwise, so then nothing is remembered
        quiet = None if known else quiet_key(kind, resource)
        if quiet is not None and quiet in self.t.quiet_records:
            return
        concept = resource.get("code")
        codes = self.codes_of(resource)
        flags = [f for f in (self.t.red_flag(s, c, known) for s, c in codes) if f is not None]
        sites = [k for site in listed(resource.get("bodySite")) for k in codings(site)]
        knee_site = any(self.t.in_set(self.t.value_sets.knee_sites, s, c, known) for s, c in sites) or bool(
            set(sites) & self.t.knee_structure_codes) or any(self._knee_words(_all_words(s))
                                                              for s in listed(resource.get("bodySite")))
        surgery = self.t.knee_procedure_flag
        if kind == "procedure" and knee_site and surgery is not None:
            flags.append(surgery)
        if kind == "observation" and flags and self._absent(resource):
            return  # an examination that found no effusion, no instability: reassuring, nothing to hold back
        if flags:
            for flag in {f.flag: f for f in flags}.values():
                self._red_flag(resource, ref, flag, when, status_given)
            return
        swelling = kind == "observation" and any(self.t.in_set(self.t.value_sets.knee_swelling, s, c, known)
                                                 for s, c in codes)
        if swelling and not self._absent(resource):
            self.out.facts.append(KneeSwellingFact(id=f"knee-swelling:{ref}", source=ref, date=when))
            return
        if swelling:
            quiet = None  # a swelling code's outcome hangs on its value
        if self._compatible(codes):
            if quiet is not None:
                self.t.remember_quiet(quiet)  # from here on, the codes and body site alone decide
            return
        if not status_given and not self._recent(when, self.t.condition_lookback_days):
            return
        about_knee = knee_site or any(self.t.in_set(self.t.value_sets.knee_related, s, c, known) for s, c in codes) \
            or self._knee_words(_all_words(concept))
        readable = any(self.t.code_system(s) is not None for s, _ in codes)
        rtype = resource["resourceType"]
        if about_knee or (not readable and kind in ("condition", "procedure")):
            self._unknown(resource, ref, rtype, codes, when, readable)
        elif not readable:
            self._unread(ref, kind, codes[0][0] if codes else "no code", f"{rtype}.code", _words(concept))
        elif quiet is not None:
            self.t.remember_quiet(quiet)

    def _compatible(self, codes: list[tuple[str, str]]) -> bool:
        known = self.ctx.memberships
        return any(self.t.in_set(self.t.value_sets.compatible, s, c, known) or (s, c) in self.t.patellofemoral_by_code
                   or (s, c) in self.t.observation_by_code for s, c in codes)

    def _red_flag(self, resource: dict[str, Any], ref: str, flag: RedFlag, when: dt.date | None,
                  status_given: bool) -> None:
        window = self.t.window_days(flag)
        limit = window if window is not None else None if status_given else self.t.condition_lookback_days
        if not self._recent(when, limit):
            return
        if when is None and (window is not None or not status_given):
            self.out.issues.append(DataIssue(resource=ref, path=f"{resource['resourceType']}.date", severity="warning",
                                             code=IssueCode.no_date,
                                             message="red flag without a date: treated as recent, to be safe"))
        display = flag.display + (f" (counted within {window} days)" if window else "")
        ident = f"red-flag:{ref}:{flag.flag}"
        if all(f.id != ident for f in self.out.facts):
            self.out.facts.append(RedFlagFact(id=ident, source=ref, date=when, flag=flag.flag, display=display))

    def _recent(self, when: dt.date | None, days: int | None) -> bool:
        """Within `days` (None: no limit); a record without a date counts, to be safe."""
        return when is None or days is None or (self.ctx.today - when).days <= days

    def _unknown(self, resource: dict[str, Any], ref: str, rtype: str, codes: list[tuple[str, str]],
                 when: dt.date | None, readable: bool) -> None:
        words = _words(resource.get("code")) or "no text"
        coded = ", ".join(f"{self.t.system_name(s)} {c}" for s, c in codes[:2]) or "no code"
        dated = date_words(when) if when else "no date"
        described = f"{rtype} “{words}” ({coded}; {dated})"
        why = "about the knee, but these rules cannot tell whether it stands against exercise" if readable else \
            "in a code system these rules cannot read"
        self.out.issues.append(DataIssue(resource=ref, path=f"{rtype}.code", severity="warning",
                                         code=(IssueCode.unknown_knee_record if readable
                                               else IssueCode.unreadable_record),
                                         message=f"{described}: {why}; check it before acting on any suggestion"))
        self.to_check.append(described)

    def _unread(self, ref: str, kind: Kind, system: str, path: str, words: str) -> None:
        self.unread[(kind, system)] = self.unread.get((kind, system), 0) + 1
        self.out.issues.append(DataIssue(resource=ref, path=path, severity="information",
                                         code=IssueCode.unreadable_record,
                                         message=f"“{words or 'no text'}” is coded in {system}, which these rules "
                                                 "cannot read: not checked for red flags"))

    def _knee_words(self, text: str) -> bool:
        return bool(text) and self.t.knee_words_pattern.search(text) is not None

    def _absent(self, resource: dict[str, Any]) -> bool:
        """Whether an examination finding says 'not present' (a missing or unclear value counts as present)."""
        if resource.get("valueBoolean") is False:
            return True
        concept = resource.get("valueCodeableConcept")
        absent_codes = {(self.t.system(c.system), c.code) for c in self.t.absent.codes}
        if set(codings(concept)) & absent_codes:
            return True
        text = resource.get("valueString") if isinstance(resource.get("valueString"), str) else _words(concept)
        return isinstance(text, str) and text.strip().lower() in self.t.absent.words

    # ---- facts ------------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """What the rules and the cards need: the records to check, what was read and what could not be."""
        if self.to_check:
            shown = "; ".join(self.to_check[:SHOWN_PER_KIND])
            more = len(self.to_check) - SHOWN_PER_KIND
            self.out.facts.append(UnclassifiedKneeRecordsFact(
                id="unclassified-knee-records", count=len(self.to_check),
                display=shown + (f"; and {more} more (see the data issues)" if more > 0 else "")))
        total = sum(self.checked.values())
        self.out.facts.append(RecordsCheckedFact(id="records-checked", records=total,
                                                 display=_counted(self.checked) or NOTHING_RECORDED))
        if self.unread:
            words = [f"{_plural(n, kind)} in {system}" for (kind, system), n in sorted(self.unread.items())]
            self.out.facts.append(UnreadRecordsFact(id="unread-records", count=sum(self.unread.values()),
                                                    display=", ".join(words)))


def quiet_key(kind: Kind, resource: dict[str, Any]) -> tuple[str, bytes]:
    """A record's kind and the full content of its code and body site, written as JSON (half the time of their
    `repr`, and a thousand-record chart has a thousand of them)."""
    return kind, content([resource.get("code"), resource.get("bodySite")])


KIND_WORDS = {"condition": "condition", "procedure": "procedure", "observation": "finding", "medicine": "medicine"}


def _plural(count: int, kind: Kind) -> str:
    return f"{count} {KIND_WORDS[kind]}{'' if count == 1 else 's'}"


def _counted(checked: dict[Kind, int]) -> str:
    return ", ".join(_plural(n, kind) for kind, n in checked.items() if n)


def _words(concept: Any) -> str:
    """A CodeableConcept in words: its text, else its first display."""
    if not isinstance(concept, dict):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    return next((str(c["display"]).strip() for c in listed(concept.get("coding"))
                 if isinstance(c, dict) and isinstance(c.get("display"), str) and c["display"].strip()), "")


def _all_words(concept: Any) -> str:
    """Every word a CodeableConcept carries (text and all displays), for the knee-word safety net."""
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")] + [c.get("display") for c in listed(concept.get("coding")) if isinstance(c, dict)]
    return " ".join(p for p in parts if isinstance(p, str))

