"""Shared fixtures: the real content files, the real pipeline, and builders for facts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.facts import (
    AgeFact,
    AudienceFact,
    GaitFact,
    HhdAsymmetryFact,
    HhdFact,
    HyperextensionFact,
    InputFact,
    KneeConditionFact,
    MmtFact,
    PainSiteFact,
    RedFlagFact,
    ReferralFact,
    RejectedInputFact,
)
from cds.pipeline import Pipeline
from cds.rules import RuleSet, load_rules
from cds.settings import PROJECT_ROOT, Settings
from cds.terminology import Terminology, load_terminology

EXAMPLES = PROJECT_ROOT / "fhir_examples"
RULES = PROJECT_ROOT / "rules"
GRADES = ["0", "1", "2", "3-", "3", "3+", "4-", "4", "4+", "5-", "5"]


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    return load_terminology(RULES / "terminology.yaml")


@pytest.fixture(scope="session")
def ruleset(terminology: Terminology) -> RuleSet:
    return load_rules(RULES / "knee-hip-v1.yaml", terminology)


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(Settings())


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def expected_for(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((bundle.parent / bundle.name.replace(".json", ".expected.yaml")).read_text())
    return data


def load_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


AS_OF = dt.date(2026, 11, 24)


class Facts:
    """Builders for engine facts, so rule tests read like the decision table."""

    @staticmethod
    def adult(age: int = 30, role: str = "practitioner") -> list[InputFact]:
        return [AgeFact(id="age", years=age), AudienceFact(id="audience", role=role)]  # type: ignore[arg-type]

    @staticmethod
    def mmt(side: str, grade: str, standard: bool = False) -> MmtFact:
        kind = "standard-mmt" if standard else "end-range-mmt"
        return MmtFact(id=f"{kind}:{side}", kind=kind, side=side, grade=grade,  # type: ignore[arg-type]
                       grade_rank=GRADES.index(grade))

    @staticmethod
    def hhd(side: str, newtons: float) -> HhdFact:
        return HhdFact(id=f"hhd:{side}", side=side, newtons=newtons)  # type: ignore[arg-type]

    @staticmethod
    def asymmetry(weaker: str, percent: float) -> HhdAsymmetryFact:
        return HhdAsymmetryFact(id="hhd-asymmetry", side=weaker, percent=percent)  # type: ignore[arg-type]

    @staticmethod
    def hyperextension(side: str, degrees: float) -> HyperextensionFact:
        return HyperextensionFact(id=f"hyper:{side}", side=side, degrees=degrees)  # type: ignore[arg-type]

    @staticmethod
    def gait(side: str, seen: bool = True) -> GaitFact:
        return GaitFact(id=f"gait:{side}", side=side, observed="yes" if seen else "no")  # type: ignore[arg-type]

    @staticmethod
    def pain(side: str, site: str = "peripatellar") -> PainSiteFact:
        return PainSiteFact(id=f"pain:{side}:{site}", side=side, site=site)  # type: ignore[arg-type]

    @staticmethod
    def pfp(side: str) -> KneeConditionFact:
        return KneeConditionFact(id=f"pfp:{side}", side=side, condition="patellofemoral-pain")  # type: ignore[arg-type]

    @staticmethod
    def red_flag(flag: str = "knee-effusion") -> RedFlagFact:
        return RedFlagFact(id=f"flag:{flag}", flag=flag, display=flag)

    @staticmethod
    def referral() -> ReferralFact:
        return ReferralFact(id="referral")

    @staticmethod
    def rejected(kind: str = "end-range-mmt") -> RejectedInputFact:
        return RejectedInputFact(id=f"rejected:{kind}", input=kind)


@pytest.fixture
def facts() -> type[Facts]:
    return Facts
