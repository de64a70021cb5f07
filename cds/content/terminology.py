"""The code bindings of `rules/terminology.yaml`: which codes mean what to the service.

Kept as data so that a terminologist can re-bind a code without touching Python; this module only
loads the file and answers look-ups.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from cds.content.files import ContentError, ContentModel, line_of, load_model
from cds.content.valuesets import CodeSet, load_value_sets

Side = Literal["left", "right", "bilateral"]
ValueKind = Literal["mrc-grade", "force", "angle", "boolean", "pain-score", "body-site", "temperature"]
InputKind = Literal[
    "body-temperature",
    "end-range-mmt",
    "standard-mmt",
    "end-range-hhd",
    "knee-hyperextension",
    "knee-hyperextension-gait",
    "pain-severity",
    "pain-location",
]

LOCAL = "local"


class Code(ContentModel):
    system: str
    code: str


class ObservationBinding(ContentModel):
    kind: InputKind
    display: str
    value: ValueKind
    lateralised: bool
    codes: list[Code] = Field(min_length=1)


class UnsupportedCode(ContentModel):
    code: Code
    reason: str


class BodySite(ContentModel):
    site: str
    anterior: bool
    codes: list[Code]
    side: Side | None = Field(default=None, description="A lateralised structure's own side (e.g. right knee)")


class Laterality(ContentModel):
    system: str
    codes: dict[str, Side]
    legacy: dict[str, Side]
    display: dict[Side, str]

    def code_of(self, side: str | None) -> str | None:
        """The qualifier code written for a side (cards' draft orders, scenario builders)."""
        return next((code for code, named in self.codes.items() if named == side), None)

    def display_of(self, side: str | None) -> str:
        return next((text for named, text in self.display.items() if named == side), "")


class PatellofemoralCondition(ContentModel):
    system: str
    code: str
    side: Literal["left", "right", "from-body-site"]


class CodeSystemName(ContentModel):
    """A code system the service reads: its canonical URL, the other URLs EHRs send for it, and whether its codes
    nest by prefix (so that `is-a` can be answered without a terminology server)."""

    name: str
    system: str
    aliases: list[str] = Field(default_factory=list)
    hierarchical: bool = False
    server: bool = Field(default=False, description="Ask a site's terminology server about its codes (SNOMED CT)")


class RedFlag(ContentModel):
    flag: str
    display: str
    value_set: str = Field(description="Canonical URL of the ValueSet in rules/valuesets/ that names its codes")
    window: str | None = Field(default=None, description="A name in `windows`: older records are not red flags")
    codes: list[Code] = Field(default_factory=list, description="Project codes (ConceptMap targets, scenarios)")
    procedure_on_knee: bool = Field(default=False, description="Also raised by a Procedure on a knee structure")


class CodedSide(ContentModel):
    """Laterality carried inside a code (ICD-10-CM sixth characters, OPCS-4 Z94), as a regular expression."""

    system: str
    pattern: str
    side: Side

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        return _regex(pattern)


class ValueSetRoles(ContentModel):
    """Which ValueSet plays which part in classifying a chart."""

    compatible: str
    knee_related: str
    knee_sites: str
    unrelated: str
    anticoagulants: str
    knee_swelling: str


class AbsentValues(ContentModel):
    """How an examination finding says 'not present' (anything else counts as present, to be safe)."""

    codes: list[Code]
    words: list[str]


class Range(ContentModel):
    """A plausible range: `min`/`max` inclusive, `above`/`below` exclusive; values outside are refused."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.min is None or value >= self.min) and (self.max is None or value <= self.max)
                and (self.above is None or value > self.above) and (self.below is None or value < self.below))

    def describe(self, unit: str) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}{unit} … {self.max:g}{unit}"
        low = f"above {self.above:g}" if self.above is not None else f"from {self.min:g}"
        high = f"below {self.below:g}" if self.below is not None else f"up to {self.max:g}"
        return f"{low}, {high} {unit}".rstrip()


class PlausibleRanges(ContentModel):
    force: Range = Field(description="Dynamometer force in newtons")
    angle: Range = Field(description="Knee hyperextension in degrees beyond neutral")
    pain_score: Range = Field(description="Pain on a 0-10 scale")


K = TypeVar("K")
V = TypeVar("V")
MEMBERSHIP_ENTRIES = 20_000  # remembered answers of the shipped ValueSets; past this, forgotten all at once


def _remembered(memo: dict[K, V], key: K, compute: Callable[[], V]) -> V:
    """memo[key], computed once; a full memo is emptied first, so it stays bounded whatever codes arrive."""
    if key in memo:
        return memo[key]
    if len(memo) >= MEMBERSHIP_ENTRIES:
        memo.clear()
    memo[key] = found = compute()
    return found


class Terminology(ContentModel):
    """All bindings; `system: local` in the file stands for `local_system`."""

    version: str
    local_system: str
    mrc_grade_system: str
    observations: list[ObservationBinding]
    unsupported_observations: list[UnsupportedCode]
    mrc_grades: list[str] = Field(min_length=2)
    force_units: dict[str, float]
    mass_units: list[str] = Field(description="Units of mass, refused for force with a specific message")
    plausible: PlausibleRanges
    angle_unit: str
    body_sites: list[BodySite]
    knee_structures: list[Code]
    laterality: Laterality
    patellofemoral_conditions: list[PatellofemoralCondition]
    current_pain_from: int = Field(ge=0, le=10, description="A pain score below this is not current pain")
    windows: dict[str, int] = Field(description="Named look-back windows in days (trauma, surgery)")
    red_flags: list[RedFlag]
    code_systems: list[CodeSystemName]
    value_sets: ValueSetRoles
    knee_words: list[str] = Field(min_length=1, description="Words that put a record at the knee (regex, any case)")
    absent: AbsentValues
    coded_sides: list[CodedSide] = Field(default_factory=list)
    temperature_units: dict[str, list[float]] = Field(description="UCUM unit -> [factor, offset] to degrees Celsius")
    condition_lookback_days: int = Field(ge=1, description="A Condition without clinicalStatus counts this long "
                                                          "when its red flag has no window of its own")
    physiotherapy_requests: list[Code]
    laterality_extension: str
    aliases: dict[tuple[str, str], tuple[str, str]] = Field(
        default_factory=dict, description="A site's own codes -> this file's, from its ConceptMaps (not in YAML)")
    sets: dict[str, CodeSet] = Field(default_factory=dict, description="rules/valuesets/ by URL (not in YAML)")

    @field_validator("knee_words")
    @classmethod
    def _words_compile(cls, words: list[str]) -> list[str]:
        return [_regex(word) for word in words]

    @model_validator(mode="after")
    def _windows_exist(self) -> Terminology:
        for flag in self.red_flags:
            if flag.window is not None and flag.window not in self.windows:
                raise ValueError(f"red flag {flag.flag} names window {flag.window!r}, which `windows` lacks")
        return self

    def system(self, name: str) -> str:
        """Resolve the file's `local` shorthand to the canonical URL."""
        return self.local_system if name == LOCAL else name

    def _key(self, code: Code) -> tuple[str, str]:
        return self.system(code.system), code.code

    def with_aliases(self, aliases: dict[tuple[str, str], tuple[str, str]]) -> Terminology:
        """These bindings plus a site's codes mapped onto them; a new object, so no look-up is cached stale."""
        return Terminology.model_validate(self.model_dump() | {"aliases": dict(self.aliases) | aliases})

    def _aliased(self, table: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
        """A look-up table that also answers to the site codes mapped onto its keys."""
        return table | {source: table[target] for source, target in self.aliases.items() if target in table}

    def canonical(self, system: str, code: str) -> tuple[str, str]:
        """The project's code for a site's code (itself when no map names it)."""
        return self.aliases.get((system, code), (system, code))

    @cached_property
    def observation_by_code(self) -> dict[tuple[str, str], ObservationBinding]:
        return self._aliased({self._key(c): b for b in self.observations for c in b.codes})

    @cached_property
    def unsupported_by_code(self) -> dict[tuple[str, str], str]:
        return {self._key(u.code): u.reason for u in self.unsupported_observations}

    @cached_property
    def site_by_code(self) -> dict[tuple[str, str], BodySite]:
        return self._aliased({self._key(c): s for s in self.body_sites for c in s.codes})

    @cached_property
    def knee_structure_codes(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._aliased({self._key(c): True for c in self.knee_structures}))

    @cached_property
    def red_flag_by_code(self) -> dict[tuple[str, str], RedFlag]:
        return self._aliased({self._key(c): f for f in self.red_flags for c in f.codes})

    @cached_property
    def _system_by_uri(self) -> dict[str, CodeSystemName]:
        return {uri: s for s in self.code_systems for uri in (s.system, *s.aliases)} | {
            self.local_system: CodeSystemName(name="local", system=self.local_system)}

    def code_system(self, uri: str) -> CodeSystemName | None:
        """The code system an EHR's URI names (any of its aliases), or None when this service cannot read it."""
        return self._system_by_uri.get(uri)

    def canonical_system(self, uri: str) -> str:
        """The canonical URL for any alias of a system read here; an unknown URI is itself."""
        named = self.code_system(uri)
        return named.system if named is not None else uri

    def system_name(self, uri: str) -> str:
        """'OPCS-4' for any of its URIs; an unknown URI is shown as itself."""
        named = self.code_system(uri)
        return named.name if named is not None else uri

    @cached_property
    def _hierarchical(self) -> frozenset[str]:
        return frozenset(s.system for s in self.code_systems if s.hierarchical)

    def in_set(self, url: str, system: str, code: str, known: frozenset[tuple[str, str, str]] = frozenset()) -> bool:
        """Whether a coding is in a ValueSet: by the shipped set (the site's codes through its ConceptMaps), or by
        what a terminology server answered for this call (`known`: (system, code, url) triples). The shipped
        sets' answers are remembered (they depend on the loaded content alone): every chart asks about the same
        few hundred codes, each against every red-flag set."""
        def shipped() -> bool:
            canonical_system = self.canonical_system(system)
            code_set = self.sets[url]
            return any(code_set.contains(s, c, self._hierarchical)
                       for s, c in {(canonical_system, code), self.canonical(canonical_system, code)})

        found = _remembered(self._memberships, (url, system, code), shipped)
        return found or (bool(known) and (self.canonical_system(system), code, url) in known)

    @cached_property
    def _memberships(self) -> dict[tuple[str, str, str], bool]:
        return {}

    @cached_property
    def quiet_records(self) -> dict[tuple[str, bytes], bool]:
        """Chart records, by kind and the JSON text of their code and bodySite elements, that this content classifies as
        raising nothing whatever their date, status or value (filled by `cds.clinical.chart`, bounded by
        `remember_quiet`): most of a chart is vital signs and flowsheet rows, each otherwise classified anew."""
        return {}

    def remember_quiet(self, key: tuple[str, bytes]) -> None:
        _remembered(self.quiet_records, key, lambda: True)

    @cached_property
    def knee_words_pattern(self) -> re.Pattern[str]:
        """Every knee word in one pattern (any case): one search a record instead of one per word."""
        return re.compile("|".join(f"(?:{word})" for word in self.knee_words), re.IGNORECASE)

    def red_flag(self, system: str, code: str, known: frozenset[tuple[str, str, str]] = frozenset()) -> RedFlag | None:
        """The red flag a coding names, by the red-flag ValueSets (remembered, like `in_set`, when no terminology
        server answered for this call)."""
        if known:
            return next((f for f in self.red_flags if self.in_set(f.value_set, system, code, known)), None)
        return _remembered(self._red_flags_of, (system, code), lambda: next(
            (f for f in self.red_flags if self.in_set(f.value_set, system, code)), None))

    @cached_property
    def _red_flags_of(self) -> dict[tuple[str, str], RedFlag | None]:
        return {}

    def window_days(self, flag: RedFlag) -> int | None:
        return self.windows[flag.window] if flag.window else None

    def side_in_code(self, system: str, code: str) -> Side | None:
        """The side a code carries in itself (e.g. ICD-10-CM M22.2X2: left), by `coded_sides`."""
        system = self.canonical_system(system)
        return next((c.side for c in self.coded_sides if c.system == system and re.fullmatch(c.pattern, code)), None)

    @cached_property
    def red_flag_by_name(self) -> dict[str, RedFlag]:
        return {f.flag: f for f in self.red_flags}

    @cached_property
    def knee_procedure_flag(self) -> RedFlag | None:
        return next((f for f in self.red_flags if f.procedure_on_knee), None)

    @cached_property
    def patellofemoral_by_code(self) -> dict[tuple[str, str], PatellofemoralCondition]:
        return self._aliased({(c.system, c.code): c for c in self.patellofemoral_conditions})

    @cached_property
    def physiotherapy_codes(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._aliased({self._key(c): True for c in self.physiotherapy_requests}))

    def grade_rank(self, grade: str) -> int | None:
        """Ordinal rank of an MRC grade (0 … 10), or None when it is not on the scale."""
        try:
            return self.mrc_grades.index(grade)
        except ValueError:
            return None

    def local_code(self, code: str, display: str) -> dict[str, str]:
        """A FHIR Coding in the local CodeSystem."""
        return {"system": self.local_system, "code": code, "display": display}


def _regex(pattern: str) -> str:
    """A regular expression from the file, refused at load (with its line) when it does not compile."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


def load_terminology(path: Path) -> Terminology:
    """Load and check `rules/terminology.yaml` and the ValueSets of `valuesets/` beside it; a mistake raises
    ContentError with file and line (a red flag or role naming a ValueSet that is not there included)."""
    model, lines = load_model(path, Terminology)
    sets = load_value_sets(path.parent / "valuesets")
    named: list[tuple[tuple[str | int, ...], str]] = [
        (("red_flags", i, "value_set"), f.value_set) for i, f in enumerate(model.red_flags)]
    named += [(("value_sets", role), str(url)) for role, url in model.value_sets.model_dump().items()]
    for loc, url in named:
        if url not in sets:
            raise ContentError(path, line_of(lines, loc), f"{'.'.join(map(str, loc))}: no ValueSet with url {url} in "
                                                          f"{path.parent / 'valuesets'}")
    return model.model_copy(update={"sets": sets})
