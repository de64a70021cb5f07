"""A fact as the engine sees it: every fact the example charts give, projected as `model_dump` would project it."""

from __future__ import annotations

import datetime as dt

from cds.clinical.context import Context
from cds.clinical.validate import bundle_resources, validate
from cds.content.terminology import Terminology
from tests.support.paths import example_paths, load_json


def test_the_engine_projection_of_every_example_fact_is_its_dump_without_dates_and_sources(
        terminology: Terminology) -> None:
    kinds = set()
    for path in example_paths():
        validated = validate(bundle_resources(load_json(path)), terminology, Context(today=dt.date(2026, 11, 24)))
        for fact in validated.facts:
            expected = fact.model_dump(exclude={"source", "date"}, exclude_none=True) | {"type": "fact"}
            expected.pop("display", None)  # a described fact's display is for people, not rules
            assert fact.engine_fields() == expected
            assert list(fact.engine_fields())[:-1] == [k for k in expected if k != "type"]  # field order kept
            kinds.add(fact.kind)
    assert len(kinds) >= 8
