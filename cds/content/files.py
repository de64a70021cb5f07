"""Read the clinical content files in `rules/` into pydantic models, keeping line numbers.

Rule, terminology and card files are written by people, so a mistake must stop start-up with a
message that names the file, the line and the reason, not a pydantic traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cds.errors import HipflexError

Model = TypeVar("Model", bound=BaseModel)
Location = tuple[str | int, ...]


class ContentModel(BaseModel):
    """The base of every content file's model: unknown keys are mistakes (a typo must not pass silently), and
    loaded content never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentError(HipflexError):
    """A content file is malformed; `str()` is the one line shown to the person who wrote it."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: about 10x faster, same marks


def _line_map(node: yaml.Node, loc: Location, lines: dict[Location, int]) -> None:
    """Record the (1-based) line of every mapping key and sequence item under `node`."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)
            _line_map(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*loc, index), lines)


def read_yaml(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse one YAML file; return its data and a map from data path to line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContentError(path, None, f"cannot read file ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=LOADER)
        data = yaml.load(text, Loader=LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ContentError(path, line, f"not valid YAML: {exc.problem}") from None
    lines: dict[Location, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines


def line_of(lines: dict[Location, int], loc: Location) -> int | None:
    """The line of the deepest part of `loc` that exists in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def load_model(path: Path, model: type[Model]) -> tuple[Model, dict[Location, int]]:
    """Read `path` as `model`, turning the first validation error into a ContentError."""
    data, lines = read_yaml(path)
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(part for part in first["loc"] if isinstance(part, str | int))
        field = ".".join(str(part) for part in loc) or "(top level)"
        raise ContentError(path, line_of(lines, loc), f"{field}: {first['msg']}") from None


def read_fhir_json(path: Path, resource_type: str, model: type[BaseModel]) -> dict[str, Any]:
    """A FHIR R4 resource file (ValueSet, ConceptMap) as parsed JSON, checked by fhir.resources' `model`; a
    mistake is a ContentError naming the file, the element (and the line, for a JSON syntax error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContentError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ContentError(path, None, f"not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("resourceType") != resource_type:
        raise ContentError(path, None, f"resourceType must be {resource_type}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function"))
        raise ContentError(path, None, f"{resource_type}.{where}: not valid FHIR R4 ({first['msg']})") from None
    return data
