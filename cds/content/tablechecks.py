"""Static checks of the decision table, run at start-up and by `hipflex-cds release check`: mistakes that load
and compile but would make the service quietly wrong. Each failure names the file, the line and the rules.

- thresholds out of the order the rule file declares (`order:`), e.g. a borderline above the weak threshold;
- a rule no input can fire: two of its tests on the same input contradict each other (at least 10 and below 5);
- a rule whose card another rule withholds under exactly the same conditions (the card could never be shown);
- input combinations with no outcome: card texts whose `no_cards` reasons can all fail, so a patient could get
  no card and no reason (checked in `cds.content.cardtexts`).
"""

from __future__ import annotations

from collections.abc import Callable

from cds.content.files import ContentError, Location, line_of
from cds.content.rules import CompiledRule, Pattern, RuleSet, Test

Fail = Callable[[str, str], ContentError]


def check_table(ruleset: RuleSet) -> None:
    """Every check of this module over a loaded rule file (the Pipeline runs it at start-up)."""
    def fail(rule_id: str, reason: str) -> ContentError:
        return ContentError(ruleset.path, ruleset.lines.get(rule_id), f"rule {rule_id}: {reason}")

    check_order(ruleset)
    check_reachable(ruleset.compiled, fail)
    check_conflicts(ruleset.compiled, fail)


def check_order(ruleset: RuleSet) -> None:
    """Every `order:` chain names parameters and holds strictly, lowest first (grades by their rank)."""
    path, source, lines, parameters = ruleset.path, ruleset.source, ruleset.locations, ruleset.parameters
    for index, chain in enumerate(source.order):
        loc: Location = ("order", index)
        for name in chain:
            if name not in parameters:
                raise ContentError(path, line_of(lines, loc), f"order.{index}: {name!r} is not a parameter")
        values = [parameters[name] for name in chain]
        for (low, a), (high, b) in zip(zip(chain, values, strict=True), list(zip(chain, values, strict=True))[1:],
                                       strict=False):
            if isinstance(a, str) or isinstance(b, str) or not a < b:
                raise ContentError(path, line_of(lines, loc), f"order.{index}: {low} ({source.parameters[low].value}) "
                                   f"must be below {high} ({source.parameters[high].value})")


def check_reachable(rules: tuple[CompiledRule, ...] | list[CompiledRule], fail: Fail) -> None:
    """No rule asks one input for two things no value can be at once."""
    for rule in rules:
        for pattern in rule.positives:
            for prop in {t.prop for t in pattern.tests}:
                tests = [t for t in pattern.tests if t.prop == prop]
                if not _satisfiable(tests):
                    words = " and ".join(f"{t.op} {t.value}" for t in tests)
                    raise fail(rule.rule_id, f"can never fire: {pattern.kind} {prop} must be {words}")


def check_conflicts(rules: tuple[CompiledRule, ...] | list[CompiledRule], fail: Fail) -> None:
    """No card is recommended by one rule and withheld by another under exactly the same conditions."""
    by_conditions: dict[tuple[Pattern, ...], list[CompiledRule]] = {}
    for rule in rules:
        by_conditions.setdefault(tuple(sorted(rule.patterns, key=repr)), []).append(rule)
    for same in by_conditions.values():
        recommended = {(e.name, e.side): r for r in same for e in r.effects if e.verb == "recommend"}
        for rule in same:
            for effect in (e for e in rule.effects if e.verb == "suppress"):
                maker = recommended.get((effect.name, effect.side))
                if maker is not None and maker.rule_id != rule.rule_id:
                    raise fail(maker.rule_id, f"its card {effect.name!r} is withheld by rule {rule.rule_id} under "
                                              "the very same conditions, so it can never be shown")


def _satisfiable(tests: list[Test]) -> bool:
    """Whether one value can pass every test (equalities and ranges on numbers; words only by equality)."""
    equal = {t.value for t in tests if t.op == "eq"}
    if len(equal) > 1:
        return False
    numeric = [t for t in tests if t.op != "eq" and not isinstance(t.value, str)]
    if equal:
        value = next(iter(equal))
        return (isinstance(value, str) and not numeric) or all(t.holds(value) for t in numeric)
    low = max(((float(t.value), t.op == "gt") for t in numeric if t.op in ("ge", "gt")), default=None)
    high = min(((float(t.value), t.op == "lt") for t in numeric if t.op in ("le", "lt")), default=None)
    if low is None or high is None:
        return True
    return low[0] < high[0] or (low[0] == high[0] and not low[1] and not high[1])
