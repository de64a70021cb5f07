"""The clinician's "Why this suggestion" page of a card kind: what a card's link opens.

In clinical words: what the suggestion is and how to do it, when it is made, every threshold of every rule
behind it (followed through the findings and cards those rules depend on, with units), when not to use it
(the red flags in words), the evidence as graded claims with their sources, and the versions. It holds no
patient data, only the content of `rules/`; the analysts' rule pages (`/rules/{id}`) are linked from it.
"""

from __future__ import annotations

from pydantic import BaseModel

from cds.content.cardtexts import CardTexts
from cds.content.catalog import Threshold, threshold
from cds.content.rules import Rule, RuleSet
from cds.content.terminology import Terminology


class Claim(BaseModel):
    claim: str
    grade: str
    source: str


class RuleRef(BaseModel):
    id: str
    version: int
    title: str


class WhyPage(BaseModel):
    card: str
    title: str
    advice: str
    how: list[str]
    applies: list[str]
    thresholds: list[Threshold]
    not_when: list[str]
    red_flags: list[str]
    claims: list[Claim]
    rules: list[RuleRef]
    ruleset: str
    texts_version: str


GRADE_WORDS = {"A": "strong", "B": "moderate", "C": "weak", "C/D": "weak to conflicting", "D": "conflicting",
               "E": "theoretical or foundational", "F": "expert opinion"}


def rules_behind(card: str, ruleset: RuleSet) -> list[Rule]:
    """Every rule a card of this kind can rest on: those that recommend it, then, followed back, those that
    derive a finding or make a card they test (for or against), in file order."""
    rules = ruleset.source.rules
    wanted = {r.id for r in rules if any(_recommends(a.recommend, card) for a in r.then)}
    frontier = list(wanted)
    while frontier:
        rule = ruleset.rule(frontier.pop())
        for condition in rule.when:
            for other in rules:
                if other.id not in wanted and any(
                        (condition.finding and a.derive == condition.finding)
                        or (condition.recommendation and _recommends(a.recommend, str(condition.recommendation)))
                        for a in other.then):
                    wanted.add(other.id)
                    frontier.append(other.id)
    return [r for r in rules if r.id in wanted and r.status == "active"]


def _recommends(target: object, card: str) -> bool:
    return target == card or getattr(target, "card", None) == card


def why_page(card: str, texts: CardTexts, ruleset: RuleSet, terminology: Terminology) -> WhyPage:
    text = texts.cards[card]
    behind = rules_behind(card, ruleset)
    names: list[str] = []
    for rule in behind:
        names += [n for n in ruleset.parameters_of(rule.id) if n not in names]
    makers = [r for r in behind if any(_recommends(a.recommend, card) for a in r.then)]
    claims = [Claim(claim=c.claim, grade=f"{c.grade} ({GRADE_WORDS.get(c.grade, c.grade)})", source=c.source)
              for r in makers for c in r.evidence.claims] or [
        Claim(claim=r.title, grade=f"{r.evidence.grade} ({GRADE_WORDS.get(r.evidence.grade, r.evidence.grade)})",
              source=r.evidence.source) for r in makers]
    flags = [f"{f.display} (within {days} days)" if (days := terminology.window_days(f)) else f.display
             for f in terminology.red_flags]
    return WhyPage(card=card, title=text.title, advice=" ".join(text.advice.split()),
                   how=text.why.how, applies=text.why.applies,
                   thresholds=[threshold(n, ruleset) for n in names], not_when=text.why.not_when,
                   red_flags=flags, claims=claims,
                   rules=[RuleRef(id=r.id, version=r.version, title=r.title) for r in behind],
                   ruleset=f"{ruleset.source.ruleset} {ruleset.source.version}", texts_version=texts.version)
