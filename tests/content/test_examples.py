"""Every example bundle in fhir_examples/ gives the outcome its sibling .expected.yaml states."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds.clinical.cards import ExplainedCard
from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.clinical.validate import bundle_resources
from cds.settings import Settings
from tests.support.contract import assert_cds_response
from tests.support.paths import example_paths, expected_for, load_json

EXAMPLES = example_paths()


def card_key(explained: ExplainedCard) -> dict[str, Any]:
    rec, card = explained.explanation.recommendation, explained.card
    return {"card": rec.card, "side": rec.side, "indicator": card.indicator.value,
            "suggestion": bool(card.suggestions)}


def test_there_is_an_example_for_every_patient_of_the_reference() -> None:
    patients = {p.name.split("-")[0].rstrip("abcd") for p in EXAMPLES}
    assert {f"P{n:02d}" for n in range(1, 16)} <= patients


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_valid_fhir_r4(path: Path) -> None:
    bundle = Bundle.model_validate(load_json(path))
    assert bundle.entry


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_gives_expected_outcome(path: Path, pipeline: Pipeline) -> None:
    expected = expected_for(path)
    if expected.get("concept_maps"):  # a site's own codes: read through that site's ConceptMaps
        pipeline = Pipeline(Settings(concept_maps_dir=path.parent / str(expected["concept_maps"])))
    context = Context(today=dt.date.fromisoformat(str(expected["as_of"])),
                      user_id=expected.get("user", "Practitioner/example"))
    decision = pipeline.decide(bundle_resources(load_json(path)), context)
    assert [card_key(c) for c in decision.cards] == expected["cards"]
    assert_cds_response(decision.response().dump())
    assert decision.validated.has_errors == expected["validate_errors"]
    codes = {i.code for i in decision.validated.issues}
    assert set(expected.get("issues", [])) <= codes
    for name, side in expected.get("findings", []):
        assert (name, side) in decision.evaluation.finding_names()
    if expected["validate_errors"]:
        treatment = {"hip-strengthening", "patellar-glide"}
        assert not [c for c in decision.cards if card_key(c)["card"] in treatment]
