"""The rule catalog in words: what each rule checks, its thresholds, evidence, history and red flags.

This is what a card's "Why this suggestion" link shows (`/rules/{id}`): it holds no patient data,
only the content of `rules/`, so it is served with authentication on and off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cds.content.rules import Claim, Condition, Rule, RuleSet
from cds.content.terminology import RedFlag, Terminology

UNIT_WORDS = {"mrc-grade": "/5", "a": " years", "deg": "°", "%": " %", "Cel": " °C"}
OPERATOR_WORDS = {"equals": "is", "at_least": "at least", "at_most": "at most", "above": "above", "below": "below",
                  "one_of": "one of"}
SIDE_WORDS = {"same": "on the side being checked", "other": "on the other side", "left": "on the left",
              "right": "on the right", "bilateral": "on both sides"}
STATUS_RULE = ("Which records count: a Condition without clinicalStatus (an encounter diagnosis) counts as current "
               "within its red flag's window, else {days} days from its onset (else recordedDate); refuted and "
               "entered-in-error never count; inactive, remission and resolved do not; a record with no date counts. "
               "SNOMED CT concepts count as listed; their descendants only where a terminology server is set.")


class Threshold(BaseModel):
    name: str
    value: str
    meaning: str


class RulePage(BaseModel):
    id: str
    version: int
    status: str
    title: str
    evidence_grade: str
    evidence: str
    claims: list[Claim]
    checks: list[str]
    then: list[str]
    thresholds: list[Threshold]
    history: list[str]
    red_flags: list[str]
    scenarios: list[str]


def rule_pages(ruleset: RuleSet, terminology: Terminology, coverage: dict[str, list[str]] | None) -> list[RulePage]:
    """Every rule's page: what `/rules` and `hipflex-cds rules --json` give, in one shape."""
    return [rule_page(rule, ruleset, terminology, coverage) for rule in ruleset.source.rules]


def scenario_coverage(report: Path | None) -> dict[str, list[str]] | None:
    """The scenarios that fired each rule label, from a `make test` run's report (None: no report set, or none yet)."""
    if report is None or not report.is_file():
        return None
    coverage: dict[str, list[str]] = json.loads(report.read_text(encoding="utf-8"))
    return coverage


def rule_page(rule: Rule, ruleset: RuleSet, terminology: Terminology,
              coverage: dict[str, list[str]] | None) -> RulePage:
    thresholds = [threshold(name, ruleset) for name in ruleset.parameters_of(rule.id)]
    history = [f"v{c.version} ({c.date}): {c.change}" for c in rule.history] or [f"v{rule.version}: current version"]
    flag_finding = ruleset.source.roles.red_flag_finding if ruleset.source.roles else None
    about_flags = flag_finding is not None and (any(c.finding == flag_finding for c in rule.when)
                                                or any(a.derive == flag_finding for a in rule.then))
    red_flags = [_flag(f, terminology) for f in terminology.red_flags] + [STATUS_RULE.format(
        days=terminology.condition_lookback_days)] if about_flags else []
    label = f"{rule.id} v{rule.version}"
    return RulePage(id=rule.id, version=rule.version, status=rule.status, title=rule.title,
                    evidence_grade=rule.evidence.grade, evidence=rule.evidence.source, claims=rule.evidence.claims,
                    checks=[_condition(c, ruleset) for c in rule.when],
                    then=[_action(a.model_dump()) for a in rule.then],
                    thresholds=thresholds, history=history, red_flags=red_flags,
                    scenarios=(coverage or {}).get(label, []))


def threshold(name: str, ruleset: RuleSet) -> Threshold:
    """A named parameter with its value in units and what it means."""
    parameter = ruleset.source.parameters[name]
    return Threshold(name=name.replace("_", " "), value=value_with_unit(parameter.value, parameter.unit),
                     meaning=parameter.description)


def value_with_unit(value: Any, unit: str) -> str:
    """A parameter's value as a clinician reads it: '4+/5', '15 %', '16 years', '38.0 °C'."""
    return f"{value}{UNIT_WORDS.get(unit, f' {unit}')}"


def _flag(flag: RedFlag, terminology: Terminology) -> str:
    """'recent knee trauma (within 42 days): ICD-10-CM: S80.0 and below, … — source: …; SNOMED CT: 125601008 …'."""
    window = terminology.window_days(flag)
    codes = [i.describe(terminology.system_name(i.system)) for i in terminology.sets[flag.value_set].includes]
    if flag.procedure_on_knee:
        codes.append("any procedure on a knee structure")
    head = f"{flag.display} (within {window} days)" if window else flag.display
    return f"{head}: {'; '.join(c for c in codes if c)}"


def _condition(condition: Condition, ruleset: RuleSet) -> str:
    if condition.fact is not None:
        subject = f"the recorded {condition.fact.replace('-', ' ')}"
    elif condition.finding is not None:
        subject = f"the finding “{condition.finding.replace('-', ' ')}”"
    else:
        subject = f"the card “{str(condition.recommendation).replace('-', ' ')}”"
    side = f" {SIDE_WORDS[condition.side]}" if condition.side else ""
    tests = [_test(prop, spec, ruleset) for prop, spec in condition.tests.items()]
    text = subject + side + (f" with {' and '.join(tests)}" if tests else "")
    return f"there is no {text}" if condition.not_ else text


def _test(prop: str, spec: Any, ruleset: RuleSet) -> str:
    if not isinstance(spec, dict):
        return f"{prop.replace('_', ' ')} {_named(spec, ruleset)}"
    return " and ".join(f"{prop.replace('_', ' ')} {OPERATOR_WORDS.get(op, op)} {_named(raw, ruleset)}"
                        for op, raw in spec.items())


def _named(raw: Any, ruleset: RuleSet) -> str:
    if isinstance(raw, list):
        return ", ".join(_named(r, ruleset) for r in raw)
    parameter = ruleset.source.parameters.get(str(raw))
    if parameter is not None:
        return f"{value_with_unit(parameter.value, parameter.unit)} ({str(raw).replace('_', ' ')})"
    return str(raw)


def _action(action: dict[str, Any]) -> str:
    if action.get("derive"):
        return f"derives the finding “{action['derive'].replace('-', ' ')}”"
    verb = "recommends" if action.get("recommend") else "withholds"
    target = action.get("recommend") or action.get("suppress")
    card = target["card"] if isinstance(target, dict) else target
    return f"{verb} the card “{str(card).replace('-', ' ')}”"
