"""Assemble facts across resources: the latest reading wins, same-time disagreements are conflicts,
bilateral readings count for both sides, and dynamometer asymmetry is computed from both sides.

The asymmetry is computed here, in Python, because the engine must not compare two facts
(durable_rules issue #381). A new observation kind needs one entry in `FACTS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds.clinical.context import Validated
from cds.content.facts import (
    BodyTemperatureFact,
    DataIssue,
    GaitFact,
    HhdAsymmetryFact,
    HhdFact,
    HyperextensionFact,
    InputFact,
    IssueCode,
    MmtFact,
    PainScoreFact,
    PainSiteFact,
    UnsidedPainSiteFact,
)
from cds.content.terminology import Side


@dataclass(frozen=True)
class Reading:
    """One usable observation value before duplicates are resolved."""

    kind: str
    side: Side | None
    date: dt.date
    issued: str
    ref: str
    value: Any


def _base(r: Reading) -> dict[str, Any]:
    return {"id": f"{r.kind}:{r.ref}:{r.side or '-'}", "source": r.ref, "date": r.date}


# Input kind (rules/terminology.yaml) -> the fact it becomes; None for a side-specific kind read without a side.
FACTS: dict[str, Callable[[Reading], InputFact]] = {
    "end-range-mmt": lambda r: MmtFact(**_base(r), kind="end-range-mmt", side=r.side, grade=r.value[0],
                                       grade_rank=r.value[1]),
    "standard-mmt": lambda r: MmtFact(**_base(r), kind="standard-mmt", side=r.side, grade=r.value[0],
                                      grade_rank=r.value[1]),
    "end-range-hhd": lambda r: HhdFact(**_base(r), side=r.side, newtons=r.value),
    "knee-hyperextension": lambda r: HyperextensionFact(**_base(r), side=r.side, degrees=r.value),
    "knee-hyperextension-gait": lambda r: GaitFact(**_base(r), side=r.side, observed="yes" if r.value else "no"),
    "pain-severity": lambda r: PainScoreFact(**_base(r), score=r.value),
    "pain-location": lambda r: PainSiteFact(**_base(r), side=r.side, site=r.value),
    "body-temperature": lambda r: BodyTemperatureFact(**_base(r), celsius=r.value),
}
UNSIDED = {"pain-severity", "body-temperature"}  # kinds that describe the whole patient, not one side


def assemble(readings: list[Reading], out: Validated) -> None:
    """Keep the latest reading per input and side; same time, different value = conflict; then asymmetry."""
    expanded: list[Reading] = []
    for r in readings:
        if r.side == "bilateral" and r.kind == "end-range-hhd":
            out.issues.append(DataIssue(resource=r.ref, path="Observation.bodySite", severity="error",
                                        code=IssueCode.no_side,
                                        message="dynamometer force must be recorded for each side separately"))
            continue
        sides: tuple[Side | None, ...] = ("left", "right") if r.side == "bilateral" else (r.side,)
        expanded += [Reading(r.kind, s, r.date, r.issued, r.ref, r.value) for s in sides]
    groups: dict[tuple[str, Side | None], list[Reading]] = {}
    for r in expanded:
        groups.setdefault((r.kind, r.side), []).append(r)
    chosen: dict[tuple[str, Side | None], Reading] = {}
    for key, group in groups.items():
        group.sort(key=lambda r: (r.date, r.issued), reverse=True)
        top = [r for r in group if (r.date, r.issued) == (group[0].date, group[0].issued)]
        if len({repr(r.value) for r in top}) > 1:
            refs = ", ".join(sorted({r.ref for r in top}))
            out.issues.append(DataIssue(resource=top[0].ref, path="Observation.value[x]", severity="warning",
                                        code=IssueCode.conflicting_values,
                                        message=f"{key[0]} {key[1] or ''} recorded twice at the same time with "
                                                f"different values ({refs}): neither is used"))
            continue
        chosen[key] = top[0]
    for reading in chosen.values():
        if reading.side is None and reading.kind not in UNSIDED:
            out.issues.append(DataIssue(resource=reading.ref, path="Observation.bodySite", severity="warning",
                                        code=IssueCode.no_side,
                                        message="pain location recorded without a side: not used for side-specific "
                                                "rules"))
            out.facts.append(UnsidedPainSiteFact(**_base(reading), site=reading.value))
            continue
        out.facts.append(FACTS[reading.kind](reading))
    _asymmetry(chosen, out)


def _asymmetry(chosen: dict[tuple[str, Side | None], Reading], out: Validated) -> None:
    left, right = chosen.get(("end-range-hhd", "left")), chosen.get(("end-range-hhd", "right"))
    if left is None or right is None:
        one = left or right
        if one is not None:
            out.issues.append(DataIssue(resource=one.ref, path="Observation", severity="information",
                                        code=IssueCode.one_side_only,
                                        message="dynamometer force for one side only: asymmetry needs both sides"))
        return
    if left.date != right.date:
        out.issues.append(DataIssue(resource=right.ref, path="Observation.effective[x]", severity="warning",
                                    code=IssueCode.different_dates,
                                    message="left and right dynamometer forces are from different dates: asymmetry "
                                            "not computed"))
        return
    weaker, stronger = (left, right) if left.value < right.value else (right, left)
    percent = round((stronger.value - weaker.value) / stronger.value * 100, 2)
    out.facts.append(HhdAsymmetryFact(id="hhd-asymmetry", source=weaker.ref, date=weaker.date,
                                      side=weaker.side if percent > 0 else "left", percent=percent,
                                      weaker_newtons=weaker.value, stronger_newtons=stronger.value))
