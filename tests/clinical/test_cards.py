"""Cards follow the CDS Hooks 2.0 response rules and carry careful, explained clinical text."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from cds.clinical.cards import CardBuilder, check_card
from cds.clinical.context import Context
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.response import Card, Indicator, Source, Suggestion
from cds.clinical.validate import bundle_resources
from cds.content.cardtexts import load_card_texts
from cds.content.facts import fact_properties
from cds.content.files import ContentError
from cds.content.rules import RuleSet
from tests.support.paths import EXAMPLES, RULES, example_paths, load_json


def decide(pipeline: Pipeline, name: str, user: str = "Practitioner/1") -> Decision:
    path = next(p for p in example_paths() if p.name.startswith(name))
    return pipeline.decide(bundle_resources(load_json(path)), Context(today=dt.date(2026, 11, 24), user_id=user))


def all_cards(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [c for p in example_paths() for c in decide(pipeline, p.stem).response().dump()["cards"]]


def test_every_card_keeps_the_response_rules(pipeline: Pipeline) -> None:
    cards = all_cards(pipeline)
    assert len(cards) > 10
    uuids = [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert len(set(uuids)) == len(uuids)
    for card in cards:
        uuid.UUID(card["uuid"])
        assert len(card["summary"]) < 140
        assert card["indicator"] in {"info", "warning", "critical"}
        assert card["source"]["label"]
        assert all(r["display"] for r in card["overrideReasons"])
        if "suggestions" in card:
            assert card["selectionBehavior"] == "at-most-one"
            for action in (a for s in card["suggestions"] for a in s["actions"]):
                assert action["type"] == "create"
                assert action["description"]
        assert None not in card.values()
        assert [] not in card.values()


def test_p01_suggestions_are_valid_draft_service_requests(pipeline: Pipeline) -> None:
    decision = decide(pipeline, "P01")
    codes = []
    for card in (c.card for c in decision.cards):
        [suggestion] = card.suggestions or []
        [action] = suggestion.actions or []
        request = ServiceRequest.model_validate(action.resource)
        assert (request.status, request.intent) == ("draft", "proposal")
        assert request.subject.reference == "Patient/p01"
        [site] = request.bodySite or []
        [extension] = site.extension or []
        concept = extension.valueCodeableConcept
        assert concept is not None
        assert concept.coding
        assert concept.coding[0].code == "24028007"
        assert request.code is not None
        codes.append({c.code for c in request.code.coding or []})
    assert "308447003" in codes[0]
    assert "hip-flexor-strengthening-endrange" in codes[0]
    assert "patellar-glide-inferior" in codes[1]


def test_detail_states_advice_findings_evidence_and_limits(pipeline: Pipeline) -> None:
    explained = decide(pipeline, "P01").cards[0]
    detail = explained.card.detail or ""
    assert "Not a diagnosis" in detail
    findings = "**Findings (19 Nov 2026):** right peripatellar pain; right seated hip flexion above 90°: 4/5 (MMT)."
    assert findings in detail
    assert "psoas emphasis expert opinion (F)" in detail
    assert "No red flag in the record (no conditions, procedures or medicines)." in detail
    explanation = explained.explanation
    assert ("R3", 1) in [(r.id, r.version) for r in explanation.rules]
    assert "Observation/p01-mmt-2" in [f.source for f in explanation.facts]
    assert "weak_mmt_grade" in explanation.thresholds


def test_p01_cards_fit_an_ehr_panel(pipeline: Pipeline) -> None:
    """Each detail at most 600 characters, no resource or rule ids, and no sentence said on both cards."""
    cards = decide(pipeline, "P01").cards
    details = [c.card.detail or "" for c in cards]
    assert [len(d) <= 600 for d in details] == [True, True], [len(d) for d in details]
    rule_ids = {r.id for r in pipeline.ruleset.source.rules}
    for detail in details:
        assert "Observation/" not in detail
        assert "Patient/" not in detail
        assert not [w for w in re.findall(r"[A-Z][A-Za-z0-9-]+", detail) if w in rule_ids]
    sentences = [{s.strip() for s in re.split(r"(?<=[.;:])\s|\n", d) if len(s.strip()) > 20} for d in details]
    assert sentences[0] & sentences[1] == set()


def test_cards_link_to_the_page_of_their_rule(pipeline: Pipeline) -> None:
    builder = CardBuilder(pipeline.cards.texts, pipeline.ruleset, pipeline.terminology,
                          rules_url="https://cds.example.org/rules")
    evaluation = decide(pipeline, "P01").evaluation
    cards = builder.build(evaluation, [], "p01")
    assert [c.card.source.url for c in cards] == ["https://cds.example.org/rules/R3", "https://cds.example.org/rules/R4"]
    assert [(link.label, link.url, link.type.value) for link in cards[1].card.links or []] == [
        ("Why this suggestion", "https://cds.example.org/why/patellar-glide", "absolute")]


def test_detail_says_when_data_are_missing_or_preferred(pipeline: Pipeline) -> None:
    p02 = decide(pipeline, "P02").cards[0].card.detail or ""
    assert "standard-range (≤ 90°) test not recorded" in p02
    p10 = decide(pipeline, "P10").cards[0].card.detail or ""
    assert "dynamometer result was used over the manual grade 5/5" in p10


def test_glide_card_says_it_is_an_adjunct(pipeline: Pipeline) -> None:
    assert "never on its own" in (decide(pipeline, "P01").cards[1].card.detail or "")


def test_existing_referral_removes_suggestions_and_says_why(pipeline: Pipeline) -> None:
    card = decide(pipeline, "P15c").cards[0].card
    assert card.suggestions is None
    assert "active physiotherapy referral exists" in (card.detail or "")


def test_red_flag_card_lists_the_flags(pipeline: Pipeline) -> None:
    [card] = [c.card for c in decide(pipeline, "P05").cards]
    assert card.indicator == Indicator.warning
    assert "recent knee trauma" in (card.detail or "")
    assert "knee effusion" in (card.detail or "")


def test_patient_viewer_gets_no_cards(pipeline: Pipeline) -> None:
    assert decide(pipeline, "P01", user="Patient/p01").cards == []


def test_card_model_refuses_spec_violations() -> None:
    source = Source(label="x")
    with pytest.raises(ValidationError, match="at most 139 characters"):
        Card(summary="x" * 140, indicator=Indicator.info, source=source)
    with pytest.raises(ValidationError, match="selectionBehavior"):
        Card(summary="s", indicator=Indicator.info, source=source, suggestions=[Suggestion(label="a")])
    with pytest.raises(ValidationError):
        Card.model_validate({"summary": "s", "indicator": "urgent", "source": {"label": "x"}})


def test_too_long_summary_in_card_texts_names_the_line(tmp_path: Path, ruleset: RuleSet) -> None:
    text = (RULES / "cards.yaml").read_text()
    path = tmp_path / "cards.yaml"
    path.write_text(text.replace("Consider psoas-focused strengthening.", "Consider " + "very " * 20 + "focused work."))
    with pytest.raises(ContentError, match="limit is 139") as caught:
        load_card_texts(path, ruleset, set(fact_properties()))
    assert caught.value.line == next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                                     if "very very" in line)


def test_examples_folder_is_the_one_tested() -> None:
    assert EXAMPLES.is_dir()


@pytest.mark.parametrize(("old", "new", "what"), [
    ("{finding: selective-end-range-pattern}", "{finding: selective-pattern}", "finding 'selective-pattern'"),
    ("only_by_rules: [D1-hhd]", "only_by_rules: [D1-dynamometer]", "rule 'D1-dynamometer'"),
    ("no_fact: standard-mmt}", "no_fact: standard-test}", "fact 'standard-test'"),
])
def test_a_note_naming_something_the_rules_lack_stops_start_up(tmp_path: Path, ruleset: RuleSet, old: str,
                                                                 new: str, what: str) -> None:
    """Renaming a finding or rule in the rule file must not silently drop a clinician's note."""
    path = tmp_path / "cards.yaml"
    path.write_text((RULES / "cards.yaml").read_text().replace(old, new))
    with pytest.raises(ContentError, match=what) as caught:
        load_card_texts(path, ruleset, set(fact_properties()))
    assert caught.value.line == next(i for i, line in enumerate(path.read_text().splitlines(), 1) if new in line)


