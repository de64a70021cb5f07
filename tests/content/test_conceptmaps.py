"""A site's own codes through its FHIR ConceptMaps: checked at start-up, then read like the built-in bindings."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cds.content.conceptmaps import load_concept_maps
from cds.content.files import ContentError
from cds.content.terminology import Terminology
from tests.support.paths import EXAMPLES, load_json

SITE_MAP = EXAMPLES / "maps" / "st-elsewhere-physio.json"


def write(folder: Path, data: Any) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "map.json").write_text(json.dumps(data))
    return folder


def test_the_example_map_maps_the_site_codes_onto_the_projects(terminology: Terminology) -> None:
    aliases = load_concept_maps(SITE_MAP.parent, terminology)
    site = "http://st-elsewhere.example.org/fhir/CodeSystem/physio-measures"
    assert aliases[(site, "PT-HFLEX-SIT-90PLUS")] == (terminology.local_system, "hip-flexion-mmt-seated-endrange")
    mapped = terminology.with_aliases(aliases)
    assert mapped.observation_by_code[(site, "PT-HFLEX-SIT-90PLUS")].kind == "end-range-mmt"
    assert (site, "PT-HFLEX-SIT-90PLUS") not in terminology.observation_by_code  # the original is unchanged


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda m: m | {"resourceType": "ValueSet"}, "resourceType must be ConceptMap"),
    (lambda m: m | {"group": [{"element": "not-a-list"}]}, "not valid FHIR R4"),
    (lambda m: _target(m, code="no-such-code"), "ConceptMap.group[0].element[0].target[0].code: 'no-such-code'"),
    (lambda m: _target(m, equivalence="wider"), "ConceptMap.group[0].element[0].target[0].equivalence"),
])
def test_a_bad_map_stops_start_up_naming_file_and_element(tmp_path: Path, terminology: Terminology, mangle: Any,
                                                          message: str) -> None:
    folder = write(tmp_path / "maps", mangle(copy.deepcopy(load_json(SITE_MAP))))
    with pytest.raises(ContentError, match=message.replace("[", r"\[").replace("]", r"\]")) as stopped:
        load_concept_maps(folder, terminology)
    assert stopped.value.path.endswith("map.json")


def _target(concept_map: dict[str, Any], **changes: str) -> dict[str, Any]:
    concept_map["group"][0]["element"][0]["target"][0] |= changes
    return concept_map


def test_the_cli_lists_the_mapped_codes_and_refuses_a_bad_map(tmp_path: Path) -> None:
    def rules(maps: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cds.cli", "rules", "--terminology", "--json"],
                              env={"PATH": "/usr/bin:/bin", "HIPFLEX_CONCEPT_MAPS_DIR": str(maps)},
                              capture_output=True, text=True, timeout=120, check=False)

    listed = json.loads(rules(SITE_MAP.parent).stdout)
    assert {"input": "(mapped)", "system": "http://st-elsewhere.example.org/fhir/CodeSystem/physio-measures",
            "code": "PT-SITE-PERIPAT", "via": "ConceptMap -> peripatellar"} in listed
    bad = rules(write(tmp_path / "bad", load_json(SITE_MAP) | {"resourceType": "Basic"}))
    assert bad.returncode == 2
    assert "map.json: resourceType must be ConceptMap" in bad.stderr
