"""`make bench` (first part): engine and validation cost, as ratios against baselines measured in
the same run. Not a test: the numbers are printed, never asserted (these machines are noisy)."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from cds.engine import DurableEngine
from cds.facts import InputFact
from cds.pipeline import Pipeline
from cds.reference_engine import evaluate_reference
from cds.settings import PROJECT_ROOT, Settings
from cds.validate import Context, bundle_resources, validate

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


def main() -> None:
    pipeline = Pipeline(Settings())
    paths = sorted((PROJECT_ROOT / "fhir_examples").glob("*.json"))
    bundles = [bundle_resources(json.loads(p.read_text())) for p in paths]
    cases: list[list[InputFact]] = [
        validate(b, pipeline.terminology, Context(today=TODAY, user_id="Practitioner/1")).facts for b in bundles]
    engine: DurableEngine = pipeline.engine
    index = {"i": 0}

    def pick() -> list[InputFact]:
        index["i"] = (index["i"] + 1) % len(cases)
        return cases[index["i"]]

    durable_us = per_call_us(lambda: engine.evaluate(pick()))
    plain_us = per_call_us(lambda: evaluate_reference(pipeline.ruleset, pick()))
    observations = [r for b in bundles for r in b if r.get("resourceType") == "Observation"]
    validate_us = per_call_us(lambda: validate(observations, pipeline.terminology, Context(today=TODAY)),
                              calls=20) / len(observations)
    results = {
        "date": TODAY.isoformat(), "cases": len(cases), "rules_compiled": len(pipeline.ruleset.compiled),
        "durable_rules_us_per_evaluation": round(durable_us, 1),
        "reference_us_per_evaluation": round(plain_us, 1),
        "durable_over_reference": round(durable_us / plain_us, 2),
        "validation_us_per_observation": round(validate_us, 1),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
