"""What an evaluation of the rules produces: findings and recommendations, each with its trace.

Both engines (durable_rules and the plain-Python reference) fill these models, so the cards
layer never knows which one ran.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from cds.clinical.explanation import rule_label
from cds.content.facts import EngineValue, InputFact


class RuleRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    version: int

    def __str__(self) -> str:
        return rule_label(self.id, self.version)


class Derived(BaseModel):
    """A finding (derive) or a recommendation (recommend) produced by one or more rules."""

    id: str
    name: str = Field(description="Finding name or card kind")
    side: str | None = None
    rules: list[RuleRef] = Field(default_factory=list)
    basis: list[str] = Field(default_factory=list, description="ids of the facts/findings it rests on")

    def add(self, rule: RuleRef, basis: list[str]) -> None:
        if rule not in self.rules:
            self.rules.append(rule)
        self.basis.extend(b for b in basis if b not in self.basis)


class Evaluation(BaseModel):
    facts: list[InputFact]
    findings: list[Derived]
    recommendations: list[Derived] = Field(description="After suppression, in firing order")
    suppressed: list[Derived] = Field(default_factory=list)
    _explained: dict[tuple[str, tuple[str, ...]], tuple[list[InputFact], list[Derived], list[RuleRef]]] = \
        PrivateAttr(default_factory=dict)

    def finding_names(self) -> set[tuple[str, str | None]]:
        return {(f.name, f.side) for f in self.findings}

    def explain(self, item: Derived) -> tuple[list[InputFact], list[Derived], list[RuleRef]]:
        """Every input fact, finding and rule a recommendation rests on, transitively. Worked out once per item
        (a card asks several times: its facts, its own facts, its reasons, the rules behind it); an evaluation is
        not changed once made."""
        key = (item.id, tuple(item.basis))
        if key not in self._explained:
            self._explained[key] = self._explain(item)
        return self._explained[key]

    def _explain(self, item: Derived) -> tuple[list[InputFact], list[Derived], list[RuleRef]]:
        by_id: dict[str, Derived] = {d.id: d for d in [*self.findings, *self.recommendations,
                                                         *self.suppressed]}
        facts_by_id = {f.id: f for f in self.facts}
        facts: dict[str, InputFact] = {}
        findings: dict[str, Derived] = {}
        rules: dict[tuple[str, int], RuleRef] = {(r.id, r.version): r for r in item.rules}
        pending = list(item.basis)
        while pending:
            ident = pending.pop()
            if ident in facts_by_id:
                facts[ident] = facts_by_id[ident]
            elif ident in by_id and ident not in findings:
                derived = by_id[ident]
                findings[ident] = derived
                rules |= {(r.id, r.version): r for r in derived.rules if (r.id, r.version) not in rules}
                pending.extend(derived.basis)
        ordered_facts = [f for f in self.facts if f.id in facts]
        ordered_findings = [f for f in self.findings if f.id in findings]
        return ordered_facts, ordered_findings, list(rules.values())


class Collector:
    """Applies rule effects for one evaluation; shared by both engines so they cannot diverge.

    A finding or card is keyed by (name, side): when a second rule (or the same rule on other
    facts) derives it again, the rule and basis are added to the existing one instead of
    asserting a duplicate fact, which durable_rules would reject (MessageObservedException).
    """

    def __init__(self, facts: list[InputFact]) -> None:
        self.facts = facts
        self.findings: dict[tuple[str, str | None], Derived] = {}
        self.recommendations: dict[tuple[str, str | None], Derived] = {}
        self.suppressions: set[tuple[str, str | None]] = set()

    def apply(self, rule: RuleRef, effects: Sequence[tuple[str, str, str | None]],
              basis: list[str]) -> list[dict[str, EngineValue]]:
        """Apply (verb, name, side) effects; return the engine facts that are new."""
        new: list[dict[str, EngineValue]] = []
        for verb, name, side in effects:
            if verb == "suppress":
                self.suppressions.add((name, side))
                continue
            store, prefix = ((self.findings, "finding") if verb == "derive"
                             else (self.recommendations, "recommendation"))
            existing = store.get((name, side))
            if existing is not None:
                existing.add(rule, basis)
                continue
            ident = f"{prefix}:{name}:{side or '-'}"
            # from the compiled rules and the engine's fact ids: already the model's types, not validated again
            store[(name, side)] = Derived.model_construct(id=ident, name=name, side=side, rules=[rule],
                                                          basis=list(basis))
            fact: dict[str, EngineValue] = {"id": ident, "type": prefix, "kind": name}
            if side is not None:
                fact["side"] = side
            new.append(fact)
        return new

    def result(self) -> Evaluation:
        kept = [r for k, r in self.recommendations.items() if k not in self.suppressions]
        dropped = [r for k, r in self.recommendations.items() if k in self.suppressions]
        return Evaluation.model_construct(facts=self.facts, findings=list(self.findings.values()),
                                          recommendations=kept, suppressed=dropped)  # models made above
