"""Rule files in `rules/`: their pydantic models, and compilation into engine-neutral rules.

A rule file is clinical content written by people (see the header of `rules/knee-hip-v1.yaml`).
Compilation resolves parameters, expands `side: same/other` into one rule per side, expands
`one_of` into one rule per value (durable_rules mis-handles `|` inside joins, issue #308) and
assigns each rule a *stage* so that negation is only ever applied to facts that are complete:
a rule that says "there is no X" runs in a later stage than every rule that derives X.
Every mistake is reported as a ContentError naming file and line.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cds.content.facts import EngineValue, fact_properties
from cds.content.files import ContentError, ContentModel, Location, line_of, load_model
from cds.content.terminology import Terminology

SIDES = ("left", "right")
OPERATORS = ("equals", "at_least", "at_most", "above", "below", "one_of")
Status = Literal["active", "draft", "retired"]


class Parameter(ContentModel):
    value: str | int | float
    unit: str
    description: str


GRADE_ORDER = "ABCDEF"


def weakest(grades: list[str]) -> str:
    """The weakest of several grades ('C/D' counts as D): a recommendation is only as strong as its weakest claim."""
    letters = [letter for grade in grades for letter in grade if letter in GRADE_ORDER]
    return max(letters, key=GRADE_ORDER.index) if letters else grades[0]


class Claim(ContentModel):
    claim: str
    grade: str
    source: str


class Evidence(ContentModel):
    grade: str = Field(description="JOSPT CPG style: A strong … F expert opinion, or 'regulatory'; with claims, "
                                   "the weakest of them")
    source: str
    claims: list[Claim] = Field(default_factory=list, description="Each part of the recommendation, graded")

    @model_validator(mode="after")
    def _grade_is_the_weakest_claim(self) -> Evidence:
        if self.claims and self.grade != weakest([c.grade for c in self.claims]):
            raise ValueError(f"grade {self.grade} is not the weakest of its claims "
                             f"({weakest([c.grade for c in self.claims])})")
        return self


class Condition(BaseModel):
    """One `when:` line: exactly one of fact / finding / recommendation, plus tests."""

    model_config = ConfigDict(extra="allow", frozen=True)

    fact: str | None = None
    finding: str | None = None
    recommendation: str | None = None
    side: Literal["same", "other", "left", "right", "bilateral"] | None = None
    not_: bool = Field(default=False, alias="not")

    @model_validator(mode="after")
    def _one_subject(self) -> Condition:
        named = [n for n in (self.fact, self.finding, self.recommendation) if n is not None]
        if len(named) != 1:
            raise ValueError("a condition names exactly one of fact, finding, recommendation")
        return self

    @property
    def tests(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CardTarget(ContentModel):
    card: str
    side: Literal["left", "right", "bilateral"] | None = None


class Action(ContentModel):
    derive: str | None = None
    recommend: str | CardTarget | None = None
    suppress: CardTarget | None = None

    @model_validator(mode="after")
    def _one_verb(self) -> Action:
        if sum(v is not None for v in (self.derive, self.recommend, self.suppress)) != 1:
            raise ValueError("an action is exactly one of derive, recommend, suppress")
        return self


class Change(ContentModel):
    version: int = Field(ge=1)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    change: str


class Rule(ContentModel):
    id: str = Field(pattern=r"^[A-Z][A-Za-z0-9-]*$")
    version: int = Field(ge=1)
    status: Status
    title: str
    evidence: Evidence
    when: list[Condition] = Field(min_length=1)
    then: list[Action] = Field(min_length=1)
    history: list[Change] = Field(default_factory=list, description="What changed in each version, newest first")


class Roles(ContentModel):
    """The findings the code itself relies on, named here so that renaming one in the rules without updating its
    role stops start-up (at this line) instead of quietly changing what the code counts."""

    scope_finding: str = Field(description="Derived when a patient and user are in scope (population runs count "
                                           "the rest as out of scope)")
    red_flag_finding: str = Field(description="Derived when a red flag is recorded (its rules' pages list the flags)")


class RuleFile(ContentModel):
    ruleset: str
    version: str
    roles: Roles | None = Field(default=None, description="Without it (a synthetic file) nothing is counted out of "
                                                           "scope and no page lists red flags")
    parameters: dict[str, Parameter]
    order: list[list[str]] = Field(default_factory=list, description="Parameters that must stand in this order, "
                                                                     "lowest first (checked at load)")
    rules: list[Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id} is used twice")
            seen.add(rule.id)
        return rules


# ---- compiled, engine-neutral form -------------------------------------------------------

Op = Literal["eq", "ge", "le", "gt", "lt"]
_OP_OF = {"equals": "eq", "at_least": "ge", "at_most": "le", "above": "gt", "below": "lt"}


@dataclass(frozen=True)
class Test:
    prop: str
    op: Op
    value: EngineValue

    def holds(self, actual: EngineValue | None) -> bool:
        """Plain-Python meaning of the test (the reference engine and the docs agree on this)."""
        if actual is None:
            return False
        if self.op == "eq":
            return actual == self.value
        if isinstance(actual, str) or isinstance(self.value, str):
            return False
        return {
            "ge": actual >= self.value,
            "le": actual <= self.value,
            "gt": actual > self.value,
            "lt": actual < self.value,
        }[self.op]


@dataclass(frozen=True)
class Pattern:
    type: Literal["fact", "finding", "recommendation"]
    kind: str
    side: str | None
    negated: bool
    tests: tuple[Test, ...]

    def matches(self, fact: dict[str, EngineValue]) -> bool:
        if fact.get("type") != self.type or fact.get("kind") != self.kind:
            return False
        if self.side is not None and fact.get("side") != self.side:
            return False
        return all(t.holds(fact.get(t.prop)) for t in self.tests)


@dataclass(frozen=True)
class Effect:
    verb: Literal["derive", "recommend", "suppress"]
    name: str
    side: str | None


@dataclass(frozen=True)
class CompiledRule:
    key: str  # unique engine name, e.g. "R3@1#right/0"
    rule_id: str
    version: int
    title: str
    side: str | None
    stage: int
    patterns: tuple[Pattern, ...]
    effects: tuple[Effect, ...]

    @property
    def positives(self) -> tuple[Pattern, ...]:
        return tuple(p for p in self.patterns if not p.negated)

    @property
    def negatives(self) -> tuple[Pattern, ...]:
        return tuple(p for p in self.patterns if p.negated)


@dataclass(frozen=True)
class RuleSet:
    """The loaded rule file plus its compiled rules; what engines and the catalog consume."""

    path: Path
    source: RuleFile
    compiled: tuple[CompiledRule, ...]
    parameters: dict[str, EngineValue]
    lines: dict[str, int]  # rule id -> its line
    locations: dict[Location, int] = field(default_factory=dict)  # every key of the file -> its line

    @property
    def stages(self) -> int:
        return max(r.stage for r in self.compiled)

    def rule(self, rule_id: str) -> Rule:
        return self._rules_by_id[rule_id]

    @functools.cached_property
    def _rules_by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.source.rules}

    def active(self) -> list[Rule]:
        return [r for r in self.source.rules if r.status == "active"]

    def parameters_of(self, rule_id: str) -> list[str]:
        """Names of the parameters a rule's conditions compare against, in file order (each card asks for its
        rules' on every call: worked out once per rule)."""
        return self._parameters[rule_id]

    @functools.cached_property
    def _parameters(self) -> dict[str, list[str]]:
        return {r.id: self._parameters_in(r) for r in self.source.rules}

    def _parameters_in(self, rule: Rule) -> list[str]:
        names: list[str] = []
        for cond in rule.when:
            for spec in cond.tests.values():
                values = spec.values() if isinstance(spec, dict) else [spec]
                for value in values:
                    for item in value if isinstance(value, list) else [value]:
                        if isinstance(item, str) and item in self.source.parameters and item not in names:
                            names.append(item)
        return names


