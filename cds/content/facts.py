"""Facts: the vocabulary rules are written in, and what validation hands to the engine.

One typed model per input kind; the rule compiler checks every `fact:` and property against them.

A fact is a flat, already-normalised statement ("right end-range MMT is 4 = rank 7, dated …").
The engine only ever sees these, never raw FHIR, because durable_rules silently mis-compares
strings, booleans and odd floats (shared/engine/durable-rules-notes.md §5.4).
"""

from __future__ import annotations

import datetime as dt
import functools
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

EngineSide = Literal["left", "right"]
EngineValue = str | int | float


_NOT_IN_ENGINE = frozenset({"source", "date"})


class _Fact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique within one evaluation, e.g. 'end-range-mmt:Observation/1:right'")
    source: str | None = Field(default=None, description="FHIR reference the fact came from")
    date: dt.date | None = Field(default=None, description="Clinically relevant date (effective/onset)")

    def engine_fields(self) -> dict[str, EngineValue]:
        """The flat projection asserted into the engine (no dates, no references). Every field of a fact is a
        scalar, so its validated values are already what `model_dump` would give (read directly: every fact of
        every evaluation passes here)."""
        data = {k: v for k, v in self.__dict__.items() if v is not None and k not in _NOT_IN_ENGINE}
        data["type"] = "fact"
        return data

    def describe(self) -> str:
        """Plain-language summary with its date, for the explanation and the review page."""
        return self.what() + (f" ({date_words(self.date)})" if self.date else "")

    def what(self) -> str:
        """Plain-language summary without the date (a card names a shared date once)."""
        raise NotImplementedError


@functools.lru_cache(maxsize=4096)
def date_words(date: dt.date) -> str:
    """'19 Nov 2026': a date no reader can take for another (unlike 11/12/2026); a chart has few dates, and each
    card and explanation names them again."""
    return f"{date.day} {date.strftime('%b %Y')}"


class AgeFact(_Fact):
    kind: Literal["age"] = "age"
    years: int = Field(ge=0, le=150)

    def what(self) -> str:
        return f"age {self.years} years"


class AudienceFact(_Fact):
    kind: Literal["audience"] = "audience"
    role: Literal["practitioner", "practitioner-role", "patient", "related-person", "other"]

    def what(self) -> str:
        return f"user is a {self.role.replace('-', ' ')}"


class MmtFact(_Fact):
    kind: Literal["end-range-mmt", "standard-mmt"]
    side: EngineSide
    grade: str
    grade_rank: int = Field(ge=0, le=10)

    def what(self) -> str:
        where = "above 90°" if self.kind == "end-range-mmt" else "at standard range"
        return f"{self.side} seated hip flexion {where}: {self.grade}/5 (MMT)"


class HhdFact(_Fact):
    kind: Literal["end-range-hhd"] = "end-range-hhd"
    side: EngineSide
    newtons: float = Field(gt=0, description="Plausible range: rules/terminology.yaml")

    def what(self) -> str:
        return f"{self.side} end-range hip flexion force {self.newtons:.0f} N (dynamometer)"


class HhdAsymmetryFact(_Fact):
    """Computed in Python from both sides: the engine must not compare two facts (issue #381)."""

    kind: Literal["hhd-asymmetry"] = "hhd-asymmetry"
    side: EngineSide = Field(description="The weaker side")
    percent: float = Field(ge=0, le=100)
    weaker_newtons: float | None = Field(default=None, gt=0)
    stronger_newtons: float | None = Field(default=None, gt=0)

    def what(self) -> str:
        forces = (f" ({self.weaker_newtons:.0f} N against {self.stronger_newtons:.0f} N)"
                  if self.weaker_newtons and self.stronger_newtons else "")
        return f"dynamometer: {self.side} side {self.percent:.1f} % weaker{forces}"


class HyperextensionFact(_Fact):
    kind: Literal["knee-hyperextension"] = "knee-hyperextension"
    side: EngineSide
    degrees: float = Field(description="Beyond neutral; plausible range: rules/terminology.yaml")

    def what(self) -> str:
        return f"{self.side} knee hyperextension {self.degrees:g}° beyond neutral"


class GaitFact(_Fact):
    kind: Literal["knee-hyperextension-gait"] = "knee-hyperextension-gait"
    side: EngineSide
    observed: Literal["yes", "no"]

    def what(self) -> str:
        seen = "seen" if self.observed == "yes" else "not seen"
        return f"{self.side} knee hyperextension {seen} in gait"


class PainSiteFact(_Fact):
    kind: Literal["pain-site"] = "pain-site"
    side: EngineSide
    site: str

    def what(self) -> str:
        return f"{self.side} {self.site.replace('-', ' ')} pain"


class UnsidedPainSiteFact(_Fact):
    """Pain at a site whose side could not be read: enough to ask for the side, never enough for side rules."""

    kind: Literal["pain-site-unsided"] = "pain-site-unsided"
    site: str

    def what(self) -> str:
        return f"{self.site.replace('-', ' ')} pain, side not recorded"


