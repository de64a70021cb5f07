"""The analysts' step vocabulary: every step a scenario in features/ may use, and nothing else.

Given steps describe a patient in a clinician's words and become real FHIR R4 resources (codes
from rules/terminology.yaml); When steps send them through the real validation, rules engine and
cards — or, for a scenario tagged @service, through the HTTP service as an EHR would; Then steps
check what a clinician would see. features/README.md is generated from this module
(`python -m tests.support.stepreference`), and a test fails when it is stale or a step has no example.

Loaded as a pytest plugin (see conftest.py), so its hooks record which rules each scenario
fired, write the reports, and turn an unknown step into a list of the closest known ones.
"""

from __future__ import annotations

import datetime as dt
import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pytest_bdd import given, parsers, then, when
from pytest_bdd.parser import Feature, Scenario, Step

from cds.clinical.explanation import Explanation
from cds.content.cardtexts import CardTexts
from cds.content.files import load_model
from cds.content.terminology import Terminology, load_terminology
from cds.hooks.call import HookCalls
from cds.hooks.discovery import services
from cds.hooks.examplerequests import request_for
from cds.hooks.prefetch import prefetch_templates
from cds.hooks.request import HookRequest
from cds.settings import Settings
from tests.support.contract import assert_cds_response
from tests.support.paths import EXAMPLE_DATE

SNOMED, UCUM = "http://snomed.info/sct", "http://unitsofmeasure.org"
CONTENT = Settings().content.rules_dir  # HIPFLEX_RULES_DIR: `release check` runs the scenarios on a candidate
TERMINOLOGY: Terminology = load_terminology(CONTENT / "terminology.yaml")
LOCAL = TERMINOLOGY.local_system
SIDES = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
CARD_TEXTS, _ = load_model(CONTENT / "cards.yaml", CardTexts)
CARDS = {text.in_scenarios: kind for kind, text in CARD_TEXTS.cards.items()}  # an analyst adds a kind in YAML
CODE_SYSTEMS = {s.name: s.system for s in TERMINOLOGY.code_systems}
DIAGNOSIS_SYSTEMS = ["ICD-10-CM", "ICD-10 (WHO)", "SNOMED CT"]
PROCEDURE_SYSTEMS = ["CPT", "ICD-10-PCS", "OPCS-4", "SNOMED CT"]
PAIN_SITES = {"at the front of the knee": "anterior-knee", "around the kneecap": "peripatellar",
              "behind the kneecap": "retropatellar", "in the knee": "knee", "in the hip": "hip"}
RED_FLAGS = {flag.display: flag.flag for flag in TERMINOLOGY.red_flags}
EXAMINATION_FINDINGS = {"an effusion": ("knee-effusion", "present"), "no effusion": ("knee-effusion", "absent"),
                        "giving way": ("knee-locking-instability", "present"), "swelling": ("knee-swelling", "present"),
                        "no swelling": ("knee-swelling", "absent")}
MEDICINES = {"apixaban": "1364430", "warfarin": "11289", "paracetamol": "161"}


# ---- the vocabulary registry: what features/README.md is generated from ----------------------------

@dataclass(frozen=True)
class StepDoc:
    keyword: str
    pattern: str
    doc: str
    example: str
    choices: dict[str, list[str]] = field(default_factory=dict)


VOCABULARY: list[StepDoc] = []


def card_words(text: str) -> str:
    return text


card_words.pattern = "|".join(re.escape(words) for words in CARDS)  # type: ignore[attr-defined]


def step(keyword: str, pattern: str, example: str, **choices: list[str]) -> Callable[[Any], Any]:
    """Register a documented step; `choices` lists the words a parameter accepts.

    A card name only matches the card words, so "suggests a {card}" and "suggests {card} for the
    {side} knee" can never both match one sentence.
    """
    def register(func: Any) -> Any:
        VOCABULARY.append(StepDoc(keyword, pattern, inspect.getdoc(func) or "", example, choices))
        decorate = {"Given": given, "When": when, "Then": then}[keyword]
        parser = parsers.parse(pattern.replace("{card}", "{card:Card}"), extra_types={"Card": card_words})
        return decorate(parser, stacklevel=2)(func)  # inject the step fixture into this module, not here
    return register


