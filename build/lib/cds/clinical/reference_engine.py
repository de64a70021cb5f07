"""The same rules evaluated in plain Python: the test oracle and the benchmark's yardstick.

It reads the very CompiledRule objects the durable_rules engine runs, with naive matching
(every combination of facts), so a disagreement between the two is an engine bug, not a rule
difference.
"""

from __future__ import annotations

import itertools

from cds.clinical.outcome import Collector, Evaluation, RuleRef
from cds.content.facts import EngineValue, InputFact
from cds.content.rules import CompiledRule, RuleSet

EngineFact = dict[str, EngineValue]


def _fire_stage(rules: list[CompiledRule], working: list[EngineFact], collector: Collector) -> None:
    """Fire the stage's rules until nothing new happens (forward chaining to a fixpoint)."""
    fired: set[tuple[str, tuple[str, ...]]] = set()
    progress = True
    while progress:
        progress = False
        for rule in rules:
            if any(any(p.matches(f) for f in working) for p in rule.negatives):
                continue
            candidates = [[f for f in working if p.matches(f)] for p in rule.positives]
            for combo in itertools.product(*candidates):
                basis = tuple(str(f["id"]) for f in combo)
                if (rule.key, basis) in fired:
                    continue
                fired.add((rule.key, basis))
                effects = [(e.verb, e.name, e.side) for e in rule.effects]
                ref = RuleRef(id=rule.rule_id, version=rule.version)
                working.extend(collector.apply(ref, effects, list(basis)))
                progress = True


def evaluate_reference(ruleset: RuleSet, facts: list[InputFact]) -> Evaluation:
    """Evaluate `facts` stage by stage, exactly as the durable_rules engine should."""
    collector = Collector(facts)
    working: list[EngineFact] = [f.engine_fields() for f in facts]
    for stage in range(1, ruleset.stages + 1):
        _fire_stage([r for r in ruleset.compiled if r.stage == stage], working, collector)
    return collector.result()
