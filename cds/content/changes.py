"""What changed between two rule files, in the words of the rule pages: parameters with their old and new values,
rules added, removed or changed (with what changed), and the changed rules that kept their version, which a
release may not have (a stored card names rule ids and versions: the same label must mean the same rule).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cds.content.catalog import value_with_unit
from cds.content.rules import RuleSet


class ParameterChange(BaseModel):
    name: str
    words: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        return f"{self.words} threshold {self.old or '(none)'} → {self.new or '(none)'}"


class RuleChange(BaseModel):
    rule: str
    old_version: int | None
    new_version: int | None
    what: list[str]

    def __str__(self) -> str:
        if self.old_version is None:
            return f"{self.rule} v{self.new_version} added"
        if self.new_version is None:
            return f"{self.rule} v{self.old_version} removed"
        return f"{self.rule} v{self.old_version} → v{self.new_version}: {'; '.join(self.what)}"


class Changes(BaseModel):
    parameters: list[ParameterChange]
    rules: list[RuleChange]
    kept_version: list[RuleChange]  # changed, same version: a release must refuse these


def compare(old: RuleSet, new: RuleSet) -> Changes:
    """The changes from `old` to `new`; a rule counts as changed when its definition or the value of a parameter
    it uses differs (its history and title do not count)."""
    parameters = [_parameter_change(name, old, new) for name in sorted(set(old.source.parameters)
                                                                       | set(new.source.parameters))]
    parameters = [p for p in parameters if p.old != p.new]
    old_rules, new_rules = {r.id: r for r in old.source.rules}, {r.id: r for r in new.source.rules}
    rules: list[RuleChange] = []
    for rule_id in [*old_rules, *(r for r in new_rules if r not in old_rules)]:
        before, after = old_rules.get(rule_id), new_rules.get(rule_id)
        if before is None or after is None:
            rules.append(RuleChange(rule=rule_id, old_version=before.version if before else None,
                                    new_version=after.version if after else None, what=[]))
            continue
        what = _differences(_definition(old, rule_id), _definition(new, rule_id))
        if what:
            rules.append(RuleChange(rule=rule_id, old_version=before.version, new_version=after.version, what=what))
    kept = [c for c in rules if c.old_version is not None and c.old_version == c.new_version]
    return Changes(parameters=parameters, rules=rules, kept_version=kept)


def _parameter_change(name: str, old: RuleSet, new: RuleSet) -> ParameterChange:
    def shown(ruleset: RuleSet) -> str | None:
        p = ruleset.source.parameters.get(name)
        return value_with_unit(p.value, p.unit) if p is not None else None

    return ParameterChange(name=name, words=name.replace("_", " "), old=shown(old), new=shown(new))


def _definition(ruleset: RuleSet, rule_id: str) -> dict[str, Any]:
    rule = ruleset.rule(rule_id)
    used = {name: value_with_unit(ruleset.source.parameters[name].value, ruleset.source.parameters[name].unit)
            for name in ruleset.parameters_of(rule_id)}
    return {"status": rule.status, "when": [c.model_dump(exclude_none=True) for c in rule.when],
            "then": [a.model_dump(exclude_none=True) for a in rule.then], "parameters": used}


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    what = []
    if before["status"] != after["status"]:
        what.append(f"status {before['status']} → {after['status']}")
    if before["when"] != after["when"]:
        what.append("conditions changed")
    if before["then"] != after["then"]:
        what.append("actions changed")
    for name in sorted(set(before["parameters"]) | set(after["parameters"])):
        old, new = before["parameters"].get(name), after["parameters"].get(name)
        if old != new:
            what.append(f"{name.replace('_', ' ')} {old or '(not used)'} → {new or '(not used)'}")
    return what
