"""Where the project's files are, read as the tests need them (examples with their expected outcomes)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT_ROOT / "fhir_examples"
RULES = PROJECT_ROOT / "rules"

EXAMPLE_DATE = dt.date(2026, 11, 24)  # the example bundles' timestamp: their observations are 5 days old


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def expected_for(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((bundle.parent / bundle.name.replace(".json", ".expected.yaml")).read_text())
    return data



def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