class _Compiler:
    def __init__(self, path: Path, source: RuleFile, lines: dict[Location, int],
                 terminology: Terminology) -> None:
        self.path, self.source, self.lines = path, source, lines
        self.terminology = terminology
        self.properties = fact_properties()
        self.parameters = {name: self._parameter(name, p) for name, p in source.parameters.items()}

    def fail(self, loc: Location, reason: str) -> ContentError:
        return ContentError(self.path, line_of(self.lines, loc), reason)

    def _parameter(self, name: str, parameter: Parameter) -> EngineValue:
        if parameter.unit == "mrc-grade":
            rank = self.terminology.grade_rank(str(parameter.value))
            if rank is None:
                raise self.fail(("parameters", name, "value"),
                                f"parameter {name}: {parameter.value!r} is not an MRC grade")
            return rank
        if not isinstance(parameter.value, int | float):
            raise self.fail(("parameters", name, "value"),
                            f"parameter {name}: a {parameter.unit} value must be a number")
        return parameter.value

    def _value(self, loc: Location, raw: Any) -> EngineValue:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise self.fail(loc, f"{raw!r} is not a number, a word or a parameter name")
        if isinstance(raw, str) and raw in self.parameters:
            return self.parameters[raw]
        return raw

    def _tests(self, loc: Location, cond: Condition) -> list[list[Test]]:
        """Alternatives (from one_of) of conjunctions of tests for one condition."""
        alternatives: list[list[Test]] = [[]]
        for prop, spec in cond.tests.items():
            here = (*loc, prop)
            if cond.fact is None:
                raise self.fail(here, f"only facts have properties to test; {prop!r} is not allowed")
            types = self.properties.get(cond.fact, {})
            if prop not in types:
                known = ", ".join(sorted(types)) or "none"
                raise self.fail(here, f"fact {cond.fact} has no property {prop!r} (known: {known})")
            if not isinstance(spec, dict):
                alternatives = [[*a, Test(prop, "eq", self._value(here, spec))] for a in alternatives]
                continue
            for op, raw in spec.items():
                if op not in OPERATORS:
                    raise self.fail(here, f"unknown comparison {op!r} (use {', '.join(OPERATORS)})")
                if op == "one_of":
                    if not isinstance(raw, list) or not raw:
                        raise self.fail(here, "one_of takes a non-empty list")
                    values = [self._value(here, v) for v in raw]
                    alternatives = [[*a, Test(prop, "eq", v)] for a in alternatives for v in values]
                else:
                    test = Test(prop, _OP_OF[op], self._value(here, raw))  # type: ignore[arg-type]
                    if test.op != "eq" and (isinstance(test.value, str) or types[prop] != "number"):
                        raise self.fail(here, f"{op} needs a number property and a number or numeric parameter "
                                              f"({prop!r} is {types[prop]})")
                    alternatives = [[*a, test] for a in alternatives]
        return alternatives

    def _check_subject(self, loc: Location, cond: Condition) -> None:
        if cond.fact is not None and cond.fact not in self.properties:
            known = ", ".join(sorted(self.properties))
            raise self.fail((*loc, "fact"), f"unknown fact {cond.fact!r} (known: {known})")

    def compile_rule(self, index: int, rule: Rule) -> list[CompiledRule]:
        loc: Location = ("rules", index)
        sided = any(c.side in ("same", "other") for c in rule.when)
        out: list[CompiledRule] = []
        for side in SIDES if sided else (None,):
            per_condition: list[list[Pattern]] = []
            for c_index, cond in enumerate(rule.when):
                c_loc = (*loc, "when", c_index)
                self._check_subject(c_loc, cond)
                per_condition.append(self._patterns(c_loc, cond, side))
            effects = tuple(self._effect(a, side) for a in rule.then)
            for n, combo in enumerate(itertools.product(*per_condition)):
                key = f"{rule.id}@{rule.version}#{side or 'any'}/{n}"
                out.append(CompiledRule(key, rule.id, rule.version, rule.title, side, 0,
                                        tuple(combo), effects))
        return out

    def _patterns(self, loc: Location, cond: Condition, side: str | None) -> list[Pattern]:
        if cond.fact is not None:
            kind, ptype = cond.fact, "fact"
        elif cond.finding is not None:
            kind, ptype = cond.finding, "finding"
        else:
            kind, ptype = str(cond.recommendation), "recommendation"
        concrete = {"same": side, "other": _other(side)}.get(cond.side or "", cond.side)
        alternatives = self._tests(loc, cond)
        if cond.not_ and len(alternatives) > 1:
            raise self.fail(loc, "one_of cannot be combined with not")
        return [Pattern(ptype, kind, concrete, cond.not_, tuple(a))  # type: ignore[arg-type]
                for a in alternatives]

    @staticmethod
    def _effect(action: Action, side: str | None) -> Effect:
        if action.derive is not None:
            return Effect("derive", action.derive, side)
        target = action.recommend if action.recommend is not None else action.suppress
        verb: Literal["recommend", "suppress"] = (
            "recommend" if action.recommend is not None else "suppress")
        if isinstance(target, CardTarget):
            return Effect(verb, target.card, target.side or side)
        return Effect(verb, str(target), side)