class PainScoreFact(_Fact):
    kind: Literal["pain-score"] = "pain-score"
    score: int = Field(ge=0, description="Plausible range: rules/terminology.yaml")

    def what(self) -> str:
        return f"pain {self.score}/10"


class KneeConditionFact(_Fact):
    kind: Literal["knee-condition"] = "knee-condition"
    side: EngineSide
    condition: Literal["patellofemoral-pain"]

    def what(self) -> str:
        return f"{self.side} patellofemoral pain diagnosis"


class _Described(_Fact):
    """A fact whose `display` is words for the clinician, never compared by the engine."""

    display: str

    def engine_fields(self) -> dict[str, EngineValue]:
        data = super().engine_fields()
        data.pop("display")
        return data


class RedFlagFact(_Described):
    kind: Literal["red-flag"] = "red-flag"
    flag: str

    def what(self) -> str:
        return f"red flag: {self.display}"


class ReferralFact(_Fact):
    kind: Literal["physiotherapy-referral"] = "physiotherapy-referral"

    def what(self) -> str:
        return "active physiotherapy referral"


class UnclassifiedKneeRecordsFact(_Described):
    """Knee records (or records that cannot be read at all) that are neither a red flag nor known to be compatible
    with these suggestions: no treatment is suggested until a clinician has checked them. `display` names each."""

    kind: Literal["unclassified-knee-records"] = "unclassified-knee-records"
    count: int = Field(ge=1)

    def what(self) -> str:
        return f"{self.count} knee record{'s' if self.count > 1 else ''} to check"


class RecordsCheckedFact(_Described):
    """What the red-flag check read: `display` says it in words ("3 conditions, 1 procedure")."""

    kind: Literal["records-checked"] = "records-checked"
    records: int = Field(ge=0)

    def what(self) -> str:
        return f"checked {self.display}"


class UnreadRecordsFact(_Described):
    """Records in code systems this service cannot read (named in `display`): never 'no red flag' over them."""

    kind: Literal["unread-records"] = "unread-records"
    count: int = Field(ge=1)

    def what(self) -> str:
        return f"not readable: {self.display}"


class AnticoagulationFact(_Fact):
    kind: Literal["anticoagulation"] = "anticoagulation"

    def what(self) -> str:
        return "on an anticoagulant"


class KneeSwellingFact(_Fact):
    kind: Literal["knee-swelling"] = "knee-swelling"

    def what(self) -> str:
        return "knee swelling"


class BodyTemperatureFact(_Fact):
    kind: Literal["body-temperature"] = "body-temperature"
    celsius: float = Field(ge=25, le=45)

    def what(self) -> str:
        return f"temperature {self.celsius:.1f} °C"


class RejectedInputFact(_Fact):
    kind: Literal["rejected-input"] = "rejected-input"
    input: str

    def what(self) -> str:
        return f"rejected {self.input} observation"


InputFact = Annotated[
    AgeFact
    | AudienceFact
    | MmtFact
    | HhdFact
    | HhdAsymmetryFact
    | HyperextensionFact
    | GaitFact
    | PainSiteFact
    | UnsidedPainSiteFact
    | PainScoreFact
    | KneeConditionFact
    | RedFlagFact
    | ReferralFact
    | UnclassifiedKneeRecordsFact
    | RecordsCheckedFact
    | UnreadRecordsFact
    | AnticoagulationFact
    | KneeSwellingFact
    | BodyTemperatureFact
    | RejectedInputFact,
    Field(discriminator="kind"),
]

FACT_MODELS: tuple[type[_Fact], ...] = (
    AgeFact, AudienceFact, MmtFact, HhdFact, HhdAsymmetryFact, HyperextensionFact, GaitFact,
    PainSiteFact, UnsidedPainSiteFact, PainScoreFact, KneeConditionFact, RedFlagFact, ReferralFact,
    UnclassifiedKneeRecordsFact, RecordsCheckedFact, UnreadRecordsFact, AnticoagulationFact, KneeSwellingFact,
    BodyTemperatureFact, RejectedInputFact,
)


def fact_fields() -> dict[str, set[str]]:
    """For each fact kind, every field (what a card text may show as a placeholder)."""
    return {kind: set(model.model_fields) for model in FACT_MODELS
            for kind in getattr(model.model_fields["kind"].annotation, "__args__", ())}


def fact_properties() -> dict[str, dict[str, str]]:
    """For each fact kind, the properties a rule may test and their type ('number' or 'text')."""
    known: dict[str, dict[str, str]] = {}
    for model in FACT_MODELS:
        kind_field = model.model_fields["kind"].annotation
        props = {name: ("number" if field.annotation in (int, float) else "text")
                 for name, field in model.model_fields.items()
                 if name not in {"id", "source", "date", "kind", "display"}}
        for kind in getattr(kind_field, "__args__", ()):
            known[kind] = props
    return known


