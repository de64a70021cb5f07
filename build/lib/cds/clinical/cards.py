"""Turn recommendations into CDS Hooks cards, each carrying its own explanation.

Texts and notes come from `rules/cards.yaml` (`cds.content.cardtexts`); this module fills in what
only the evaluation knows: the findings used (values, sides, dates, sources), the thresholds,
the evidence, the notes whose conditions hold, the data issues, and the rule ids and versions
behind the card — in the markdown detail for the clinician and in a typed `Explanation`
extension for machines. It names no finding, rule or card: those choices are data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cds.clinical.explanation import (
    Explanation,
    FactUsed,
    FindingUsed,
    Recommendation,
    RulesetRef,
    RuleUsed,
    rule_label,
)
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
from cds.content.cardtexts import CardText, CardTexts, NoteCondition, SuggestionText, side_words
from cds.content.facts import DataIssue, InputFact
from cds.content.rules import RuleSet
from cds.content.terminology import Terminology

SNOMED = "http://snomed.info/sct"
UNIT_WORDS = {"mrc-grade": "/5", "a": " years", "deg": "°", "%": " %"}


class CardBuilder:
    """Builds the cards of one evaluation; holds the loaded content, no per-request state."""

    def __init__(self, texts: CardTexts, ruleset: RuleSet, terminology: Terminology,
                 *, rules_url: str | None = None) -> None:
        self.texts, self.ruleset, self.t, self.rules_url = texts, ruleset, terminology, rules_url

    def build(self, evaluation: Evaluation, issues: list[DataIssue], patient_id: str | None) -> list[Card]:
        suggest = bool(patient_id) and not _holds(self.texts.no_suggestion_when, evaluation, None)
        return [self._card(rec, evaluation, issues, patient_id if suggest else None)
                for rec in evaluation.recommendations]

    def _card(self, rec: Derived, evaluation: Evaluation, issues: list[DataIssue], patient_id: str | None) -> Card:
        text = self.texts.cards[rec.name]
        words = side_words(rec.side)
        facts, findings, rules = evaluation.explain(rec)
        suggestions = None
        if text.suggestion is not None and patient_id:
            suggestions = [self._suggestion(text.suggestion, rec.side, patient_id, text.advice, words)]
        reported = [i for i in issues if i.severity != "information"]
        explanation = Explanation(
            recommendation=Recommendation(card=rec.name, side=rec.side),
            rules=[RuleUsed(id=r.id, version=r.version, title=self.ruleset.rule(r.id).title,
                            evidence=self.ruleset.rule(r.id).evidence.grade) for r in rules],
            facts=[FactUsed(id=f.id, source=f.source, description=f.describe()) for f in facts],
            findings=[FindingUsed(name=f.name, side=f.side) for f in findings],
            thresholds=self._thresholds([r.id for r in rules]),
            issues=reported,
            ruleset=RulesetRef(id=self.ruleset.source.ruleset, version=self.ruleset.source.version))
        notes = list(self._notes(rec, evaluation)) + [
            f"{'Not available' if i.code == 'unavailable' else 'Not used'}: {i.resource} — {i.message}."
            for i in reported]
        return Card(
            summary=text.summary.format(**words),
            detail=self._detail(text, facts, explanation, notes),
            indicator=Indicator(text.indicator),
            source=Source(label=self.texts.source_label, url=self.rules_url,
                          topic=Coding(system=self.t.local_system, **text.topic)),
            suggestions=suggestions,
            selectionBehavior=SelectionBehavior.at_most_one if suggestions else None,
            overrideReasons=[OverrideReason(system=self.t.local_system, **r) for r in self.texts.override_reasons],
            extension=explanation.extension(),
        )

    def _suggestion(self, text: SuggestionText, side: str | None, patient_id: str, advice: str,
                    words: dict[str, str]) -> Suggestion:
        body_site: dict[str, Any] = {"coding": [self._coding(text.body_site)]}
        code = self.t.laterality.code_of(side)
        if code is not None:
            body_site["extension"] = [{"url": self.t.laterality_extension, "valueCodeableConcept": {
                "coding": [{"system": self.t.laterality.system, "code": code,
                            "display": self.t.laterality.display_of(side)}]}}]
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

    def _coding(self, coding: Any) -> dict[str, str]:
        return {"system": self.t.system(coding.system), "code": coding.code, "display": coding.display}

    def _thresholds(self, rule_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for rule_id in rule_ids:
            for name in self.ruleset.parameters_of(rule_id):
                p = self.ruleset.source.parameters[name]
                out[name] = f"{p.value}{UNIT_WORDS.get(p.unit, f' {p.unit}')} — {p.description}"
        return out

    def _notes(self, rec: Derived, evaluation: Evaluation) -> Iterator[str]:
        """The notes of rules/cards.yaml whose conditions hold for this card, side by side first."""
        mine = [n for n in self.texts.notes if rec.name in n.cards]
        sides = ("left", "right") if rec.side == "bilateral" else (rec.side,)
        for side in sides:
            for note in (n for n in mine if n.per_side):
                fact = _holds(note.when, evaluation, side)
                if fact is not None and fact is not False:
                    yield note.text.format(**(_fields(fact) | side_words(side)))
        flags = "; ".join(f.describe() for f in evaluation.facts if f.kind == "red-flag")
        checked = ", ".join(flag.display for flag in self.t.red_flags)
        for note in (n for n in mine if not n.per_side):
            fact = _holds(note.when, evaluation, None)
            if fact is not None and fact is not False:
                yield note.text.format(**(_fields(fact) | side_words(rec.side)), red_flags_recorded=flags,
                                       red_flags_checked=checked)

    def _detail(self, text: CardText, facts: list[InputFact], explanation: Explanation, notes: list[str]) -> str:
        parts = [f"**{self.texts.disclaimer}**", "", text.advice, "", "**Findings used**"]
        parts += [f"- {f.describe()}" + (f" — `{f.source}`" if f.source else "") for f in facts
                  if f.kind not in ("audience",)]
        if explanation.thresholds:
            parts += ["", "**Thresholds**"] + [f"- {v}" for v in explanation.thresholds.values()]
        parts += ["", f"**Evidence.** {text.evidence}"]
        if notes:
            parts += ["", "**Notes**"] + [f"- {n}" for n in notes]
        parts += ["", "**Why (rules):** " + ", ".join(rule_label(r.id, r.version) for r in explanation.rules)]
        return "\n".join(parts)


def _holds(when: NoteCondition, evaluation: Evaluation, side: str | None) -> InputFact | bool | None:
    """Whether a note's condition holds (on `side`, if given): the matched fact, True, or None/False."""
    findings = {(f.name, f.side) for f in evaluation.findings}

    def has_finding(name: str) -> bool:
        return any(n == name and (side is None or s == side) for n, s in findings)

    if when.finding is not None and not has_finding(when.finding):
        return None
    if when.no_finding is not None and has_finding(when.no_finding):
        return None
    if when.only_by_rules is not None:
        derived = [f for f in evaluation.findings if f.name == when.finding and (side is None or f.side == side)]
        if not derived or any({r.id for r in f.rules} != set(when.only_by_rules) for f in derived):
            return None
    facts = [f for f in evaluation.facts if side is None or getattr(f, "side", side) == side]
    if when.no_fact is not None and any(f.kind == when.no_fact for f in facts):
        return None
    if when.fact is not None:
        return next((f for f in facts if f.kind == when.fact), None)
    return True


def _fields(fact: InputFact | bool) -> dict[str, Any]:
    return fact.model_dump() if not isinstance(fact, bool) else {}
