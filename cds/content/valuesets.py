"""The code sets of `rules/valuesets/`: FHIR R4 ValueSet resources, read so that a site can check and extend them
with ordinary FHIR tools, and compiled here into look-ups.

Each include is one code system and either a concept list (exact codes), `is-a` filters or `regex` filters on
the code. Locally, `is-a` on a classification whose codes nest by prefix (ICD-10-CM, WHO ICD-10, ICD-10-PCS,
OPCS-4, ATC: `hierarchical` in terminology.yaml) matches the code and every code that extends it; on SNOMED CT
it matches the concept itself only, since descendants need a terminology server (`cds.hooks.terminologyserver`).
Every include says where its codes came from (an extension), and the rule pages show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from fhir.resources.R4B.valueset import ValueSet as FhirValueSet

from cds.content.files import ContentError, ContentModel, read_fhir_json

SOURCE_EXTENSION = "urn:hipflex-cds:fhir:StructureDefinition:code-source"
FILTER_OPS = {"is-a", "regex"}


class Include(ContentModel):
    """One `compose.include`: a system and what of it belongs to the set."""

    system: str
    codes: frozenset[str] = frozenset()
    is_a: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    source: str = ""

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(r, re.IGNORECASE) for r in self.regex)

    def matches(self, code: str, *, hierarchical: bool) -> bool:
        if code in self.codes:
            return True
        bare = code.replace(".", "").upper()
        if hierarchical and any(bare.startswith(root.replace(".", "").upper()) for root in self.is_a):
            return True
        if not hierarchical and code in self.is_a:
            return True
        return any(p.fullmatch(code) for p in self._patterns)

    def describe(self, system_name: str) -> str:
        exact = sorted(self.codes - set(self.is_a))
        parts = exact[:12] + [f"{r} and below" for r in self.is_a] + [f"codes matching {r}" for r in self.regex]
        more = f" (+{len(exact) - 12} more)" if len(exact) > 12 else ""
        text = f"{system_name}: {', '.join(parts)}{more}"
        return f"{text} — source: {self.source}" if self.source else text


class CodeSet(ContentModel):
    """A compiled ValueSet: its canonical URL, words for people, and its includes."""

    url: str
    name: str
    title: str
    description: str
    file: str
    includes: tuple[Include, ...]

    def contains(self, system: str, code: str, hierarchical: Iterable[str]) -> bool:
        nested = system in set(hierarchical)
        return any(i.system == system and i.matches(code, hierarchical=nested) for i in self.includes)

    def systems(self) -> set[str]:
        return {i.system for i in self.includes}


def load_value_sets(folder: Path) -> dict[str, CodeSet]:
    """Every `*.json` ValueSet in `folder` by canonical URL; a malformed one raises ContentError naming file and
    element (and line where JSON gives one)."""
    if not folder.is_dir():
        raise ContentError(folder, None, "the value set folder does not exist")
    sets: dict[str, CodeSet] = {}
    for path in sorted(folder.glob("*.json")):
        code_set = _compile(path, read_fhir_json(path, "ValueSet", FhirValueSet))
        if code_set.url in sets:
            raise ContentError(path, None, f"ValueSet.url {code_set.url} is also the URL of {sets[code_set.url].file}")
        sets[code_set.url] = code_set
    return sets


def _compile(path: Path, data: dict[str, Any]) -> CodeSet:
    for field in ("url", "name", "title", "description"):
        if not data.get(field):
            raise ContentError(path, None, f"ValueSet.{field} is required (the rule pages show it)")
    includes = []
    for i, include in enumerate((data.get("compose") or {}).get("include") or []):
        where = f"ValueSet.compose.include[{i}]"
        if not include.get("system"):
            raise ContentError(path, None, f"{where}.system is required")
        is_a, regex = [], []
        for f, flt in enumerate(include.get("filter") or []):
            op, value = flt.get("op"), str(flt.get("value"))
            if op not in FILTER_OPS:
                raise ContentError(path, None, f"{where}.filter[{f}].op: {op!r} is not read here (only is-a, regex)")
            if op == "regex":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ContentError(path, None, f"{where}.filter[{f}].value: not a regular expression ({exc})")\
                        from None
                regex.append(value)
            else:
                is_a.append(value)
        source = next((str(e.get("valueString")) for e in include.get("extension") or []
                       if e.get("url") == SOURCE_EXTENSION), "")
        includes.append(Include(system=include["system"], codes=frozenset(str(c["code"]) for c in
                                                                           include.get("concept") or []),
                                is_a=tuple(is_a), regex=tuple(regex), source=source))
    if not includes:
        raise ContentError(path, None, "ValueSet.compose.include: a set needs at least one include")
    return CodeSet(url=data["url"], name=data["name"], title=data["title"], description=data["description"],
                   file=path.name, includes=tuple(includes))