def test_a_renamed_dynamometer_rule_keeps_its_note(pipeline: Pipeline) -> None:
    """P10's note comes from the data in rules/cards.yaml, keyed by the rule id the rule file uses."""
    note = next(n for n in pipeline.cards.texts.notes if n.id == "dynamometer-over-manual")
    assert note.when.only_by_rules is not None
    assert all(rule_id in {r.id for r in pipeline.ruleset.source.rules} for rule_id in note.when.only_by_rules)
    detail = decide(pipeline, "P10").cards[0].card.detail or ""
    assert "dynamometer result was used over the manual grade 5/5" in detail


def suggested_reasons(decision: Decision) -> list[tuple[list[str], list[str]]]:
    out = []
    for card in (c.card for c in decision.cards):
        for suggestion in card.suggestions or []:
            request = (suggestion.actions or [])[0].resource or {}
            out.append(([c["code"] for r in request["reasonCode"] for c in r["coding"]],
                        [r["reference"] for r in request.get("reasonReference", [])]))
    return out


def test_a_referral_gives_the_recorded_pain_as_its_reason_not_a_diagnosis(pipeline: Pipeline) -> None:
    """430725003 only where a patellofemoral pain diagnosis is recorded; the pain records are cited."""
    assert suggested_reasons(decide(pipeline, "P01")) == [(["30989003"], ["Observation/p01-pain-1"])] * 2
    assert suggested_reasons(decide(pipeline, "P16")) == [(["430725003"], ["Condition/p16-cond-1"])] * 2


