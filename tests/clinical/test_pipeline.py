"""The pipeline's decision cache: bounded in bytes as well as entries, and a large evaluation cannot flush it; a
decision leaves no reference cycles behind."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.settings import Settings
from tests.support.builders import example_prefetch
from tests.support.paths import EXAMPLE_DATE, PROJECT_ROOT


def p01_with(note: str) -> list[dict[str, Any]]:
    """P01's resources, one Observation carrying a note of the given text (so each call is unique)."""
    prefetch = example_prefetch()
    observations = [e["resource"] for e in prefetch["observations"]["entry"]]
    observations[0] = observations[0] | {"note": [{"text": note}]}
    return [prefetch["patient"], *observations]


def context() -> Context:
    return Context(today=EXAMPLE_DATE, patient_id="p01", user_id="Practitioner/1", lookback_days=90)


def test_the_cache_stays_under_its_byte_bound_and_keeps_the_newest() -> None:
    pipeline = Pipeline(Settings(decision_cache_size=1000, decision_cache_bytes=400_000))
    calls = [p01_with(f"call {i} " + "x" * 20_000) for i in range(20)]  # each entry about 2 x 30 kB
    for resources in calls:
        pipeline.decide(resources, context())
    cache = pipeline.cache
    assert 0 < cache.bytes <= 400_000
    assert len(cache.entries) < 20
    hits = cache.hits
    pipeline.decide(calls[-1], context())
    assert cache.hits == hits + 1  # the newest is still there
    pipeline.decide(calls[0], context())
    assert cache.hits == hits + 1  # the oldest went


def test_one_evaluation_over_a_quarter_of_the_bound_is_not_kept_and_flushes_nothing() -> None:
    pipeline = Pipeline(Settings(decision_cache_size=1000, decision_cache_bytes=400_000))
    small = p01_with("small")
    pipeline.decide(small, context())
    before = dict(pipeline.cache.entries)
    pipeline.decide(p01_with("y" * 60_000), context())  # about 2 x 70 kB: over 100 kB
    assert dict(pipeline.cache.entries) == before
    hits = pipeline.cache.hits
    pipeline.decide(small, context())
    assert pipeline.cache.hits == hits + 1


def test_the_same_call_on_another_day_is_another_entry() -> None:
    pipeline = Pipeline(Settings(decision_cache_size=10))
    resources = p01_with("same")
    pipeline.decide(resources, context())
    later = Context(today=EXAMPLE_DATE + dt.timedelta(days=1), patient_id="p01", user_id="Practitioner/1",
                    lookback_days=90)
    pipeline.decide(resources, later)
    assert (pipeline.cache.hits, pipeline.cache.misses) == (0, 2)


def test_values_that_differ_only_in_their_json_type_are_two_entries() -> None:
    """The key is the content exactly: 5 and 5.0 (and NaN, written as itself) are different data."""
    pipeline = Pipeline(Settings(decision_cache_size=10))
    integer, decimal = p01_with("same"), p01_with("same")
    for resources, kind in ((integer, int), (decimal, float)):
        quantity = next(r for r in resources[1:] if "valueQuantity" in r)["valueQuantity"]
        quantity["value"] = kind(round(quantity["value"]))
    for resources in (integer, decimal, integer):
        pipeline.decide(resources, context())
    assert (pipeline.cache.hits, pipeline.cache.misses) == (1, 2)


FREED_SCRIPT = """
import gc, json, sys
from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.clinical.validate import bundle_resources
from cds.settings import Settings
from tests.support.paths import EXAMPLE_DATE, PROJECT_ROOT
pipeline, left = Pipeline(Settings(decision_cache_size=0)), {}
for path in sorted((PROJECT_ROOT / "fhir_examples").glob("*.json")):
    text = path.read_text()
    for _ in range(2):  # the first call also fills the content caches
        gc.collect()
        resources = bundle_resources(json.loads(text))
        patient = next((r.get("id") for r in resources if r.get("resourceType") == "Patient"), None)
        pipeline.decide(resources, Context(today=EXAMPLE_DATE, patient_id=patient, user_id="Practitioner/1")).response()
        del resources
        left[path.name] = gc.collect()
print(json.dumps(left))
"""


def test_every_examples_decision_is_freed_by_reference_counting_alone() -> None:
    """A reference cycle (a dict of bound methods on the validation's checker once made one) keeps the whole
    chart alive until the garbage collector walks it: 12 ms more for a 1,000-Observation call, measured. In a
    subprocess, so that no other test's threads make garbage meanwhile."""
    done = subprocess.run([sys.executable, "-c", FREED_SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=True)
    left = json.loads(done.stdout)
    assert len(left) >= 30
    assert {name: n for name, n in left.items() if n} == {}