def choose(kind: str, value: str, options: dict[str, Any] | list[str]) -> Any:
    """The value for a word an analyst wrote, or a failure listing the words that are allowed."""
    if value not in options:
        raise AssertionError(f"unknown {kind} {value!r}; use one of: {', '.join(options)}")
    return options[value] if isinstance(options, dict) else value


# ---- the patient's chart, built as FHIR resources ------------------------------------------------------

@dataclass
class Outcome:
    cards: list[dict[str, Any]]
    rules: set[str]
    findings: set[tuple[str, str | None]] | None  # None: not visible through the service
    issues: set[str] | None

    def card(self, kind: str, side: str | None = None) -> dict[str, Any] | None:
        for card in self.cards:
            rec = Explanation.of(card).recommendation
            if rec.card == kind and (side is None or rec.side == side):
                return card
        return None


@dataclass
class Chart:
    """One scenario's patient: resources are built when the chart is opened, so dates can change first."""

    age: int = 30
    sex: str = "female"
    user: str = "Practitioner/physio-1"
    days_ago: int = 5
    builders: list[Callable[[Chart, str], dict[str, Any]]] = field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def today(self) -> dt.date:
        return EXAMPLE_DATE

    @property
    def measured(self) -> str:
        return (self.today - dt.timedelta(days=self.days_ago)).isoformat()

    def add(self, builder: Callable[[Chart, str], dict[str, Any]]) -> None:
        self.builders.append(builder)

    def resources(self) -> list[dict[str, Any]]:
        born = self.today.replace(year=self.today.year - self.age) - dt.timedelta(days=1)
        patient = {"resourceType": "Patient", "id": "scenario", "gender": self.sex, "birthDate": born.isoformat()}
        return [patient] + [build(self, f"s{index}") for index, build in enumerate(self.builders)]

    def result(self) -> Outcome:
        assert self.outcome is not None, "a Then step needs a When step first: 'When the clinician opens the chart'"
        return self.outcome


def laterality(side: str) -> dict[str, Any]:
    code, display = SIDES[side]
    return {"url": TERMINOLOGY.laterality_extension,
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}]}}


