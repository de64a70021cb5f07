"""The code bindings of `rules/terminology.yaml`: which codes mean what to the service.

Kept as data so that a terminologist can re-bind a code without touching Python; this module only
loads the file and answers look-ups.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds.content.files import load_model

Side = Literal["left", "right", "bilateral"]
ValueKind = Literal["mrc-grade", "force", "angle", "boolean", "pain-score", "body-site"]
InputKind = Literal[
    "end-range-mmt",
    "standard-mmt",
    "end-range-hhd",
    "knee-hyperextension",
    "knee-hyperextension-gait",
    "pain-severity",
    "pain-location",
]

LOCAL = "local"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(_Strict):
    system: str
    code: str


class ObservationBinding(_Strict):
    kind: InputKind
    display: str
    value: ValueKind
    lateralised: bool
    codes: list[Code] = Field(min_length=1)


class UnsupportedCode(_Strict):
    code: Code
    reason: str


class BodySite(_Strict):
    site: str
    anterior: bool
    codes: list[Code]


class Laterality(_Strict):
    system: str
    codes: dict[str, Side]
    legacy: dict[str, Side]
    display: dict[Side, str]

    def code_of(self, side: str | None) -> str | None:
        """The qualifier code written for a side (cards' draft orders, scenario builders)."""
        return next((code for code, named in self.codes.items() if named == side), None)

    def display_of(self, side: str | None) -> str:
        return next((text for named, text in self.display.items() if named == side), "")


class PatellofemoralCondition(_Strict):
    system: str
    code: str
    side: Literal["left", "right", "from-body-site"]


class CodeFamily(_Strict):
    """Codes matched by family: `prefix` for a hierarchical system (ICD-10-CM, dots ignored, `?` any one
    character), or an inclusive numeric `range` (CPT). `confidence` and `source` say how it was verified."""

    system: str
    prefix: str | None = None
    range: tuple[int, int] | None = None
    display: str = ""
    confidence: Literal["H", "M", "L"] = "H"
    source: str = ""

    def matches(self, system: str, code: str) -> bool:
        if system != self.system:
            return False
        if self.prefix is not None:
            wanted, given = self.prefix.replace(".", "").upper(), code.replace(".", "").upper()
            return len(given) >= len(wanted) and all(w in ("?", g) for w, g in zip(wanted, given, strict=False))
        if self.range is not None and code.isdigit():
            return self.range[0] <= int(code) <= self.range[1]
        return False


class RedFlag(_Strict):
    flag: str
    display: str
    window: str | None = Field(default=None, description="A name in `windows`: older records are not red flags")
    codes: list[Code] = Field(default_factory=list, description="Exact codes (SNOMED CT, local)")
    families: list[CodeFamily] = Field(default_factory=list, description="Code families (ICD-10-CM, CPT)")
    procedure_on_knee: bool = Field(default=False, description="Also raised by a Procedure on a knee structure")


class Range(_Strict):
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


class PlausibleRanges(_Strict):
    force: Range = Field(description="Dynamometer force in newtons")
    angle: Range = Field(description="Knee hyperextension in degrees beyond neutral")
    pain_score: Range = Field(description="Pain on a 0-10 scale")


class Terminology(_Strict):
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
    knee_records: list[CodeFamily] = Field(description="Conditions/procedures about the knee (to classify)")
    benign_knee_codes: list[CodeFamily] = Field(description="Knee records known not to be red flags")
    physiotherapy_requests: list[Code]
    laterality_extension: str
    aliases: dict[tuple[str, str], tuple[str, str]] = Field(
        default_factory=dict, description="A site's own codes -> this file's, from its ConceptMaps (not in YAML)")

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

    def red_flag(self, system: str, code: str) -> RedFlag | None:
        """The red flag a coding names: an exact code, else a code family (ICD-10-CM prefix, CPT range)."""
        exact = self.red_flag_by_code.get((system, code))
        if exact is not None:
            return exact
        system, code = self.canonical(system, code)
        return next((f for f in self.red_flags for family in f.families if family.matches(system, code)), None)

    def window_days(self, flag: RedFlag) -> int | None:
        return self.windows[flag.window] if flag.window else None

    def about_knee(self, system: str, code: str) -> bool:
        return any(f.matches(*self.canonical(system, code)) for f in self.knee_records)

    def benign_knee(self, system: str, code: str) -> bool:
        return (system, code) in self.patellofemoral_by_code or any(
            f.matches(*self.canonical(system, code)) for f in self.benign_knee_codes)

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


def load_terminology(path: Path) -> Terminology:
    """Load and check `rules/terminology.yaml`; a mistake raises ContentError with file and line."""
    model, _ = load_model(path, Terminology)
    return model
