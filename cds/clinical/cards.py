"""Turn recommendations into CDS Hooks cards, each carrying its own explanation.

Texts and notes come from `rules/cards.yaml` (`cds.content.cardtexts`); this module fills in what
only the evaluation knows: the findings used (values, sides, dates, sources), the thresholds,
the evidence, the notes whose conditions hold, the data issues, and the rule ids and versions
behind the card — in the markdown detail for the clinician and in a typed `Explanation`
extension for machines. It names no finding, rule or card: those choices are data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from cds.clinical.explanation import Explanation, FactUsed, FindingUsed, Recommendation, RulesetRef, RuleUsed
from cds.clinical.outcome import Derived, Evaluation, Trace
from cds.clinical.response import (
    Action,
    ActionType,
    Card,
    Coding,
    Indicator,
    Link,
    LinkType,
    OverrideReason,
    SelectionBehavior,
    Source,
    Suggestion,
)
from cds.content.cardtexts import (
    CardText,
    CardTexts,
    NoteCondition,
    ReasonText,
    SuggestionText,
    parameter_words,
    side_words,
)
from cds.content.catalog import value_with_unit
from cds.content.facts import DataIssue, InputFact, IssueCode, date_words
from cds.content.rules import RuleSet
from cds.content.terminology import Terminology

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~&])")  # inline markup; data never starts a line
# Issues a note already names (the records to check, the records that cannot be read): not listed twice.
NOTED_ISSUES = {IssueCode.unknown_knee_record, IssueCode.unreadable_record}
MAX_ISSUE_NOTES = 5  # a panel shows a few; the explanation extension keeps the first MAX_EXPLAINED_ISSUES
MAX_EXPLAINED_ISSUES = 50


@dataclass(frozen=True)
class ExplainedCard:
    """A card and the typed account of why it was issued, side by side until the response is encoded: the store,
    metrics, pages and population runs read `explanation`, never the JSON extension."""

    card: Card
    explanation: Explanation

    def encoded(self) -> Card:
        """The card as the EHR receives it, with its explanation as an extension (S2 #extensions)."""
        return self.card.model_copy(update={"extension": self.explanation.extension()})


class CardBuilder:
    """Builds the cards of one evaluation; holds the loaded content, no per-request state.

    The parts that depend only on the content (override reasons, each kind's source and link, the rules' titles
    and evidence, the thresholds) are validated once, here; a card is then assembled from valid parts without
    running the response models' validators again (`model_construct`): card building was a quarter of a decision.
    `check=True` validates every card and explanation as it is built, and fails on any difference from the
    constructed one: the tests run that way (HIPFLEX_CHECK_CARDS), so every card the suite sees is checked.
    """

    def __init__(self, texts: CardTexts, ruleset: RuleSet, terminology: Terminology,
                 *, rules_url: str | None = None, check: bool = False) -> None:
        self.texts, self.ruleset, self.t, self.rules_url, self.check = texts, ruleset, terminology, rules_url, check
        self._override_reasons = [OverrideReason(system=terminology.local_system, **r) for r in texts.override_reasons]
        self._ruleset_ref = RulesetRef(id=ruleset.source.ruleset, version=ruleset.source.version)
        self._rules_used: dict[tuple[str, int, bool], RuleUsed] = {}
        self._thresholds_of: dict[tuple[str, ...], dict[str, str]] = {}
        self._sources: dict[tuple[str, str | None], Source] = {}
        why = rules_url.removesuffix("/rules") + "/why" if rules_url else None
        self._links = {kind: [Link(label="Why this suggestion", url=f"{why}/{kind}", type=LinkType.absolute)]
                       if why else None for kind in texts.cards}

    def build(self, evaluation: Evaluation, issues: list[DataIssue], patient_id: str | None) -> list[ExplainedCard]:
        view = _View(evaluation)
        suggest = bool(patient_id) and not view.holds(self.texts.no_suggestion_when, None)
        cards = [self._card(rec, view, issues, patient_id if suggest else None) for rec in evaluation.recommendations]
        if self.check:
            for explained in cards:
                check_card(explained)
        return cards

    def _card(self, rec: Derived, view: _View, issues: list[DataIssue], patient_id: str | None) -> ExplainedCard:
        text = self.texts.cards[rec.name]
        words = side_words(rec.side)
        facts, findings, rules = view.trace.explain(rec)
        suggestions = None
        if text.suggestion is not None and patient_id:
            suggestions = [self._suggestion(text.suggestion, rec, view, patient_id, text.advice, words)]
        reported = [i for i in issues if i.severity != "information"]
        makers = {(r.id, r.version) for r in rec.rules}
        explanation = Explanation.model_construct(
            recommendation=Recommendation.model_construct(card=rec.name, side=rec.side),
            rules=[self._rule_used(r.id, r.version, (r.id, r.version) in makers) for r in rules],
            facts=[view.fact_used(f) for f in facts],
            findings=[view.finding_used(f) for f in findings],
            thresholds=self._thresholds(tuple(r.id for r in rules)),
            issues=reported[:MAX_EXPLAINED_ISSUES],
            ruleset=self._ruleset_ref)
        listed = [i for i in reported if i.code not in NOTED_ISSUES]
        notes = list(self._notes(rec, view)) + [
            f"{'Not available' if i.code == IssueCode.unavailable else 'Not used'}: {_kind_of(i.resource)} — "
            f"{plain(i.message)}." for i in listed[:MAX_ISSUE_NOTES]]
        if len(listed) > MAX_ISSUE_NOTES:
            notes.append(f"{len(listed) - MAX_ISSUE_NOTES} more records were not used; see the data issues.")
        return ExplainedCard(Card.model_construct(
            uuid=str(uuid.uuid4()),
            summary=text.summary.format(**words),
            detail=self._detail(text, self._own_facts(rec, view), notes, view),
            indicator=Indicator(text.indicator),
            source=self._source(rec),
            suggestions=suggestions,
            selectionBehavior=SelectionBehavior.at_most_one if suggestions else None,
            overrideReasons=list(self._override_reasons) or None,
            links=list(self._links[rec.name] or []) or None,
        ), explanation)

    def _source(self, rec: Derived) -> Source:
        """A kind's source, with the page of the rule that made the card."""
        rule = rec.rules[0].id if rec.rules else None
        found = self._sources.get((rec.name, rule))
        if found is None:
            page = f"{self.rules_url}/{rule}" if self.rules_url and rule else None
            found = self._sources[(rec.name, rule)] = Source(
                label=self.texts.source_label, url=page,
                topic=Coding(system=self.t.local_system, code=rec.name, display=self.texts.cards[rec.name].title))
        return found

    def _rule_used(self, rule_id: str, version: int, recommends: bool) -> RuleUsed:
        key = (rule_id, version, recommends)
        found = self._rules_used.get(key)
        if found is None:
            rule = self.ruleset.rule(rule_id)
            found = self._rules_used[key] = RuleUsed(id=rule_id, version=version, title=rule.title,
                                                     evidence=rule.evidence.grade, recommends=recommends)
        return found

    @staticmethod
    def _own_facts(rec: Derived, view: _View) -> list[InputFact]:
        """The facts a card rests on, less those that only reach it through another card (shown there), and
        less who is asking and how old they are (eligibility, not findings)."""
        trace = view.trace
        facts, _, _ = trace.explain(rec)
        through_cards = {f.id for r in view.evaluation.recommendations if r.id in rec.basis
                         for f in trace.explain(r)[0]}
        own = {f.id for f in trace.explain(rec, [b for b in rec.basis if not b.startswith("recommendation:")])[0]}
        return [f for f in facts if f.kind not in ("audience", "age") and (f.id in own or f.id not in through_cards)]

    def no_cards_reason(self, evaluation: Evaluation) -> str:
        """Why an evaluation gave no cards, in one plain sentence (rules/cards.yaml `no_cards`)."""
        parameters = parameter_words(self.ruleset)
        view = _View(evaluation)
        for reason in self.texts.no_cards:
            fact = view.holds(reason.when, None)
            if fact is not None:
                return reason.text.format(**(parameters | _fields(fact)))
        return "No cards."

    def _suggestion(self, text: SuggestionText, rec: Derived, view: _View, patient_id: str, advice: str,
                    words: dict[str, str]) -> Suggestion:
        """A draft ServiceRequest whose reason is what the record shows (a diagnosis only when one is recorded),
        citing the records behind it."""
        side = rec.side
        reason = self._reason(text, view, side)
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
            "reasonCode": [{"coding": [self._coding(reason.coding)],
                            "text": f"{words['Side']}: {reason.coding.display}"}],
            "bodySite": [body_site],
            "note": [{"text": advice}],
        }
        cited = sorted({f.source for f in view.trace.explain(rec)[0]
                        if f.kind in text.reason_facts and f.source})
        if cited:
            request["reasonReference"] = [{"reference": ref} for ref in cited]
        label = text.label.format(**words)
        return Suggestion.model_construct(label=label, uuid=str(uuid.uuid4()), isRecommended=True, actions=[
            Action.model_construct(type=ActionType.create, description=label, resource=request)])

    @staticmethod
    def _reason(text: SuggestionText, view: _View, side: str | None) -> ReasonText:
        sides = (None,) if side in (None, "bilateral") else (side,)
        return next((r for r in text.reasons if any(view.holds(r.when, s) for s in sides)), text.reasons[-1])

    def _coding(self, coding: Any) -> dict[str, str]:
        return {"system": self.t.system(coding.system), "code": coding.code, "display": coding.display}

    def _thresholds(self, rule_ids: tuple[str, ...]) -> dict[str, str]:
        """The parameters of these rules with their values and meanings (a copy: an explanation owns its own)."""
        found = self._thresholds_of.get(rule_ids)
        if found is None:
            found = self._thresholds_of[rule_ids] = {}
            for rule_id in rule_ids:
                for name in self.ruleset.parameters_of(rule_id):
                    p = self.ruleset.source.parameters[name]
                    found[name] = f"{value_with_unit(p.value, p.unit)} — {p.description}"
        return dict(found)

    def _notes(self, rec: Derived, view: _View) -> Iterator[str]:
        """The notes of rules/cards.yaml whose conditions hold for this card, side by side first."""
        mine = [n for n in self.texts.notes if rec.name in n.cards]
        sides = ("left", "right") if rec.side == "bilateral" else (rec.side,)
        for side in sides:
            for note in (n for n in mine if n.per_side):
                fact = view.holds(note.when, side)
                if fact is not None:
                    yield note.text.format(**(view.fields(fact) | side_words(side)))
        flags = "; ".join(view.describe(f) for f in view.evaluation.facts if f.kind == "red-flag")
        for note in (n for n in mine if not n.per_side):
            fact = view.holds(note.when, None)
            if fact is not None:
                yield note.text.format(**(view.fields(fact) | side_words(rec.side)), red_flags_recorded=flags)

    def _detail(self, text: CardText, facts: list[InputFact], notes: list[str], view: _View) -> str:
        """What a clinician reads in a side panel: what to do, this patient's findings, notes, one evidence line."""
        parts = [text.advice]
        if facts:
            dates = {f.date for f in facts}
            day = dates.pop() if len(dates) == 1 else None
            if day is not None:  # one visit: say its date once
                parts += ["", f"**Findings ({date_words(day)}):** " + "; ".join(f.what() for f in facts) + "."]
            else:
                parts += ["", "**Findings:** " + "; ".join(view.describe(f) for f in facts) + "."]
        if notes:
            parts += [""] + [f"- {n}" for n in notes]
        parts += ["", f"{text.evidence} **{self.texts.disclaimer}**"]
        return "\n".join(parts)