class IssueCode(StrEnum):
    """Why data were not used, or are doubtful: the codes in data issues (card explanations, the review page,
    population summaries). docs/ehr-integration.md says what each means; a new code is added here first."""

    conflicting_patient = "conflicting-patient"
    conflicting_side = "conflicting-side"
    conflicting_values = "conflicting-values"
    different_dates = "different-dates"
    entered_in_error = "entered-in-error"
    future_date = "future-date"
    invalid_status = "invalid-status"
    invalid_unit = "invalid-unit"
    invalid_value = "invalid-value"
    legacy_code = "legacy-code"
    missing = "missing"
    no_code = "no-code"
    no_current_pain = "no-current-pain"
    no_date = "no-date"
    no_id = "no-id"
    no_patient = "no-patient"
    no_side = "no-side"
    no_subject = "no-subject"
    no_value = "no-value"
    not_fhir = "not-fhir"
    not_used = "not-used"
    one_side_only = "one-side-only"
    out_of_range = "out-of-range"
    preliminary = "preliminary"
    source_error = "source-error"
    stale = "stale"
    structure = "structure"
    unavailable = "unavailable"
    unknown_knee_record = "unknown-knee-record"
    unknown_site = "unknown-site"
    unreadable_record = "unreadable-record"
    unsupported_code = "unsupported-code"
    wrong_patient = "wrong-patient"


ISSUE_MEANINGS: dict[IssueCode, str] = {  # the words for each code: reports, pages, docs/ehr-integration.md
    IssueCode.conflicting_patient: 'the same Patient sent twice with different contents; neither copy used',
    IssueCode.conflicting_side: 'a laterality given twice, differently',
    IssueCode.conflicting_values: 'the same finding recorded twice at the same time with different values; neither '
                                  'used',
    IssueCode.different_dates: 'left and right dynamometer forces from different dates; no asymmetry computed',
    IssueCode.entered_in_error: 'an Observation marked as entered in error; ignored',
    IssueCode.future_date: 'a date (or birth date) in the future',
    IssueCode.invalid_status: 'an Observation status that is not final, amended or corrected',
    IssueCode.invalid_unit: 'a unit that is not UCUM, or not the kind of quantity measured (kg for a force)',
    IssueCode.invalid_value: 'a value that is not a number, or not an MRC grade',
    IssueCode.legacy_code: 'an inactive SNOMED CT laterality code, read as left or right',
    IssueCode.missing: 'no birth date: age unknown, so no exercise suggestion',
    IssueCode.no_code: 'an Observation code without a coding',
    IssueCode.no_current_pain: 'a pain score below the current-pain threshold',
    IssueCode.no_date: 'no usable date, so how recent it is cannot be told',
    IssueCode.no_id: 'a resource without an id',
    IssueCode.no_patient: 'no patient in context and no Patient resource',
    IssueCode.no_side: 'no side (left or right) where the rules need one',
    IssueCode.no_subject: 'a resource with no subject',
    IssueCode.no_value: 'no value recorded',
    IssueCode.not_fhir: 'an entry that is not a FHIR resource',
    IssueCode.not_used: 'a resource type these rules do not read',
    IssueCode.one_side_only: 'a dynamometer force on one side only; no asymmetry computed',
    IssueCode.out_of_range: 'a value outside its plausible range',
    IssueCode.preliminary: 'a preliminary result, not used until final',
    IssueCode.source_error: 'the data source sent an OperationOutcome instead of data',
    IssueCode.stale: 'older than the look-back window (HIPFLEX_LOOKBACK_DAYS)',
    IssueCode.structure: 'not valid FHIR R4',
    IssueCode.unavailable: 'data that could not be read (a prefetch query, the FHIR server, the terminology server)',
    IssueCode.unknown_knee_record: 'a knee record that is neither a known red flag nor known to be safe; suggestions '
                                   'held back',
    IssueCode.unknown_site: 'a pain location that is not a recognised body site',
    IssueCode.unreadable_record: 'a record in a code system these rules cannot read',
    IssueCode.unsupported_code: 'a code the rules recognise but do not use (the message says which to use)',
    IssueCode.wrong_patient: 'a resource about another patient than the one in context',
}


class DataIssue(BaseModel):
    """Something wrong or doubtful in the input, said plainly and located precisely. Built one way, with its
    fields by name (`DataIssue(resource=..., path=..., severity=..., code=IssueCode.x, message=...)`)."""

    model_config = ConfigDict(frozen=True)

    resource: str = Field(description="FHIR reference of the resource, e.g. 'Observation/p13-mmt'")
    path: str = Field(description="FHIRPath-like element path, e.g. 'Observation.valueQuantity.code'")
    severity: Literal["error", "warning", "information"]
    code: IssueCode = Field(description="Machine-readable reason, e.g. 'invalid-value', 'stale'")
    message: str
