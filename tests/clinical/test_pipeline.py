"""The pipeline's decision cache: bounded in bytes as well as entries, and a large evaluation cannot flush it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.settings import Settings
from tests.support.builders import example_prefetch
from tests.support.paths import EXAMPLE_DATE


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
