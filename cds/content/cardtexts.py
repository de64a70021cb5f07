"""The card texts of `rules/cards.yaml`, and the notes a card adds, as checked data.

A note says when it applies in the rule file's own words (findings, rules, facts); loading
refuses a note or card that names something the rules do not have, so renaming a rule or a
finding in YAML stops start-up instead of silently dropping what a clinician reads.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cds.content.facts import fact_fields
from cds.content.files import ContentError, ContentModel, Location, line_of, load_model
from cds.content.rules import RuleSet

SIDE_WORDS = {"left": ("Left knee", "left", "Left"), "right": ("Right knee", "right", "Right"),
              "bilateral": ("Both knees", "both sides", "Both")}


class TextCoding(ContentModel):
    system: str
    code: str
    display: str


class WhyText(ContentModel):
    """What the card's "Why this suggestion" page says in a clinician's words, besides what the rules give
    (thresholds, red flags, graded evidence, versions)."""

    how: list[str] = Field(default_factory=list, description="How to do it: the cues, one per line")
    applies: list[str] = Field(default_factory=list, description="When the suggestion is made, in plain words")
    not_when: list[str] = Field(default_factory=list, description="When not to use it, besides the red flags")


class CardText(ContentModel):
    indicator: Literal["info", "warning", "critical"]
    title: str = Field(min_length=1, description="The card kind's name for clinicians: the topic's display")
    in_scenarios: str = Field(pattern=r"^[a-z][a-z -]*[a-z]$",
                              description="The words for this card kind in Gherkin scenarios, lower case")
    summary: str
    advice: str
    evidence: str
    suggestion: SuggestionText | None = None
    why: WhyText = WhyText()


class NoteCondition(ContentModel):
    """Every part given must hold (on the card's side, for a `per_side` note)."""

    finding: str | None = None
    no_finding: str | list[str] | None = Field(default=None, description="None of these findings")
    fact: str | None = Field(default=None, description="Its fields become placeholders, e.g. {grade}")
    no_fact: str | list[str] | None = Field(default=None, description="None of these facts")
    only_by_rules: list[str] | None = Field(default=None, description="`finding` was derived by these rules alone")


class ReasonText(ContentModel):
    when: NoteCondition = NoteCondition()
    coding: TextCoding


class SuggestionText(ContentModel):
    label: str
    codes: list[TextCoding] = Field(min_length=1)
    body_site: TextCoding
    reasons: list[ReasonText] = Field(min_length=1, description="The first that holds is the order's reasonCode")
    reason_facts: list[str] = Field(default_factory=list, description="Fact kinds cited in reasonReference")


class NoCardsReason(ContentModel):
    when: NoteCondition = NoteCondition()
    text: str


class Note(ContentModel):
    id: str
    cards: list[str] = Field(min_length=1)
    per_side: bool = Field(default=False, description="Checked for each side of the card; {Label} is the side")
    when: NoteCondition = NoteCondition()
    text: str


class CardTexts(ContentModel):
    version: str
    source_label: str
    disclaimer: str
    no_suggestion_when: NoteCondition = Field(default=NoteCondition(),
                                              description="When cards carry no referral suggestion")
    override_reasons: list[dict[str, str]]
    cards: dict[str, CardText]
    notes: list[Note] = Field(default_factory=list)
    findings: dict[str, str] = Field(default_factory=dict, description="Finding name -> clinical words")
    no_cards: list[NoCardsReason] = Field(default_factory=list, description="Why there are no cards, first match")

    def words(self, finding: str, side: str | None = None) -> str:
        """A finding in a clinician's words, with its side."""
        text = self.findings.get(finding, finding.replace("-", " "))
        return f"{side} {text}" if side else text


def side_words(side: str | None) -> dict[str, str]:
    """The {Side}/{side}/{Label} placeholders of card texts."""
    words = SIDE_WORDS.get(side or "", ("Knee", "unspecified side", "Knee"))
    return {"Side": words[0], "side": words[1], "Label": words[2]}


def load_card_texts(path: Path, ruleset: RuleSet, fact_kinds: set[str]) -> CardTexts:
    """Load card texts and check them against the rules: every card exists, summaries fit, notes name real things."""
    texts, lines = load_model(path, CardTexts)
    said: dict[str, str] = {}
    for kind, text in texts.cards.items():
        if text.in_scenarios in said:
            raise ContentError(path, lines.get(("cards", kind, "in_scenarios")),
                               f"cards.{kind}.in_scenarios {text.in_scenarios!r} is already the words for card "
                               f"{said[text.in_scenarios]!r}; scenarios could not tell them apart")
        said[text.in_scenarios] = kind
        for side in ("left", "right", "bilateral", None):
            summary = text.summary.format(**side_words(side))
            if len(summary) >= 140:
                raise ContentError(path, lines.get(("cards", kind, "summary")),
                                   f"cards.{kind}.summary is {len(summary)} characters; the limit is 139")
    produced = {e.name for r in ruleset.compiled for e in r.effects if e.verb != "suppress"}
    for rule in ruleset.compiled:
        for effect in rule.effects:
            if effect.verb == "recommend" and effect.name not in texts.cards:
                raise ContentError(path, None, f"rule {rule.rule_id} recommends card {effect.name!r}, "
                                               f"which has no text in {path.name}")
    known = _Known(path, lines, produced, {r.id for r in ruleset.source.rules}, fact_kinds, set(texts.cards))
    known.condition(("no_suggestion_when",), texts.no_suggestion_when)
    for kind, text in texts.cards.items():
        for index, reason in enumerate(text.suggestion.reasons if text.suggestion else []):
            known.condition(("cards", kind, "suggestion", "reasons", index, "when"), reason.when)
        for fact in text.suggestion.reason_facts if text.suggestion else []:
            known.check(("cards", kind, "suggestion", "reason_facts"), fact, known.facts, "fact")
    for finding in texts.findings:
        known.check(("findings", finding), finding, known.findings, "finding")
    for index, why in enumerate(texts.no_cards):
        known.condition(("no_cards", index, "when"), why.when)
    for index, note in enumerate(texts.notes):
        for card in note.cards:
            known.check(("notes", index, "cards"), card, known.cards, "card")
        known.condition(("notes", index, "when"), note.when)
    _check_placeholders(path, lines, texts, ruleset)
    if not texts.no_cards or texts.no_cards[-1].when != NoteCondition():
        where = ("no_cards", len(texts.no_cards) - 1) if texts.no_cards else ("cards",)
        raise ContentError(path, line_of(lines, where), "no_cards: the last reason must have no `when`, so that "
                           "every combination of findings that gets no card still gets a reason")
    return texts


SIDES = set(side_words(None))
NOTE_EXTRAS = {"red_flags_recorded"}


def parameter_words(ruleset: RuleSet) -> dict[str, Any]:
    """The rule file's parameters as placeholders, and for whole numbers `{name}_minus_one` (ages 16 to 59)."""
    words: dict[str, Any] = {name: p.value for name, p in ruleset.source.parameters.items()}
    words |= {f"{name}_minus_one": p.value - 1 for name, p in ruleset.source.parameters.items()
              if isinstance(p.value, int) and not isinstance(p.value, bool)}
    return words


def _check_placeholders(path: Path, lines: dict[Location, int], texts: CardTexts, ruleset: RuleSet) -> None:
    """Every `{placeholder}` names something the text is formatted with (a rename stops start-up here)."""
    fields = fact_fields()

    def check(loc: Location, text: str, allowed: set[str]) -> None:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is not None and name not in allowed:
                raise ContentError(path, line_of(lines, loc), f"{'.'.join(map(str, loc))}: {{{name}}} is not one "
                                   f"of the placeholders this text gets ({', '.join(sorted(allowed)) or 'none'})")

    for kind, card in texts.cards.items():
        check(("cards", kind, "summary"), card.summary, SIDES)
        if card.suggestion is not None:
            check(("cards", kind, "suggestion", "label"), card.suggestion.label, SIDES)
    for index, note in enumerate(texts.notes):
        own = fields.get(note.when.fact, set()) if note.when.fact else set()
        check(("notes", index, "text"), note.text, SIDES | NOTE_EXTRAS | own)
    for index, reason in enumerate(texts.no_cards):
        own = fields.get(reason.when.fact, set()) if reason.when.fact else set()
        check(("no_cards", index, "text"), reason.text, set(parameter_words(ruleset)) | own)


class _Known:
    """What notes may name, and the file/line error when they name something else."""

    def __init__(self, path: Path, lines: dict[Location, int], findings: set[str], rules: set[str],
                 facts: set[str], cards: set[str]) -> None:
        self.path, self.lines = path, lines
        self.findings, self.rules, self.facts, self.cards = findings, rules, facts, cards

    def check(self, loc: Location, name: str, known: set[str], what: str) -> None:
        if name not in known:
            raise ContentError(self.path, line_of(self.lines, loc),
                               f"{'.'.join(map(str, loc))}: {what} {name!r} is not in the rules")

    def condition(self, loc: Location, when: NoteCondition) -> None:
        absent = when.no_finding if isinstance(when.no_finding, list) else [when.no_finding]
        for name in [when.finding, *absent]:
            if name is not None:
                self.check(loc, name, self.findings, "finding")
        missing = when.no_fact if isinstance(when.no_fact, list) else [when.no_fact]
        for name in (when.fact, *missing):
            if name is not None:
                self.check(loc, name, self.facts, "fact")
        for rule_id in when.only_by_rules or []:
            self.check(loc, rule_id, self.rules, "rule")
