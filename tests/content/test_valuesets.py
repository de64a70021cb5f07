"""The ValueSets of rules/valuesets/: valid FHIR R4, read the way the classification needs, and a broken one
stops start-up naming the file (and the line or element)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

from cds.content.files import ContentError
from cds.content.terminology import load_terminology
from cds.content.valuesets import load_value_sets
from tests.support.paths import EXAMPLES

RULES = EXAMPLES.parent / "rules"
CM, OPCS = "http://hl7.org/fhir/sid/icd-10-cm", "http://fhir.nhs.uk/Id/opcs-4"


def copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


@pytest.mark.parametrize("path", sorted((RULES / "valuesets").glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_value_set_is_valid_fhir_r4_and_says_where_its_codes_came_from(path: Path) -> None:
    data = json.loads(path.read_text())
    ValueSet.model_validate(data)
    assert data["url"].startswith("urn:hipflex-cds:fhir:ValueSet:")
    assert all(i.get("extension") for i in data["compose"]["include"])


def test_is_a_nests_by_prefix_in_classifications_and_regex_matches_whole_codes() -> None:
    t = load_terminology(RULES / "terminology.yaml")
    effusion = "urn:hipflex-cds:fhir:ValueSet:red-flag-knee-effusion"
    assert t.in_set(effusion, CM, "M25.461")
    assert t.in_set(effusion, CM, "M25461")
    assert not t.in_set(effusion, CM, "M25.511")
    surgery = "urn:hipflex-cds:fhir:ValueSet:red-flag-recent-knee-surgery"
    assert t.in_set(surgery, "https://fhir.nhs.uk/Id/opcs-4", "W40.1")  # an alias of the OPCS-4 URI
    assert t.in_set(surgery, "http://www.ama-assn.org/go/cpt", "27447")
    assert not t.in_set(surgery, "http://www.ama-assn.org/go/cpt", "27300")
    assert not t.in_set(surgery, OPCS, "W39")


def test_a_broken_value_set_file_is_named_with_its_line(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    (rules / "valuesets" / "anticoagulants.json").write_text('{\n  "resourceType": "ValueSet",\n  "url": \n}\n')
    with pytest.raises(ContentError) as caught:
        load_value_sets(rules / "valuesets")
    assert (Path(caught.value.path).name, caught.value.line) == ("anticoagulants.json", 4)


def test_an_unknown_filter_is_refused_naming_the_element(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    path = rules / "valuesets" / "anticoagulants.json"
    data = json.loads(path.read_text())
    data["compose"]["include"][0]["filter"][0]["op"] = "descendent-of"
    path.write_text(json.dumps(data))
    with pytest.raises(ContentError, match=r"compose.include\[0\].filter\[0\].op: 'descendent-of' is not read here"):
        load_value_sets(rules / "valuesets")


def test_a_red_flag_naming_a_missing_value_set_stops_start_up_at_its_line(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    (rules / "valuesets" / "red-flag-knee-effusion.json").unlink()
    with pytest.raises(ContentError, match="no ValueSet with url urn:hipflex-cds:fhir:ValueSet:red-flag-knee-effusion")\
            as caught:
        load_terminology(rules / "terminology.yaml")
    text = (rules / "terminology.yaml").read_text().splitlines()
    assert "red-flag-knee-effusion" in text[(caught.value.line or 0) - 1]


def test_a_knee_word_that_is_not_a_regular_expression_stops_start_up_at_its_line(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    path = rules / "terminology.yaml"
    path.write_text(path.read_text().replace("'patell'", "'patell('"))
    with pytest.raises(ContentError, match=r"knee_words: .*not a regular expression") as caught:
        load_terminology(path)
    assert "patell(" in path.read_text().splitlines()[(caught.value.line or 0) - 1]