def _other(side: str | None) -> str | None:
    return {"left": "right", "right": "left"}.get(side or "")


def _produced(rule: CompiledRule) -> set[tuple[str, str]]:
    kinds = {"derive": "finding", "recommend": "recommendation"}
    return {(kinds[e.verb], e.name) for e in rule.effects if e.verb in kinds}


def _stratify(rules: list[CompiledRule], fail: Any) -> list[CompiledRule]:
    """Assign stages so that every negated kind is complete before the rule that negates it."""
    stage = {r.key: 1 for r in rules}
    for _ in range(len(rules) + 2):
        kind_stage: dict[tuple[str, str], int] = {}
        for r in rules:
            for produced in _produced(r):
                kind_stage[produced] = max(kind_stage.get(produced, 0), stage[r.key])
        changed = False
        for r in rules:
            need = max([1] + [kind_stage.get((p.type, p.kind), 0) + (1 if p.negated else 0)
                              for p in r.patterns if p.type != "fact"])
            if need > len(rules) + 1:
                raise fail(r.rule_id, "rules depend on each other through 'not' in a cycle")
            if need != stage[r.key]:
                stage[r.key], changed = need, True
        if not changed:
            return [CompiledRule(r.key, r.rule_id, r.version, r.title, r.side, stage[r.key],
                                 r.patterns, r.effects) for r in rules]
    bad = max(rules, key=lambda r: stage[r.key])
    raise fail(bad.rule_id, "rules depend on each other through 'not' in a cycle")


