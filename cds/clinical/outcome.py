"""What an evaluation of the rules produces: findings and recommendations, each with its trace.

Both engines (durable_rules and the plain-Python reference) fill these models, so the cards
layer never knows which one ran.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

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
        if all(r.id != rule.id or r.version != rule.version for r in self.rules):  # not pydantic's __eq__
            self.rules.append(rule)
        self.basis.extend(b for b in basis if b not in self.basis)


class Evaluation(BaseModel):
    facts: list[InputFact]
    findings: list[Derived]
    recommendations: list[Derived] = Field(description="After suppression, in firing order")
    suppressed: list[Derived] = Field(default_factory=list)

    def finding_names(self) -> set[tuple[str, str | None]]:
        return {(f.name, f.side) for f in self.findings}


Explained = tuple[list[InputFact], list[Derived], list[RuleRef]]


class Trace:
    """What the recommendations of one evaluation rest on, transitively: input facts, findings and rules.

    A card asks several times (its facts, its own facts, its reasons, the rules behind it), so the indexes are
    made once per evaluation and each answer is worked out once; an evaluation is not changed once made. A
    plain class, not a model field: pydantic's private attributes cost a lookup through `__getattr__` each.
    """

    def __init__(self, evaluation: Evaluation) -> None:
        self.evaluation = evaluation
        self._derived = {d.id: d for d in [*evaluation.findings, *evaluation.recommendations,
                                           *evaluation.suppressed]}
        self._facts = {f.id: f for f in evaluation.facts}
        self._explained: dict[tuple[str, tuple[str, ...]], Explained] = {}

    def explain(self, item: Derived, basis: list[str] | None = None) -> Explained:
        """The facts, findings and rules behind `item` (through `basis` instead of the item's own, if given),
        each list in the evaluation's order."""
        key = (item.id, tuple(item.basis if basis is None else basis))
        found = self._explained.get(key)
        if found is None:
            found = self._explained[key] = self._explain(item, key[1])
        return found

    def _explain(self, item: Derived, basis: tuple[str, ...]) -> Explained:
        facts: set[str] = set()
        findings: set[str] = set()
        rules: dict[tuple[str, int], RuleRef] = {(r.id, r.version): r for r in item.rules}
        pending = list(basis)
        while pending:
            ident = pending.pop()
            if ident in self._facts:
                facts.add(ident)
            elif ident in self._derived and ident not in findings:
                derived = self._derived[ident]
                findings.add(ident)
                rules |= {(r.id, r.version): r for r in derived.rules if (r.id, r.version) not in rules}
                pending.extend(derived.basis)
        return ([f for f in self.evaluation.facts if f.id in facts],
                [f for f in self.evaluation.findings if f.id in findings], list(rules.values()))


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
