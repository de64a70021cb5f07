"""The packaged example patients (fhir_examples/): each Bundle with the context it needs, from its
`.expected.yaml` (the visit date, the user, the hook, a site's ConceptMap folder), so `evaluate P15b` gives
what the example is about without the reader knowing its options. Names resolve by unique prefix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cds.content.files import ContentError
from cds.errors import HipflexError


class Example(BaseModel):
    """One example: its Bundle file and the context it is evaluated in."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    path: Path
    description: str = ""
    as_of: dt.date | None = None
    user: str | None = None  # e.g. Patient/p15 for a patient-facing app
    hook: str | None = None
    concept_maps: str | None = Field(default=None, description="a folder of ConceptMaps, beside the examples")

    @property
    def concept_maps_dir(self) -> Path | None:
        return self.path.parent / self.concept_maps if self.concept_maps else None


def load_examples(folder: Path) -> list[Example]:
    """Every example in the folder, by name."""
    found = []
    for path in sorted(folder.glob("*.json")):
        manifest = path.with_suffix(".expected.yaml")
        try:
            data = yaml.safe_load(manifest.read_text(encoding="utf-8")) if manifest.exists() else {}
        except (OSError, yaml.YAMLError) as exc:
            raise ContentError(manifest, None, f"cannot be read ({exc})".splitlines()[0]) from None
        data = data if isinstance(data, dict) else {}
        found.append(Example.model_validate({k: v for k, v in data.items() if k in Example.model_fields}
                                            | {"name": path.stem, "path": path}))
    return found


class NoSuchExample(HipflexError):
    """No example, or more than one, has this name; the message says which there are."""


def find_example(folder: Path, name: str) -> Example:
    """The example named `name`, or the only one whose name starts with it (`P01` -> P01-classic-right)."""
    return pick_example(load_examples(folder), name)


def pick_example(examples: list[Example], name: str) -> Example:
    """`find_example` among examples already loaded (the review page loads them once)."""
    exact = [e for e in examples if e.name == name]
    matches = exact or [e for e in examples if e.name.lower().startswith(name.lower())]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NoSuchExample(f"{name}: ambiguous, it could be {', '.join(e.name for e in matches)}")
    raise NoSuchExample(f"{name}: no such file, and no example starts with it (`hipflex-cds examples` lists them)")
