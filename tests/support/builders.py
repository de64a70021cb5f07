"""Builders: engine facts that read like the decision table, CDS Hooks bodies from the examples, rule files."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import yaml

from cds.clinical.validate import bundle_resources
from cds.content.facts import (
    AgeFact,
    AnticoagulationFact,
    AudienceFact,
    BodyTemperatureFact,
    GaitFact,
    HhdAsymmetryFact,
    HhdFact,
    HyperextensionFact,
    InputFact,
    KneeConditionFact,
    KneeSwellingFact,
    MmtFact,
    PainSiteFact,
    RedFlagFact,
    ReferralFact,
    RejectedInputFact,
    UnclassifiedKneeRecordsFact,
    UnsidedPainSiteFact,
)
from cds.content.terminology import load_terminology
from cds.hooks.examplerequests import prefetch_from
from cds.hooks.prefetch import prefetch_templates
from tests.support.paths import EXAMPLES, RULES, load_json

GRADES = ["0", "1", "2", "3-", "3", "3+", "4-", "4", "4+", "5-", "5"]

AS_OF = dt.date(2026, 11, 24)


class Facts:
    """Builders for engine facts, so rule tests read like the decision table."""

    @staticmethod
    def adult(age: int = 30, role: str = "practitioner") -> list[InputFact]:
        return [AgeFact(id="age", years=age), AudienceFact(id="audience", role=role)]

    @staticmethod
    def mmt(side: str, grade: str, standard: bool = False) -> MmtFact:
        kind = "standard-mmt" if standard else "end-range-mmt"
        return MmtFact(id=f"{kind}:{side}", kind=kind, side=side, grade=grade,
                       grade_rank=GRADES.index(grade))

    @staticmethod
    def hhd(side: str, newtons: float) -> HhdFact:
        return HhdFact(id=f"hhd:{side}", side=side, newtons=newtons)

    @staticmethod
    def asymmetry(weaker: str, percent: float) -> HhdAsymmetryFact:
        return HhdAsymmetryFact(id="hhd-asymmetry", side=weaker, percent=percent)

    @staticmethod
    def hyperextension(side: str, degrees: float) -> HyperextensionFact:
        return HyperextensionFact(id=f"hyper:{side}", side=side, degrees=degrees)

    @staticmethod
    def gait(side: str, seen: bool = True) -> GaitFact:
        return GaitFact(id=f"gait:{side}", side=side, observed="yes" if seen else "no")

    @staticmethod
    def pain(side: str, site: str = "peripatellar") -> PainSiteFact:
        return PainSiteFact(id=f"pain:{side}:{site}", side=side, site=site)

    @staticmethod
    def unsided_pain(site: str = "peripatellar") -> UnsidedPainSiteFact:
        return UnsidedPainSiteFact(id=f"pain:unsided:{site}", site=site)

    @staticmethod
    def pfp(side: str) -> KneeConditionFact:
        return KneeConditionFact(id=f"pfp:{side}", side=side, condition="patellofemoral-pain")

    @staticmethod
    def red_flag(flag: str = "knee-effusion") -> RedFlagFact:
        return RedFlagFact(id=f"flag:{flag}", flag=flag, display=flag)

    @staticmethod
    def temperature(celsius: float) -> BodyTemperatureFact:
        return BodyTemperatureFact(id="body-temperature", celsius=celsius)

    @staticmethod
    def anticoagulated() -> AnticoagulationFact:
        return AnticoagulationFact(id="anticoagulation")

    @staticmethod
    def swelling() -> KneeSwellingFact:
        return KneeSwellingFact(id="knee-swelling")

    @staticmethod
    def unclassified() -> UnclassifiedKneeRecordsFact:
        return UnclassifiedKneeRecordsFact(id="unclassified-knee-records", count=1, display="a knee record")

    @staticmethod
    def referral() -> ReferralFact:
        return ReferralFact(id="referral")

    @staticmethod
    def rejected(kind: str = "end-range-mmt") -> RejectedInputFact:
        return RejectedInputFact(id=f"rejected:{kind}", input=kind)



def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def example_prefetch(name: str = "P01-classic-right.json") -> dict[str, Any]:
    """An example bundle split into the discovery's prefetch keys, as an EHR would send it."""
    templates = prefetch_templates(load_terminology(RULES / "terminology.yaml"))
    return prefetch_from(bundle_resources(load_json(EXAMPLES / name)), templates)


def hook_request(hook: str = "patient-view", name: str = "P01-classic-right.json", **overrides: Any) -> dict[str, Any]:
    prefetch = example_prefetch(name)
    context: dict[str, Any] = {"userId": "Practitioner/COREPRACTITIONER1", "patientId": prefetch["patient"]["id"]}
    if hook == "encounter-start":
        context["encounterId"] = "enc-1"
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}
    return body | overrides



def threshold_rules(folder: Path, count: int, op: str = "equals") -> Path:
    """A rule file of `count` one-condition rules on knee hyperextension, each with its own value (engine limits)."""
    content = {"ruleset": "thresholds", "version": "0.0.1",
               "parameters": {f"t{i}": {"value": i / 10, "unit": "deg", "description": "x"} for i in range(count)},
               "rules": [{"id": f"T{i}", "version": 1, "status": "active", "title": "threshold",
                          "evidence": {"grade": "E", "source": "test"},
                          "when": [{"fact": "knee-hyperextension", "side": "same", "degrees": {op: f"t{i}"}}],
                          "then": [{"derive": f"over-{i}"}]} for i in range(count)]}
    path = folder / f"thresholds-{count}-{op}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path