def site(system: str, code: str, side: str | None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if side is not None:
        concept["extension"] = [laterality(side)]
    return concept


def observation(chart: Chart, ident: str, code: tuple[str, str], body_site: dict[str, Any],
                value: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": ident, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "exam"}]}],
            "code": {"coding": [{"system": code[0], "code": code[1]}]}, "subject": {"reference": "Patient/scenario"},
            "effectiveDateTime": chart.measured, "bodySite": body_site} | value


def grade_value(grade: str) -> dict[str, Any]:
    choose("MRC grade", grade, TERMINOLOGY.mrc_grades)
    return {"valueCodeableConcept": {"coding": [{"system": TERMINOLOGY.mrc_grade_system, "code": grade,
                                                 "display": f"{grade}/5"}]}}


def strength(code: str, side: str, grade: str) -> Callable[[Chart, str], dict[str, Any]]:
    value = grade_value(grade)
    return lambda chart, ident: observation(chart, ident, (LOCAL, code), site(SNOMED, "24136001", side), value)


def condition(code: tuple[str, str], side: str | None,
              onset: str | None = None) -> Callable[[Chart, str], dict[str, Any]]:
    def build(chart: Chart, ident: str) -> dict[str, Any]:
        return {"resourceType": "Condition", "id": ident, "subject": {"reference": "Patient/scenario"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "verificationStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                "code": {"coding": [{"system": code[0], "code": code[1]}]},
                "bodySite": [site(SNOMED, "49076000", side)], "onsetDateTime": onset or chart.measured}
    return build


# ---- Given -------------------------------------------------------------------------------------------

@pytest.fixture
def chart() -> Chart:
    return Chart()


@step("Given", "a {age:d}-year-old {sex} patient", "Given a 24-year-old female patient", sex=["female", "male"])
def a_patient(chart: Chart, age: int, sex: str) -> None:
    """The patient whose chart is opened: age in whole years on the day of the visit."""
    chart.age, chart.sex = age, choose("sex", sex, ["female", "male"])


@step("Given", "the {side} seated hip-flexion strength above 90° is {grade}/5",
      "Given the right seated hip-flexion strength above 90° is 4/5", side=["left", "right"],
      grade=TERMINOLOGY.mrc_grades)
def end_range_strength(chart: Chart, side: str, grade: str) -> None:
    """Manual muscle test (MRC grade) sitting, knee lifted so the hip is flexed beyond 90°: tests the iliopsoas."""
    chart.add(strength("hip-flexion-mmt-seated-endrange", choose("side", side, ["left", "right"]), grade))


@step("Given", "the {side} seated hip-flexion strength up to 90° is {grade}/5",
      "Given the right seated hip-flexion strength up to 90° is 5/5", side=["left", "right"],
      grade=TERMINOLOGY.mrc_grades)
def standard_strength(chart: Chart, side: str, grade: str) -> None:
    """Manual muscle test at the standard range (hip at or below 90°), where all hip flexors work."""
    chart.add(strength("hip-flexion-mmt-seated-standard", choose("side", side, ["left", "right"]), grade))


@step("Given", "the {side} hip-flexion force above 90° is {newtons:g} N",
      "Given the left hip-flexion force above 90° is 170 N", side=["left", "right"])
def dynamometer_force(chart: Chart, side: str, newtons: float) -> None:
    """Hand-held dynamometer peak force with the hip beyond 90°; record both sides to compare them."""
    choose("side", side, ["left", "right"])
    value = {"valueQuantity": {"value": newtons, "unit": "N", "system": UCUM, "code": "N"}}
    chart.add(lambda c, i: observation(c, i, (LOCAL, "hip-flexion-hhd-seated-endrange"),
                                       site(SNOMED, "24136001", side), value))


@step("Given", "the {side} knee hyperextends {degrees:g}°", "Given the right knee hyperextends 8°",
      side=["left", "right"])
def hyperextension(chart: Chart, side: str, degrees: float) -> None:
    """Standing knee extension measured beyond neutral (0°), in degrees."""
    value = {"valueQuantity": {"value": degrees, "unit": "degrees", "system": UCUM, "code": "deg"}}
    body = site(SNOMED, "49076000", choose("side", side, ["left", "right"]))
    chart.add(lambda c, i: observation(c, i, (LOCAL, "knee-hyperextension-angle"), body, value))


@step("Given", "the {side} knee locks back into hyperextension when walking",
      "Given the right knee locks back into hyperextension when walking", side=["left", "right"])
def gait_hyperextension(chart: Chart, side: str) -> None:
    """Hyperextension seen in gait (a yes/no observation, no angle)."""
    body = site(SNOMED, "49076000", choose("side", side, ["left", "right"]))
    chart.add(lambda c, i: observation(c, i, (LOCAL, "knee-hyperextension-gait"), body, {"valueBoolean": True}))


@step("Given", "the patient reports {side} pain {where} scoring {score:d}/10",
      "Given the patient reports right pain around the kneecap scoring 5/10", side=["left", "right"],
      where=list(PAIN_SITES))
def pain(chart: Chart, side: str, where: str, score: int) -> None:
    """Pain severity (0 to 10) with where it is felt; the front of the knee and the kneecap are anterior knee pain."""
    code = choose("pain site", where, PAIN_SITES)
    binding = next(s for s in TERMINOLOGY.body_sites if s.site == code).codes[0]
    body = site(TERMINOLOGY.system(binding.system), binding.code, choose("side", side, ["left", "right"]))
    chart.add(lambda c, i: observation(c, i, ("http://loinc.org", "72514-3"), body, {"valueInteger": score}))


@step("Given", "the {side} knee has a diagnosis of patellofemoral pain",
      "Given the left knee has a diagnosis of patellofemoral pain", side=["left", "right"])
def patellofemoral_diagnosis(chart: Chart, side: str) -> None:
    """An active, confirmed patellofemoral pain syndrome Condition (SNOMED 430725003) on that knee."""
    chart.add(condition((SNOMED, "430725003"), choose("side", side, ["left", "right"])))


@step("Given", "the record shows {flag} {days:d} days ago", "Given the record shows recent knee trauma 10 days ago",
      flag=list(RED_FLAGS))
def red_flag(chart: Chart, flag: str, days: int) -> None:
    """A knee red flag, as a Condition (or, for knee surgery, a Procedure on the knee) dated that many days ago."""
    name = choose("red flag", flag, RED_FLAGS)
    when = (EXAMPLE_DATE - dt.timedelta(days=days)).isoformat()
    if name == "recent-knee-surgery":
        chart.add(lambda c, i: {"resourceType": "Procedure", "id": i, "status": "completed",
                                "subject": {"reference": "Patient/scenario"}, "performedDateTime": when,
                                "code": {"text": "Knee arthroscopy"}, "bodySite": [site(SNOMED, "49076000", None)]})
        return
    chart.add(condition((LOCAL, next(f for f in TERMINOLOGY.red_flags if f.flag == name).codes[0].code), None, when))


@step("Given", "the record has the {system} diagnosis {code} from {days:d} days ago",
      "Given the record has the ICD-10-CM diagnosis M25.461 from 3 days ago", system=DIAGNOSIS_SYSTEMS)
def coded_condition(chart: Chart, system: str, code: str, days: int) -> None:
    """An active Condition coded the way EHRs code it (ICD-10-CM, WHO ICD-10 or SNOMED CT), with no body site: the
    code alone must say whether it is a knee red flag, or a knee record the service cannot classify."""
    chart.add(coded_diagnosis(system, code, days, clinical_status=True))


@step("Given", "the record has the {system} encounter diagnosis {code} from {days:d} days ago",
      "Given the record has the ICD-10-CM encounter diagnosis M25.461 from 6 days ago", system=DIAGNOSIS_SYSTEMS)
def encounter_diagnosis(chart: Chart, system: str, code: str, days: int) -> None:
    """A diagnosis made at a visit, with no clinical status (FHIR allows it): it counts as current within its
    window."""
    chart.add(coded_diagnosis(system, code, days, clinical_status=False))


def coded_diagnosis(system: str, code: str, days: int, *,
                    clinical_status: bool) -> Callable[[Chart, str], dict[str, Any]]:
    url = choose("code system", system, {k: CODE_SYSTEMS[k] for k in DIAGNOSIS_SYSTEMS})
    when = (EXAMPLE_DATE - dt.timedelta(days=days)).isoformat()
    status = {"clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                             "code": "active"}]}} if clinical_status else {}
    return lambda c, i: {"resourceType": "Condition", "id": i, "subject": {"reference": "Patient/scenario"},
                         "code": {"coding": [{"system": url, "code": code}]}, "onsetDateTime": when} | status


@step("Given", "the {side} knee examination finds {finding}", "Given the right knee examination finds an effusion",
      side=["left", "right"], finding=list(EXAMINATION_FINDINGS))
def examination_finding(chart: Chart, side: str, finding: str) -> None:
    """An examination finding recorded as an Observation (the project's code), with the value "present" or
    "absent"; a finding that is present is a red flag (or, for swelling, a sign the rules weigh)."""
    code, value = choose("finding", finding, EXAMINATION_FINDINGS)
    body = site(SNOMED, "49076000", choose("side", side, ["left", "right"]))
    chart.add(lambda c, i: observation(c, i, (LOCAL, code), body, {"valueString": value}))


@step("Given", "the body temperature is {celsius:g} °C", "Given the body temperature is 38.9 °C")
def body_temperature(chart: Chart, celsius: float) -> None:
    """A body temperature (LOINC 8310-5) on the day of the tests."""
    value = {"valueQuantity": {"value": celsius, "unit": "°C", "system": UCUM, "code": "Cel"}}
    chart.add(lambda c, i: observation(c, i, ("http://loinc.org", "8310-5"), {}, value) | {"category": [{
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs"}]}]})


@step("Given", "the patient takes {medicine}", "Given the patient takes apixaban", medicine=list(MEDICINES))
def medicine(chart: Chart, medicine: str) -> None:
    """An active MedicationRequest for the medicine (RxNorm); anticoagulants are a value set in rules/valuesets/."""
    code = choose("medicine", medicine, MEDICINES)
    chart.add(lambda c, i: {"resourceType": "MedicationRequest", "id": i, "status": "active", "intent": "order",
                            "subject": {"reference": "Patient/scenario"}, "authoredOn": c.measured,
                            "medicationCodeableConcept": {"coding": [{
                                "system": CODE_SYSTEMS["RxNorm"], "code": code, "display": medicine}]}})


@step("Given", "the record has a procedure “{text}” coded {code} in {system}",
      "Given the record has a procedure “Arthroscopic washout” coded 1234 in urn:oid:1.2.3.4")
def unreadable_procedure(chart: Chart, text: str, code: str, system: str) -> None:
    """A completed Procedure in any code system, named by its text (use a system the service does not read to see
    what it does with a record it cannot read)."""
    chart.add(lambda c, i: {"resourceType": "Procedure", "id": i, "status": "completed",
                            "subject": {"reference": "Patient/scenario"}, "performedDateTime": c.measured,
                            "code": {"coding": [{"system": system, "code": code}], "text": text}})


@step("Given", "the record has the {system} procedure {code} from {days:d} days ago",
      "Given the record has the CPT procedure 29881 from 60 days ago", system=PROCEDURE_SYSTEMS)
def coded_procedure(chart: Chart, system: str, code: str, days: int) -> None:
    """A completed Procedure coded by CPT, ICD-10-PCS, OPCS-4 or SNOMED CT, with no body site (billing systems rarely
    send one)."""
    url = choose("code system", system, {k: CODE_SYSTEMS[k] for k in PROCEDURE_SYSTEMS})
    when = (EXAMPLE_DATE - dt.timedelta(days=days)).isoformat()
    chart.add(lambda c, i: {"resourceType": "Procedure", "id": i, "status": "completed",
                            "subject": {"reference": "Patient/scenario"}, "performedDateTime": when,
                            "code": {"coding": [{"system": url, "code": code}]}})


@step("Given", "the patient reports pain {where} scoring {score:d}/10 with no side recorded",
      "Given the patient reports pain around the kneecap scoring 6/10 with no side recorded", where=list(PAIN_SITES))
def unsided_pain(chart: Chart, where: str, score: int) -> None:
    """Pain whose side is nowhere in the record: the service asks for the side instead of concluding 'no pain'."""
    code = choose("pain site", where, PAIN_SITES)
    binding = next(s for s in TERMINOLOGY.body_sites if s.site == code).codes[0]
    body = site(TERMINOLOGY.system(binding.system), binding.code, None)
    chart.add(lambda c, i: observation(c, i, ("http://loinc.org", "72514-3"), body, {"valueInteger": score}))


@step("Given", "the patient reports {side} pain {where} with the side written in the pain site",
      "Given the patient reports right pain around the kneecap with the side written in the pain site",
      side=["left", "right"], where=list(PAIN_SITES))
def pain_side_in_value(chart: Chart, side: str, where: str) -> None:
    """A pain-location Observation (LOINC 38204-4) whose value carries the site and a laterality qualifier coding,
    as many EHRs record it, instead of a bodySite with a laterality extension."""
    code = choose("pain site", where, PAIN_SITES)
    binding = next(s for s in TERMINOLOGY.body_sites if s.site == code).codes[0]
    qualifier = SIDES[choose("side", side, ["left", "right"])]
    value = {"valueCodeableConcept": {"coding": [
        {"system": TERMINOLOGY.system(binding.system), "code": binding.code},
        {"system": SNOMED, "code": qualifier[0], "display": qualifier[1]}]}}
    chart.add(lambda c, i: {k: v for k, v in observation(c, i, ("http://loinc.org", "38204-4"), {}, value).items()
                            if k != "bodySite"})


@step("Given", "the patient already has an active physiotherapy referral",
      "Given the patient already has an active physiotherapy referral")
def active_referral(chart: Chart) -> None:
    """An active physiotherapy ServiceRequest: cards then give advice without suggesting a second referral."""
    chart.add(lambda c, i: {"resourceType": "ServiceRequest", "id": i, "status": "active", "intent": "order",
                            "subject": {"reference": "Patient/scenario"}, "authoredOn": c.measured,
                            "code": {"coding": [{"system": SNOMED, "code": "91251008"}]}})


@step("Given", "the measurements were taken {days:d} days ago", "Given the measurements were taken 91 days ago")
def measured_days_ago(chart: Chart, days: int) -> None:
    """When every observation of the scenario was recorded (default: 5 days before the visit)."""
    chart.days_ago = days


@step("Given", "the chart is opened by the patient themselves", "Given the chart is opened by the patient themselves")
def patient_facing(chart: Chart) -> None:
    """A patient-facing app (the user is the patient): the service then shows nothing."""
    chart.user = "Patient/scenario"


# ---- When --------------------------------------------------------------------------------------------

@step("When", "the clinician opens the chart", "When the clinician opens the chart")
def opens_chart(chart: Chart, request: pytest.FixtureRequest) -> None:
    """The patient-view hook: what the EHR asks when the chart is opened."""
    chart.outcome = decide(chart, "patient-view", request)


@step("When", "the clinician starts the encounter", "When the clinician starts the encounter")
def starts_encounter(chart: Chart, request: pytest.FixtureRequest) -> None:
    """The encounter-start hook; the same advice as when the chart is opened."""
    chart.outcome = decide(chart, "encounter-start", request)


@step("When", "the clinician selects a physiotherapy referral for the knee",
      "When the clinician selects a physiotherapy referral for the knee")
def selects_referral(chart: Chart, request: pytest.FixtureRequest) -> None:
    """The order-select hook with a draft physiotherapy ServiceRequest for the knee selected."""
    chart.outcome = decide(chart, "order-select", request)


# ---- Then --------------------------------------------------------------------------------------------

@step("Then", "the service suggests {card} for {knees}",
      "Then the service suggests hip-flexor strengthening for the right knee", card=list(CARDS),
      knees=["the left knee", "the right knee", "both knees"])
def suggests_for_side(chart: Chart, card: str, knees: str) -> None:
    """A card of that kind for that side; 'both knees' is one card for both sides."""
    side = choose("knees", knees, {"the left knee": "left", "the right knee": "right", "both knees": "bilateral"})
    outcome = chart.result()
    assert outcome.card(choose("card", card, CARDS), side), f"no {card} card for {knees}; {shown(outcome)}"


@step("Then", "the service suggests a {card}", "Then the service suggests a red-flag assessment", card=list(CARDS))
def suggests(chart: Chart, card: str) -> None:
    """A card of that kind, whatever its side."""
    outcome = chart.result()
    assert outcome.card(choose("card", card, CARDS)), f"no {card} card; {shown(outcome)}"


@step("Then", "the service does not suggest {card}", "Then the service does not suggest patellar glides",
      card=list(CARDS))
def does_not_suggest(chart: Chart, card: str) -> None:
    """No card of that kind, on any side."""
    outcome = chart.result()
    assert outcome.card(choose("card", card, CARDS)) is None, f"unexpected {card} card; {shown(outcome)}"


@step("Then", "the service shows no cards", "Then the service shows no cards")
def no_cards(chart: Chart) -> None:
    """Nothing at all is shown to the clinician."""
    outcome = chart.result()
    assert outcome.cards == [], shown(outcome)


@step("Then", "the service shows {count:d} cards", "Then the service shows 2 cards")
def card_count(chart: Chart, count: int) -> None:
    """Exactly that many cards."""
    outcome = chart.result()
    assert len(outcome.cards) == count, shown(outcome)


@step("Then", "the {card} card is marked {indicator}", "Then the red-flag assessment card is marked warning",
      card=list(CARDS), indicator=["info", "warning", "critical"])
def indicator(chart: Chart, card: str, indicator: str) -> None:
    """The card's urgency as the EHR shows it: info, warning or critical."""
    assert found(chart, card)["indicator"] == choose("indicator", indicator, ["info", "warning", "critical"])


@step("Then", "the {card} card offers a physiotherapy referral",
      "Then the hip-flexor strengthening card offers a physiotherapy referral", card=list(CARDS))
def offers_referral(chart: Chart, card: str) -> None:
    """The card has a suggestion the clinician can accept: a draft physiotherapy referral."""
    suggestions = found(chart, card).get("suggestions", [])
    assert any(a["resource"]["resourceType"] == "ServiceRequest" for s in suggestions for a in s["actions"])


@step("Then", "the {card} card offers no referral", "Then the patellar glides card offers no referral",
      card=list(CARDS))
def offers_no_referral(chart: Chart, card: str) -> None:
    """The card gives advice only, with nothing to accept."""
    assert "suggestions" not in found(chart, card)


@step("Then", 'the {card} card says "{text}"', 'Then the hip-flexor strengthening card says "expert opinion"',
      card=list(CARDS))
def card_says(chart: Chart, card: str, text: str) -> None:
    """The card's summary or detail contains these words (letter case ignored)."""
    shown_card = found(chart, card)
    words = f"{shown_card['summary']}\n{shown_card.get('detail', '')}".lower()
    assert text.lower() in words, f"{text!r} not in the {card} card:\n{words}"


@step("Then", 'the {card} card does not say "{text}"',
      'Then the patellar glides card does not say "screen for hypermobility"', card=list(CARDS))
def card_does_not_say(chart: Chart, card: str, text: str) -> None:
    """The card is shown, and neither its summary nor its detail contains these words (letter case ignored)."""
    shown_card = found(chart, card)
    words = f"{shown_card['summary']}\n{shown_card.get('detail', '')}".lower()
    assert text.lower() not in words, f"{text!r} is in the {card} card:\n{words}"


@step("Then", "the {card} card rests on rule {rule}", "Then the patellar glides card rests on rule R4",
      card=list(CARDS))
def card_rule(chart: Chart, card: str, rule: str) -> None:
    """The card's explanation lists this rule id (with its version) among the rules behind it."""
    rules = [r.id for r in Explanation.of(found(chart, card)).rules]
    assert rule in rules, f"{card} card rests on {rules}"


@step("Then", "the finding {finding} is made for the {side} side",
      "Then the finding selective-end-range-pattern is made for the right side", side=["left", "right"])
def finding_made(chart: Chart, finding: str, side: str) -> None:
    """A finding of the rule file (see `hipflex-cds rules`) was derived for that side. Not with @service."""
    findings = engine_only(chart.result().findings, "findings")
    assert (finding, choose("side", side, ["left", "right"])) in findings, f"findings: {sorted(findings, key=str)}"


@step("Then", "the finding {finding} is made", "Then the finding strength-conflict is made")
def finding_made_any_side(chart: Chart, finding: str) -> None:
    """A finding was derived, on any side or none. Not with @service."""
    findings = engine_only(chart.result().findings, "findings")
    assert any(name == finding for name, _ in findings), f"findings: {sorted(findings, key=str)}"


@step("Then", "the finding {finding} is not made", "Then the finding impairment is not made")
def finding_not_made(chart: Chart, finding: str) -> None:
    """The finding was derived for no side. Not with @service."""
    findings = engine_only(chart.result().findings, "findings")
    assert all(name != finding for name, _ in findings), f"findings: {sorted(findings, key=str)}"


@step("Then", "the data issue {code} is reported", "Then the data issue stale is reported")
def data_issue(chart: Chart, code: str) -> None:
    """Validation reported a data issue with this code (e.g. stale, invalid-value). Not with @service."""
    issues = engine_only(chart.result().issues, "data issues")
    assert code in issues, f"data issues: {sorted(issues)}"


def found(chart: Chart, card: str) -> dict[str, Any]:
    outcome = chart.result()
    shown_card = outcome.card(choose("card", card, CARDS))
    assert shown_card is not None, f"no {card} card; {shown(outcome)}"
    return shown_card


def shown(outcome: Outcome) -> str:
    return "cards shown: " + (", ".join(c["summary"] for c in outcome.cards) or "none")


def engine_only(value: Any, what: str) -> Any:
    assert value is not None, f"{what} are not visible through the service: drop @service from this scenario"
    return value


# ---- running a scenario: engine directly, or the HTTP service for @service --------------------------

def decide(chart: Chart, hook: str, request: pytest.FixtureRequest) -> Outcome:
    resources = chart.resources()
    if request.node.get_closest_marker("service"):
        outcome = through_service(request.getfixturevalue("feature_service"), hook, chart, resources)
    else:
        outcome = through_hook_call(request.getfixturevalue("hook_caller"), hook, chart, resources)
    assert_cds_response({"cards": outcome.cards})
    COVERAGE.setdefault(request.node.nodeid, set()).update(outcome.rules)
    return outcome


def through_hook_call(calls: HookCalls, hook: str, chart: Chart, resources: list[dict[str, Any]]) -> Outcome:
    """The service's own hook call, without HTTP: findings and data issues are visible too."""
    service = next(s for s in services(calls.pipeline.terminology) if s.hook == hook)
    body = request_for(resources, hook, service.prefetch, chart.user, terminology=calls.pipeline.terminology)
    answer = calls.call(service, HookRequest.model_validate(body), today=chart.today)
    decision = answer.decision
    if decision is None:
        return Outcome(cards=[], rules=set(), findings=set(), issues=set())
    evaluation = decision.evaluation
    derived = [*evaluation.findings, *evaluation.recommendations, *evaluation.suppressed]
    return Outcome(cards=answer.response.dump()["cards"], rules={str(r) for d in derived for r in d.rules},
                   findings=evaluation.finding_names(), issues={i.code for i in decision.validated.issues})


def through_service(url: str, hook: str, chart: Chart, resources: list[dict[str, Any]]) -> Outcome:
    body = request_for(resources, hook, prefetch_templates(TERMINOLOGY), chart.user, terminology=TERMINOLOGY)
    response = httpx.post(f"{url}/cds-services/hipflex-{hook}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    rules = {label for c in cards for label in Explanation.of(c).rule_labels}
    return Outcome(cards=cards, rules=rules, findings=None, issues=None)


# ---- coverage, reports and unknown steps (pytest hooks of this plugin) ------------------------------

COVERAGE: dict[str, set[str]] = {}  # scenario node id -> "R3 v1", ...
SCENARIOS: dict[str, dict[str, Any]] = {}  # node id -> feature, scenario, status, failed step


def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Feature, scenario: Scenario) -> None:
    SCENARIOS[request.node.nodeid] = {"feature": feature.name, "scenario": scenario.name, "status": "failed",
                                      "tags": sorted(scenario.tags), "failed_step": None}


def pytest_bdd_after_scenario(request: pytest.FixtureRequest, feature: Feature, scenario: Scenario) -> None:
    SCENARIOS[request.node.nodeid]["status"] = "passed"


def pytest_bdd_step_error(request: pytest.FixtureRequest, feature: Feature, scenario: Scenario, step: Step,
                          step_func: Any, step_func_args: Any, exception: Exception) -> None:
    SCENARIOS[request.node.nodeid]["failed_step"] = f"{step.keyword} {step.name}"


class UnknownStep(Exception):
    """A scenario used wording that is not in the step vocabulary."""


def pytest_bdd_step_func_lookup_error(request: pytest.FixtureRequest, feature: Feature, scenario: Scenario,
                                      step: Step, exception: Exception) -> None:
    raise UnknownStep(unknown_step_message(step.type.capitalize(), step.name, feature.filename))


def unknown_step_message(keyword: str, text: str, filename: str) -> str:
    examples = [doc.example for doc in VOCABULARY]
    closest = difflib.get_close_matches(f"{keyword} {text}", examples, n=3, cutoff=0.3)
    listed = "\n".join(f"  {c}" for c in closest) or "  (nothing close)"
    return (f"{filename}: no step '{keyword} {text}'. Closest documented steps:\n{listed}\n"
            "See features/README.md for every step.")
