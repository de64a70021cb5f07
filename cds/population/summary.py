"""What a population run tells an analyst, as typed models: one patient's outcome, and the run's summary.

`summary.json` is `Summary` dumped, with its JSON Schema written beside it as `summary.schema.json`, so a
notebook or a dashboard can rely on its shape; `report.html` is rendered from the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SUMMARY_FILE = "summary.json"
SCHEMA_FILE = "summary.schema.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientOutcome(_Model):
    """What the service would show one patient; every card is written `kind:side` (`-` without a side)."""

    cards: list[str] = Field(description="Card kinds and sides, sorted")
    makers: dict[str, list[str]] = Field(description="Card -> the rule labels that made it ('R4 v1')")
    rules: list[str] = Field(description="Every rule label behind any card")
    issues: list[str] = Field(description="Data-issue codes of the patient's records")
    age: int | None = Field(description="Age in years, when the export gives a birth date")
    in_scope: bool = Field(description="Whether the rules' scope finding was derived")


class Unreadable(_Model):
    problem: str = Field(description="What was wrong with the lines or files, in words")
    count: int
    first: list[str] = Field(description="The first few places, file:line")


class Change(_Model):
    change: str = Field(description="'gained|lost <card>:<side> by <rules>'")
    patients: int
    examples: list[str] = Field(description="A few keyed patient hashes, to inspect in patients.parquet")


class Summary(_Model):
    as_of: str = Field(description="The date the run decided as of (ISO 8601)")
    patients_read: int
    patients_evaluated: int
    out_of_scope: int = Field(description="Evaluated patients the rules' scope finding left out (age, user)")
    resources_without_a_patient: int
    cards: dict[str, int] = Field(description="'kind:side' -> patients with that card")
    rules_fired: dict[str, int] = Field(description="Rule label -> patients with a card it stood behind")
    data_issues: dict[str, int] = Field(description="Data-issue code -> patients with it")
    ages_of_patients_with_cards: dict[str, int] = Field(description="Decade ('30s') -> patients with cards")
    seconds: float
    patients_per_second: float | None
    rules: str = Field(description="The rule file evaluated, or '(configured)'")
    baseline_rules: str | None = Field(default=None, description="The rule file compared against, if any")
    patients_whose_cards_change: int | None = None
    baseline_cards: dict[str, int] | None = Field(default=None, description="'kind:side' -> patients with that card "
                                                                            "under the baseline")
    examples_are: str = Field(default="keyed patient hashes", description="What the examples of each change are")
    labels: dict[str, str] = Field(default_factory=dict, description="Every card, rule, data-issue code and change "
                                                                     "named here, in clinical words")
    rule_changes: list[str] | None = Field(default=None, description="Thresholds (old → new) and rules that differ "
                                                                     "from the baseline")
    changes: list[Change] | None = None
    worker_peak_rss_mb: list[float] = Field(default_factory=list, description="Each Dask worker's peak memory")
    unreadable: list[Unreadable] = Field(default_factory=list, description="Lines and files not read, by kind")
    download_problems: list[str] = Field(default_factory=list, description="What `--from-server` could not fetch")

    def write(self, folder: Path) -> None:
        """summary.json and, beside it, the JSON Schema it follows."""
        (folder / SUMMARY_FILE).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        schema = Summary.model_json_schema() | {"$schema": "https://json-schema.org/draft/2020-12/schema"}
        (folder / SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
