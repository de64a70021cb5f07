"""Turn recommendations into CDS Hooks cards, each carrying its own explanation.

Texts come from `rules/cards.yaml`; this module adds what only the evaluation knows: the
findings used (values, sides, dates, sources), the thresholds, the evidence, which red flags were
checked, missing or contradictory data, and the rule ids and versions behind the card — in the
markdown detail for the clinician and in a card `extension` for machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cds.clinical.facts import DataIssue, InputFact, MmtFact
from cds.clinical.outcome import Derived, Evaluation
from cds.clinical.response import (
    Action,
    ActionType,
    Card,
    Coding,
    Indicator,
    OverrideReason,
    SelectionBehavior,
    Source,
    Suggestion,
)
from cds.content.files import ContentError, load_model
from cds.content.rules import RuleSet
from cds.content.terminology import Terminology

EXPLANATION_KEY = "urn:hipflex-cds:explanation"
SNOMED = "http://snomed.info/sct"
LATERALITY_CODE = {"left": "7771000", "right": "24028007", "bilateral": "51440002"}
LATERALITY_DISPLAY = {"left": "Left", "right": "Right", "bilateral": "Right and left"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextCoding(_Strict):
    system: str
    code: str
    display: str


class SuggestionText(_Strict):
    label: str
    codes: list[TextCoding] = Field(min_length=1)
    body_site: TextCoding
    reason: TextCoding


class CardText(_Strict):
    indicator: Indicator
    topic: dict[str, str]
    summary: str
    advice: str
    evidence: str
    suggestion: SuggestionText | None = None


class CardTexts(_Strict):
    version: str
    source_label: str
    disclaimer: str
    override_reasons: list[dict[str, str]]
    cards: dict[str, CardText]


def side_words(side: str | None) -> dict[str, str]:
    """The {Side}/{side} placeholders of card texts."""
    if side == "bilateral":
        return {"Side": "Both knees", "side": "both sides"}
    if side in ("left", "right"):
        return {"Side": f"{side.capitalize()} knee", "side": side}
    return {"Side": "Knee", "side": "unspecified side"}


def load_card_texts(path: Path, ruleset: RuleSet) -> CardTexts:
    """Load card texts and check them against the rules: every card exists, summaries fit."""
    texts, lines = load_model(path, CardTexts)
    for kind, text in texts.cards.items():
        for side in ("left", "right", "bilateral", None):
            summary = text.summary.format(**side_words(side))
            if len(summary) >= 140:
                raise ContentError(path, lines.get(("cards", kind, "summary")),
                                   f"cards.{kind}.summary is {len(summary)} characters; the limit is 139")
    for rule in ruleset.compiled:
        for effect in rule.effects:
            if effect.verb == "recommend" and effect.name not in texts.cards:
                raise ContentError(path, None, f"rule {rule.rule_id} recommends card {effect.name!r}, "
                                               f"which has no text in {path.name}")
    return texts


class CardBuilder:
    """Builds the cards of one evaluation; holds the loaded content, no per-request state."""

    def __init__(self, texts: CardTexts, ruleset: RuleSet, terminology: Terminology,
                 *, rules_url: str | None = None) -> None:
        self.texts, self.ruleset, self.t, self.rules_url = texts, ruleset, terminology, rules_url

    def build(self, evaluation: Evaluation, issues: list[DataIssue], patient_id: str | None) -> list[Card]:
        names = evaluation.finding_names()
        referral = ("active-physiotherapy-referral", None) in names
        return [self._card(rec, evaluation, issues, patient_id, referral)
                for rec in evaluation.recommendations]

    def _card(self, rec: Derived, evaluation: Evaluation, issues: list[DataIssue],
              patient_id: str | None, referral: bool) -> Card:
        text = self.texts.cards[rec.name]
        words = side_words(rec.side)
        facts, findings, rules = evaluation.explain(rec)
        suggestions = None
        if text.suggestion is not None and not referral and patient_id:
            suggestions = [self._suggestion(text.suggestion, rec.side, patient_id, text.advice, words)]
        notes = self._notes(rec, evaluation, issues, referral and text.suggestion is not None)
        rule_ids = [r.id for r in rules]
        thresholds = self._thresholds(rule_ids)
        detail = self._detail(text, facts, thresholds, notes, rules)
        explanation = {
            "recommendation": {"card": rec.name, "side": rec.side},
            "rules": [{"id": r.id, "version": r.version, "title": self.ruleset.rule(r.id).title,
                       "evidence": self.ruleset.rule(r.id).evidence.grade} for r in rules],
            "facts": [{"id": f.id, "source": f.source, "description": f.describe()} for f in facts],
            "findings": [{"name": f.name, "side": f.side} for f in findings],
            "thresholds": thresholds,
            "ruleset": {"id": self.ruleset.source.ruleset, "version": self.ruleset.source.version},
        }
        return Card(
            summary=text.summary.format(**words),
            detail=detail,
            indicator=text.indicator,
            source=Source(label=self.texts.source_label, url=self.rules_url,
                          topic=Coding(system=self.t.local_system, **text.topic)),
            suggestions=suggestions,
            selectionBehavior=SelectionBehavior.at_most_one if suggestions else None,
            overrideReasons=[OverrideReason(system=self.t.local_system, **r) for r in self.texts.override_reasons],
            extension={EXPLANATION_KEY: explanation},
        )

    def _suggestion(self, text: SuggestionText, side: str | None, patient_id: str, advice: str,
                    words: dict[str, str]) -> Suggestion:
        body_site: dict[str, Any] = {"coding": [self._coding(text.body_site)]}
        if side in LATERALITY_CODE:
            body_site["extension"] = [{"url": self.t.laterality_extension, "valueCodeableConcept": {
                "coding": [{"system": SNOMED, "code": LATERALITY_CODE[side],
                            "display": LATERALITY_DISPLAY[side]}]}}]
        request = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [self._coding(c) for c in text.codes], "text": text.codes[-1].display},
            "subject": {"reference": f"Patient/{patient_id}"},
            "reasonCode": [{"coding": [self._coding(text.reason)]}],
            "bodySite": [body_site],
            "note": [{"text": advice}],
        }
        label = text.label.format(**words)
        return Suggestion(label=label, isRecommended=True,
                          actions=[Action(type=ActionType.create, description=label, resource=request)])

    def _coding(self, coding: TextCoding) -> dict[str, str]:
        return {"system": self.t.system(coding.system), "code": coding.code, "display": coding.display}

    def _thresholds(self, rule_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for rule_id in rule_ids:
            for name in self.ruleset.parameters_of(rule_id):
                p = self.ruleset.source.parameters[name]
                unit = {"mrc-grade": "/5", "a": " years", "deg": "°", "%": " %"}.get(p.unit, f" {p.unit}")
                out[name] = f"{p.value}{unit} — {p.description}"
        return out

    def _notes(self, rec: Derived, evaluation: Evaluation, issues: list[DataIssue], referral: bool) -> list[str]:
        """Missing or contradictory data the clinician should know about for this card."""
        notes: list[str] = []
        if rec.name == "hip-strengthening":
            sides = ("left", "right") if rec.side == "bilateral" else (str(rec.side),)
            notes += [n for side in sides for n in self._strength_notes(evaluation, side)]
        if referral:
            notes.append("An active physiotherapy referral exists, so no new referral is suggested.")
        if rec.name == "red-flag":
            notes.append("Recorded: " + "; ".join(f.describe() for f in evaluation.facts if f.kind == "red-flag") + ".")
        else:
            checked = ", ".join(flag.display for flag in self.t.red_flags)
            notes.append(f"Red flags checked in the record, none found: {checked}. Only what is recorded was checked.")
        notes += [f"{'Not available' if i.code == 'unavailable' else 'Not used'}: {i.resource} — {i.message}."
                  for i in issues if i.severity != "information"]
        return notes

    @staticmethod
    def _strength_notes(evaluation: Evaluation, side: str) -> list[str]:
        names = evaluation.finding_names()
        label = side.capitalize()
        notes: list[str] = []
        if ("selective-end-range-pattern", side) in names:
            notes.append(f"{label}: weak above 90° but normal at standard range (a selective end-range pattern).")
        elif not any(isinstance(f, MmtFact) and f.kind == "standard-mmt" and f.side == side for f in evaluation.facts):
            notes.append(f"{label}: standard-range (≤ 90°) test not recorded, so it is not known whether the "
                         "weakness is selective to end range.")
        weakness = next((f for f in evaluation.findings
                         if f.name == "end-range-hip-flexion-weakness" and f.side == side), None)
        manual = [f for f in evaluation.facts
                  if isinstance(f, MmtFact) and f.kind == "end-range-mmt" and f.side == side]
        if weakness and manual and {r.id for r in weakness.rules} == {"D1-hhd"}:
            notes.append(f"{label}: the dynamometer result was used over the manual grade {manual[0].grade}/5 "
                         "(manual testing is unreliable between grades 4 and 5).")
        return notes

    def _detail(self, text: CardText, facts: list[InputFact], thresholds: dict[str, str],
                notes: list[str], rules: list[Any]) -> str:
        parts = [f"**{self.texts.disclaimer}**", "", text.advice, "", "**Findings used**"]
        parts += [f"- {f.describe()}" + (f" — `{f.source}`" if f.source else "") for f in facts
                  if f.kind not in ("audience",)]
        if thresholds:
            parts += ["", "**Thresholds**"] + [f"- {v}" for v in thresholds.values()]
        parts += ["", f"**Evidence.** {text.evidence}"]
        if notes:
            parts += ["", "**Notes**"] + [f"- {n}" for n in notes]
        parts += ["", "**Why (rules):** " + ", ".join(f"{r.id} v{r.version}" for r in rules)]
        return "\n".join(parts)