class _View:
    """One evaluation as the cards ask about it: findings by side, facts by side and kind, what each card rests
    on, each fact in words; worked out once per evaluation rather than once per condition or card."""

    def __init__(self, evaluation: Evaluation) -> None:
        self.evaluation = evaluation
        self.trace = Trace(evaluation)
        self.findings = {(f.name, f.side) for f in evaluation.findings}
        self.finding_names = {name for name, _ in self.findings}
        self._sides = [(f, f.__dict__.get("side", _ANY_SIDE)) for f in evaluation.facts]
        self._on_side: dict[str | None, dict[str, InputFact]] = {}
        self._words: dict[str, str] = {}
        self._fields: dict[str, dict[str, Any]] = {}
        self._facts_used: dict[str, FactUsed] = {}
        self._findings_used: dict[str, FindingUsed] = {}

    def has_finding(self, name: str, side: str | None) -> bool:
        return name in self.finding_names if side is None else (name, side) in self.findings

    def kinds_on(self, side: str | None) -> dict[str, InputFact]:
        """The first fact of each kind on `side` or with no side (of all facts for None)."""
        found = self._on_side.get(side)
        if found is None:
            found = self._on_side[side] = {}
            for fact, on in self._sides:
                if side is None or on in (side, _ANY_SIDE):
                    found.setdefault(fact.kind, fact)
        return found

    def holds(self, when: NoteCondition, side: str | None) -> InputFact | Literal[True] | None:
        """Whether a condition holds (on `side`, if given): the matched fact, True, or None when it does not."""
        if when.finding is not None and not self.has_finding(when.finding, side):
            return None
        absent = when.no_finding if isinstance(when.no_finding, list) else [when.no_finding]
        if any(name is not None and self.has_finding(name, side) for name in absent):
            return None
        if when.only_by_rules is not None:
            derived = [f for f in self.evaluation.findings
                       if f.name == when.finding and (side is None or f.side == side)]
            if not derived or any({r.id for r in f.rules} != set(when.only_by_rules) for f in derived):
                return None
        kinds = self.kinds_on(side)
        missing = when.no_fact if isinstance(when.no_fact, list) else [when.no_fact]
        if any(kind in kinds for kind in missing if kind is not None):
            return None
        if when.fact is not None:
            return kinds.get(when.fact)
        return True

    def describe(self, fact: InputFact) -> str:
        """The fact in words, with its date (each card and the explanation name it again)."""
        found = self._words.get(fact.id)
        if found is None:
            found = self._words[fact.id] = fact.describe()
        return found

    def fact_used(self, fact: InputFact) -> FactUsed:
        """The fact as explanations list it; the cards of one response share it (an explanation is not changed)."""
        found = self._facts_used.get(fact.id)
        if found is None:
            found = self._facts_used[fact.id] = FactUsed.model_construct(id=fact.id, source=fact.source,
                                                                   description=self.describe(fact))
        return found

    def finding_used(self, finding: Derived) -> FindingUsed:
        found = self._findings_used.get(finding.id)
        if found is None:
            found = self._findings_used[finding.id] = FindingUsed.model_construct(name=finding.name, side=finding.side)
        return found

    def fields(self, fact: InputFact | Literal[True]) -> dict[str, Any]:
        """A fact's fields as note placeholders (`_fields`), for any number of notes."""
        if isinstance(fact, bool):
            return {}
        found = self._fields.get(fact.id)
        if found is None:
            found = self._fields[fact.id] = _fields(fact)
        return found


_ANY_SIDE = object()  # a fact with no side field applies to either side


def check_card(explained: ExplainedCard) -> None:
    """Validate a constructed card and explanation with every model validator; they must come out unchanged."""
    card = Card.model_validate(explained.card.model_dump())
    explanation = Explanation.model_validate(explained.explanation.model_dump())
    if card != explained.card or explanation != explained.explanation:
        raise AssertionError(f"a constructed card differs from its validated form: {card!r}")


def _kind_of(reference: str) -> str:
    """'Observation/p13-mmt-2' -> 'an Observation': a clinician's panel shows no resource ids."""
    kind = reference.split("/", 1)[0].split(" ", 1)[0]
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind}"


def _fields(fact: InputFact | Literal[True]) -> dict[str, Any]:
    """A fact's fields as note placeholders; text (which may come from the record) made inert for markdown."""
    fields = fact.model_dump() if not isinstance(fact, bool) else {}
    return {k: plain(v) if isinstance(v, str) else v for k, v in fields.items()}


def plain(text: str) -> str:
    """Text from a record as literal markdown: one line (no new paragraph, heading, list or table can start), and
    every character that could open emphasis, a link, an image, code or HTML escaped, so no value in the data
    shapes what the clinician reads."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))