def test_a_parameter_renamed_without_its_placeholder_stops_start_up_at_the_text(tmp_path: Path) -> None:
    import shutil

    from cds.settings import Settings
    from tests.support.paths import RULES

    content = tmp_path / "rules"
    shutil.copytree(RULES, content)
    rules = content / "knee-hip-v1.yaml"
    rules.write_text(rules.read_text().replace("max_age", "oldest_age"))
    with pytest.raises(ContentError) as caught:
        Pipeline(Settings(rules_dir=content))
    cards = (content / "cards.yaml").read_text().splitlines()
    line = next(n for n, text in enumerate(cards, 1) if "{max_age_minus_one}" in text)
    expected = rf"{re.escape(str(content / 'cards.yaml'))}:{line}: no_cards\.\d+\.text: \{{max_age_minus_one\}} is not"
    assert re.match(expected, str(caught.value)), str(caught.value)
    assert "oldest_age_minus_one" in str(caught.value)


def test_two_card_kinds_with_the_same_scenario_words_stop_start_up_at_the_second(tmp_path: Path) -> None:
    import shutil

    from cds.settings import Settings
    from tests.support.paths import RULES

    content = tmp_path / "rules"
    shutil.copytree(RULES, content)
    texts = content / "cards.yaml"
    texts.write_text(texts.read_text().replace('in_scenarios: "patellar glides"',
                                               'in_scenarios: "hip-flexor strengthening"'))
    with pytest.raises(ContentError) as caught:
        Pipeline(Settings(rules_dir=content))
    _, line = [n for n, text in enumerate(texts.read_text().splitlines(), 1)
               if 'in_scenarios: "hip-flexor strengthening"' in text]
    assert str(caught.value).startswith(f"{texts}:{line}: cards.patellar-glide.in_scenarios"), str(caught.value)
    assert "'hip-strengthening'" in str(caught.value)


def test_a_card_kind_has_one_id_the_topic_code(pipeline: Pipeline) -> None:
    """The YAML key is what the rules recommend, the topic code the EHR sees and the kind the store counts."""
    for explained in decide(pipeline, "P01").cards:
        topic = explained.card.source.topic
        assert topic is not None
        assert topic.code == explained.explanation.recommendation.card
        assert topic.display == pipeline.cards.texts.cards[topic.code].title


def test_cards_are_assembled_without_validation_and_equal_their_validated_form(pipeline: Pipeline) -> None:
    """Production builds cards with model_construct from parts validated at start-up; every example's cards are
    the same once every response-model validator has run on them, and the suite runs in check mode."""
    assert pipeline.cards.check  # HIPFLEX_CHECK_CARDS, set by tests/conftest.py
    unchecked = CardBuilder(pipeline.cards.texts, pipeline.ruleset, pipeline.terminology)
    built = 0
    for path in example_paths():
        evaluation = decide(pipeline, path.name.split("-", 1)[0]).evaluation
        for explained in unchecked.build(evaluation, [], "p01"):
            assert Card.model_validate(explained.card.model_dump()) == explained.card
            built += 1
    assert built > 20


def test_check_mode_refuses_a_card_that_breaks_the_spec(pipeline: Pipeline) -> None:
    evaluation = decide(pipeline, "P01").evaluation
    [first, *_] = pipeline.cards.build(evaluation, [], "p01")
    broken = first.card.model_copy(update={"selectionBehavior": None})  # suggestions without it: cds-resp-6
    with pytest.raises(ValidationError, match="selectionBehavior is required"):
        check_card(type(first)(broken, first.explanation))
