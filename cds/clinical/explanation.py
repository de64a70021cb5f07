"""Why a card was issued: the typed explanation that cards, store, metrics, CLI, pages and tests share.

Built once with the card and kept beside it, typed; it is written into the card as the extension
`urn:hipflex-cds:explanation` (S2 #extensions) only when the response is encoded, so an EHR or an auditor gets
the same account a clinician reads: the rules with their versions and
evidence, the facts and findings they used, the thresholds, the data issues, the ruleset.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cds.content.facts import DataIssue

EXPLANATION_KEY = "urn:hipflex-cds:explanation"


def rule_label(rule_id: str, version: int) -> str:
    """The one way a rule and its version are written for people and metrics: 'R3 v1'."""
    return f"{rule_id} v{version}"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleUsed(_Part):
    id: str
    version: int
    title: str
    evidence: str = Field(description="Evidence grade of the rule (A strong … F expert opinion)")
    recommends: bool = Field(default=False, description="This rule made the card; the others support it")

    @property
    def label(self) -> str:
        return rule_label(self.id, self.version)


class FactUsed(_Part):
    id: str
    source: str | None = Field(default=None, description="FHIR reference the fact came from")
    description: str


class FindingUsed(_Part):
    name: str
    side: str | None = None


class Recommendation(_Part):
    card: str = Field(description="Card kind, a key of rules/cards.yaml")
    side: str | None = None


class RulesetRef(_Part):
    id: str
    version: str


class Explanation(_Part):
    recommendation: Recommendation
    rules: list[RuleUsed] = Field(default_factory=list)
    facts: list[FactUsed] = Field(default_factory=list)
    findings: list[FindingUsed] = Field(default_factory=list)
    thresholds: dict[str, str] = Field(default_factory=dict, description="Parameter name -> value and meaning")
    issues: list[DataIssue] = Field(default_factory=list, description="Data not used, or not available")
    ruleset: RulesetRef

    def extension(self) -> dict[str, Any]:
        """The card extension carrying this explanation (no nulls or empty lists: S2 #use-of-json)."""
        dumped = self.model_dump(mode="json", exclude_none=True)
        return {EXPLANATION_KEY: {k: v for k, v in dumped.items() if v not in ([], {}, "")}}

    @classmethod
    def of(cls, card: dict[str, Any]) -> Explanation:
        """The explanation inside a card as an EHR received it (JSON): for clients and tests, never for the
        service's own cards, which carry their explanation typed (`cds.clinical.cards.ExplainedCard`)."""
        return cls.model_validate((card.get("extension") or {})[EXPLANATION_KEY])

    @property
    def rule_labels(self) -> list[str]:
        return [r.label for r in self.rules]