def _check_references(rules: list[CompiledRule], fail: Any) -> None:
    """A condition on a finding or card that no active rule produces is almost always a typo."""
    produced = set().union(*(_produced(r) for r in rules)) if rules else set()
    for r in rules:
        for p in r.patterns:
            if p.type != "fact" and (p.type, p.kind) not in produced:
                raise fail(r.rule_id, f"{p.type} {p.kind!r} is not produced by any active rule")


def _check_roles(source: RuleFile, lines: dict[Location, int], path: Path) -> None:
    derived = {a.derive for r in source.rules for a in r.then if a.derive}
    for role, finding in (source.roles.model_dump() if source.roles else {}).items():
        if finding not in derived:
            raise ContentError(path, line_of(lines, ("roles", role)),
                               f"roles.{role}: no rule derives the finding {finding!r}")


def load_rules(path: Path, terminology: Terminology, *, include_drafts: bool = False) -> RuleSet:
    """Load, check and compile one rule file; a mistake raises ContentError with file and line."""
    source, lines = load_model(path, RuleFile)
    compiler = _Compiler(path, source, lines, terminology)
    rule_lines = {r.id: line_of(lines, ("rules", i)) or 0 for i, r in enumerate(source.rules)}

    def fail(rule_id: str, reason: str) -> ContentError:
        return ContentError(path, rule_lines.get(rule_id), f"rule {rule_id}: {reason}")

    wanted = {"active", "draft"} if include_drafts else {"active"}
    compiled: list[CompiledRule] = []
    for index, rule in enumerate(source.rules):
        if rule.status in wanted:
            compiled.extend(compiler.compile_rule(index, rule))
    _check_roles(source, lines, path)
    _check_references(compiled, fail)
    return RuleSet(path, source, tuple(_stratify(compiled, fail)), compiler.parameters, rule_lines, lines)
