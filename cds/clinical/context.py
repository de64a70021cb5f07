"""What validation knows about the call (whose data, as of when, for whom) and what it produces."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cds.content.facts import DataIssue, InputFact


@dataclass(frozen=True)
class Context:
    """What validation needs to know about the call: whose data, as of when, for whom."""

    today: dt.date
    patient_id: str | None = None
    user_id: str | None = None
    lookback_days: int = 90
    selected_orders: frozenset[str] = frozenset()  # ServiceRequest ids being ordered now (order-select)
    memberships: frozenset[tuple[str, str, str]] = frozenset()  # (system, code, ValueSet url) a terminology server
    # answered for this call's codes (SNOMED CT descendants of the shipped concepts)


@dataclass
class Validated:
    """Facts for the engine and the data issues found on the way; `patient_id` is whose data they are."""

    facts: list[InputFact] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    patient_id: str | None = None

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)
