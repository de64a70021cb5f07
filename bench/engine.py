"""`make bench`, engine part: durable_rules against the plain-Python evaluation of the same compiled rules,
how the cost grows with rules and with facts, and validation cost per Observation.

Not a test: figures are printed and saved, never asserted (these machines are shared and noisy), and
every figure that matters is a ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cds.clinical.context import Context
from cds.clinical.engine import DurableEngine
from cds.clinical.pipeline import Pipeline
from cds.clinical.reference_engine import evaluate_reference
from cds.clinical.validate import bundle_resources, validate
from cds.content.facts import AgeFact, AudienceFact, HyperextensionFact, InputFact, MmtFact, PainSiteFact
from cds.content.rules import load_rules
from cds.content.terminology import Terminology
from cds.settings import Settings
from tests.support.paths import PROJECT_ROOT

TODAY = dt.date(2026, 11, 24)


def per_call_us(fn: Callable[[], Any], rounds: int = 5, calls: int = 400) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


SYNTHETIC_INPUTS = [("knee-hyperextension", "degrees", True), ("end-range-hhd", "newtons", True),
                    ("hhd-asymmetry", "percent", True), ("age", "years", False), ("pain-score", "score", False)]


def synthetic_rules(count: int, terminology: Terminology, folder: Path) -> Any:
    """`count` one-condition rules spread over five numeric inputs, each with its own value and finding.
    The first 10 match the test patient's hyperextension readings and the rest never match, as in a large
    rule base where a patient touches few rules. Equality, not ranges: durable_rules cannot run more than
    64 range tests that one value meets, nor build more than 512 tests on one input (the compiler refuses)."""
    rules, parameters = [], {}
    for i in range(count):
        kind, prop, lateral = SYNTHETIC_INPUTS[0 if i < 10 else i % len(SYNTHETIC_INPUTS)]
        parameters[f"t{i}"] = {"value": i if i < 10 else 10_000 + i, "unit": "-", "description": "synthetic"}
        condition = {"fact": kind, prop: {"equals": f"t{i}"}} | ({"side": "same"} if lateral else {})
        rules.append({"id": f"S{i}", "version": 1, "status": "active", "title": "synthetic",
                      "evidence": {"grade": "E", "source": "synthetic"}, "when": [condition],
                      "then": [{"derive": f"synthetic-{i}"}]})
    content = {"ruleset": "synthetic", "version": "0.0.1", "parameters": parameters, "rules": rules}
    path = folder / f"synthetic-{count}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return load_rules(path, terminology)


def many_facts(count: int) -> list[InputFact]:
    """An adult, both sides' pain and strength, then hyperextension readings up to `count` facts."""
    base: list[InputFact] = [
        AgeFact(id="age", years=30), AudienceFact(id="audience", role="practitioner"),
        PainSiteFact(id="pain:right", side="right", site="peripatellar"),
        MmtFact(id="mmt:right", kind="end-range-mmt", side="right", grade="4", grade_rank=7)]
    extra = [HyperextensionFact(id=f"hyper:{i}", side="right", degrees=float(i % 15))
             for i in range(count - len(base))]
    return base + extra


def engine_figures(pipeline: Pipeline, cases: list[list[InputFact]]) -> dict[str, Any]:
    engine: DurableEngine = pipeline.engine
    index = {"i": 0}

    def pick() -> list[InputFact]:
        index["i"] = (index["i"] + 1) % len(cases)
        return cases[index["i"]]

    durable_us = per_call_us(lambda: engine.evaluate(pick()))
    plain_us = per_call_us(lambda: evaluate_reference(pipeline.ruleset, pick()))
    return {"durable_rules_us_per_evaluation": round(durable_us, 1),
            "plain_python_us_per_evaluation": round(plain_us, 1),
            "durable_over_plain_python": round(durable_us / plain_us, 2)}


def rule_scaling(terminology: Terminology) -> dict[str, Any]:
    facts = many_facts(14)
    out: dict[str, Any] = {"note": "N rules of which 10 match the patient's 14 facts"}
    with tempfile.TemporaryDirectory() as folder:
        for count in (10, 100, 1000):
            ruleset = synthetic_rules(count, terminology, Path(folder))
            engine = DurableEngine(ruleset)
            out[f"{count}_rules_us"] = round(per_call_us(functools.partial(engine.evaluate, facts), calls=50), 1)
    out["1000_over_10_rules"] = round(out["1000_rules_us"] / out["10_rules_us"], 2)
    return out


def fact_scaling(pipeline: Pipeline) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (10, 100, 1000):
        facts = many_facts(count)
        cost = per_call_us(functools.partial(pipeline.engine.evaluate, facts), calls=10, rounds=3)
        out[f"{count}_facts_us"] = round(cost, 1)
    out["1000_over_10_facts"] = round(out["1000_facts_us"] / out["10_facts_us"], 2)
    return out


def run() -> dict[str, Any]:
    pipeline = Pipeline(Settings())
    paths = sorted((PROJECT_ROOT / "fhir_examples").glob("*.json"))
    bundles = [bundle_resources(json.loads(p.read_text())) for p in paths]
    cases = [validate(b, pipeline.terminology, Context(today=TODAY, user_id="Practitioner/1")).facts for b in bundles]
    observations = [r for b in bundles for r in b if r.get("resourceType") == "Observation"]
    validate_us = per_call_us(lambda: validate(observations, pipeline.terminology, Context(today=TODAY)),
                              calls=20) / len(observations)
    return {"cases": len(cases), "rules_compiled": len(pipeline.ruleset.compiled),
            **engine_figures(pipeline, cases), "rule_scaling": rule_scaling(pipeline.terminology),
            "fact_scaling": fact_scaling(pipeline), "validation_us_per_observation": round(validate_us, 1)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
