"""A site's own codes, mapped onto the project's by FHIR R4 ConceptMaps (https://hl7.org/fhir/R4/conceptmap.html).

Real sites code their hip-flexion tests (and often pain sites and red flags) with codes of their own. A
ConceptMap per file in HIPFLEX_CONCEPT_MAPS_DIR says which of their codes means which of ours; validation
then reads their codes exactly like the built-in bindings. A map is checked at start-up: not a ConceptMap,
not valid FHIR, a target the rules do not know, or a mapping that is not an equivalence stops start-up
naming the file and the element.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir.resources.R4B.conceptmap import ConceptMap

from cds.content.files import ContentError, read_fhir_json
from cds.content.terminology import Terminology

EQUIVALENT = ("equivalent", "equal")  # the only mappings safe to act on: wider or narrower codes mean other things
Alias = tuple[str, str]


def load_concept_maps(folder: Path, terminology: Terminology) -> dict[Alias, Alias]:
    """Every mapping of every `*.json` ConceptMap in `folder`: the site's (system, code) -> the project's."""
    if not folder.is_dir():
        raise ContentError(folder, None, "HIPFLEX_CONCEPT_MAPS_DIR is not a folder")
    aliases: dict[Alias, Alias] = {}
    for path in sorted(folder.glob("*.json")):
        aliases |= _aliases(path, read_fhir_json(path, "ConceptMap", ConceptMap), terminology)
    return aliases


def known_codes(t: Terminology) -> set[Alias]:
    """The project codes a map may point at: everything the bindings recognise by exact code."""
    return (set(t.observation_by_code) | set(t.site_by_code) | set(t.red_flag_by_code) | set(t.knee_structure_codes)
            | set(t.patellofemoral_by_code) | set(t.physiotherapy_codes) | set(t.unsupported_by_code))


def _aliases(path: Path, data: dict[str, Any], terminology: Terminology) -> dict[Alias, Alias]:
    known = known_codes(terminology)
    aliases: dict[Alias, Alias] = {}
    for g, group in enumerate(data.get("group") or []):
        source, target = group.get("source"), terminology.system(str(group.get("target") or ""))
        if not source or not group.get("target"):
            raise ContentError(path, None, f"ConceptMap.group[{g}]: source and target systems are required")
        for e, element in enumerate(group.get("element") or []):
            for m, mapped in enumerate(element.get("target") or []):
                where = f"ConceptMap.group[{g}].element[{e}].target[{m}]"
                if mapped.get("equivalence") not in EQUIVALENT:
                    raise ContentError(path, None, f"{where}.equivalence: only 'equivalent' or 'equal' mappings are "
                                                   f"used, not {mapped.get('equivalence')!r}")
                pair = (target, str(mapped.get("code")))
                if pair not in known:
                    raise ContentError(path, None, f"{where}.code: {pair[1]!r} in {target} is not a code these "
                                                   "rules know (see hipflex-cds rules --terminology)")
                aliases[(str(source), str(element.get("code")))] = pair
    return aliases
