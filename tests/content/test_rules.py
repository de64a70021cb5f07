"""Every rule of the v1 decision table fires when it should and stays quiet when it should not,
and a broken rule file stops loading with file, line and reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cds.clinical.engine import DurableEngine
from cds.clinical.outcome import Evaluation
from cds.clinical.reference_engine import evaluate_reference
from cds.content.facts import InputFact
from cds.content.files import ContentError
from cds.content.rules import RuleSet, load_rules
from cds.content.terminology import Terminology
from tests.support.builders import Facts
from tests.support.paths import RULES

F = Facts
Case = Callable[[], list[InputFact]]

# rule id -> (facts that fire it, closest facts that do not)
CASES: dict[str, tuple[Case, Case]] = {
    "D1-mmt": (lambda: [F.mmt("right", "4+")], lambda: [F.mmt("right", "5-")]),
    "D1-hhd": (lambda: [F.asymmetry("left", 15.0)], lambda: [F.asymmetry("left", 14.99)]),
    "D2": (lambda: [F.mmt("right", "4"), F.mmt("right", "5", standard=True)],
           lambda: [F.mmt("right", "4"), F.mmt("right", "5-", standard=True)]),
    "D3-angle": (lambda: [F.hyperextension("left", 5)], lambda: [F.hyperextension("left", 4.9)]),
    "D3-marked": (lambda: [F.hyperextension("left", 10.5)], lambda: [F.hyperextension("left", 10)]),
    "D3-gait": (lambda: [F.gait("right")], lambda: [F.gait("right", seen=False)]),
    "D4-site": (lambda: [F.pain("right", "retropatellar")], lambda: [F.pain("right", "hip")]),
    "D4-condition": (lambda: [F.pfp("left")], lambda: [F.pain("left", "knee")]),
    "D5": (lambda: [F.red_flag()], lambda: [F.pain("left")]),
    "D5-fever": (lambda: [F.temperature(38.0), F.pain("right")], lambda: [F.temperature(37.9), F.pain("right")]),
    "D5-anticoagulated-swelling": (lambda: [F.anticoagulated(), F.swelling()], lambda: [F.swelling()]),
    "D5-anticoagulated-effusion": (lambda: [F.anticoagulated(), F.red_flag()],
                                   lambda: [F.anticoagulated(), F.red_flag("recent-knee-trauma")]),
    "D10-pain": (lambda: [F.pain("left", "knee")], lambda: [F.pain("left", "hip")]),
    "D10-unsided": (lambda: [F.unsided_pain()], lambda: [F.pain("left", "hip")]),
    "D10-condition": (lambda: [F.pfp("left")], lambda: [F.pain("left", "hip")]),
    "D10-swelling": (lambda: [F.swelling()], lambda: [F.anticoagulated()]),
    "D6-symmetric": (lambda: [F.mmt("right", "4"), F.asymmetry("left", 9.9)],
                     lambda: [F.mmt("right", "4"), F.asymmetry("left", 10)]),
    "D6-opposite": (lambda: [F.mmt("right", "4"), F.asymmetry("left", 12)],
                    lambda: [F.mmt("right", "4"), F.asymmetry("right", 12)]),
    "D7": (lambda: [F.pain("right")], lambda: [F.pain("right"), F.hhd("right", 100)]),
    "D8-eligible": (lambda: F.adult(16), lambda: F.adult(15)),
    "D8": (lambda: F.adult(59), lambda: [*F.adult(59), F.red_flag()]),
    "D9-hhd": (lambda: [F.asymmetry("left", 10)], lambda: [F.asymmetry("left", 9.99)]),
    "D9-mmt": (lambda: [F.mmt("left", "5-")], lambda: [F.mmt("left", "5")]),
    "R0": (lambda: F.adult(30, "patient"), lambda: F.adult(30, "practitioner")),
    "R1": (lambda: F.adult(60), lambda: F.adult(59)),
    "R2-pain": (lambda: [*F.adult(), F.red_flag(), F.pain("right")],
                lambda: [*F.adult(), F.red_flag()]),
    "R2-impairment": (lambda: [*F.adult(), F.red_flag(), F.hyperextension("left", 6)],
                      lambda: [*F.adult(12), F.red_flag(), F.hyperextension("left", 6)]),
    "R2-complaint": (lambda: [*F.adult(), F.red_flag(), F.pain("left", "knee")], lambda: [*F.adult(), F.red_flag()]),
    "R14-complaint": (lambda: [*F.adult(), F.unclassified(), F.pain("left", "knee")],
                      lambda: [*F.adult(), F.unclassified(), F.pain("left", "knee"), F.red_flag()]),
    "R14-impairment": (lambda: [*F.adult(), F.unclassified(), F.hyperextension("left", 6)],
                       lambda: [*F.adult(), F.hyperextension("left", 6)]),
    "R3": (lambda: [*F.adult(), F.pain("right"), F.mmt("right", "4")],
           lambda: [*F.adult(), F.pain("right"), F.mmt("right", "4"), F.asymmetry("left", 2)]),
    "R4": (lambda: [*F.adult(), F.pain("right"), F.mmt("right", "4"), F.gait("right")],
           lambda: [*F.adult(), F.pain("right"), F.mmt("right", "4"), F.gait("left")]),
    "R5": (lambda: [*F.adult(), F.pain("left"), F.hyperextension("left", 7)],
           lambda: [*F.adult(), F.pain("left"), F.hyperextension("left", 7), F.mmt("left", "5")]),
    "R6": (lambda: [*F.adult(), F.pain("right"), F.mmt("right", "4"), F.asymmetry("right", 3)],
           lambda: [*F.adult(), F.pain("left"), F.mmt("right", "4"), F.asymmetry("right", 3)]),
    "R7": (lambda: [F.mmt("right", "3")], lambda: [F.mmt("right", "3"), F.pain("left")]),
    "R8": (lambda: [F.pain("right"), F.mmt("right", "5")], lambda: [F.pain("right"), F.mmt("right", "4")]),
    "R9": (lambda: [F.pain("left"), F.mmt("left", "5"), F.mmt("right", "4")],
           lambda: [F.pain("left"), F.mmt("left", "4"), F.mmt("right", "4")]),
    "R10": (lambda: [*F.adult(), F.pain("left"), F.pain("right"), F.mmt("left", "4"), F.mmt("right", "4")],
            lambda: [*F.adult(), F.pain("left"), F.pain("right"), F.mmt("left", "4"), F.mmt("right", "5")]),
    "R12": (lambda: [F.referral()], lambda: [F.pain("left")]),
    "D4-unsided": (lambda: [F.unsided_pain("peripatellar")], lambda: [F.unsided_pain("knee")]),
    "D8-adolescent": (lambda: [F.adult(age=17)[0]], lambda: [F.adult(age=18)[0]]),
    "R13": (lambda: [*F.adult(), F.unsided_pain("peripatellar")],
            lambda: [*F.adult(), F.unsided_pain("peripatellar"), F.pain("left")]),
}


def fired(evaluation: Evaluation) -> set[str]:
    items = [*evaluation.findings, *evaluation.recommendations, *evaluation.suppressed]
    return {r.id for item in items for r in item.rules}


@pytest.fixture(scope="module")
def engine(ruleset: RuleSet) -> DurableEngine:
    return DurableEngine(ruleset, name="test_rules")


def test_every_active_rule_has_a_case(ruleset: RuleSet) -> None:
    assert {r.id for r in ruleset.active()} == set(CASES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id: str, engine: DurableEngine, ruleset: RuleSet) -> None:
    facts = CASES[rule_id][0]()
    assert rule_id in fired(engine.evaluate(facts))
    assert rule_id in fired(evaluate_reference(ruleset, facts))


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_does_not_fire(rule_id: str, engine: DurableEngine, ruleset: RuleSet) -> None:
    facts = CASES[rule_id][1]()
    assert rule_id not in fired(engine.evaluate(facts))
    assert rule_id not in fired(evaluate_reference(ruleset, facts))


def test_red_flag_leaves_only_the_warning(engine: DurableEngine) -> None:
    facts = [*F.adult(), F.red_flag(), F.pain("right"), F.mmt("right", "4"), F.gait("right")]
    assert [(r.name, r.side) for r in engine.evaluate(facts).recommendations] == [("red-flag", None)]


def test_bilateral_card_replaces_the_two_sided_ones(engine: DurableEngine) -> None:
    result = engine.evaluate(CASES["R10"][0]())
    assert [(r.name, r.side) for r in result.recommendations] == [("hip-strengthening", "bilateral")]
    assert {(r.name, r.side) for r in result.suppressed} == {("hip-strengthening", "left"),
                                                             ("hip-strengthening", "right")}


def test_draft_rule_runs_only_when_drafts_are_included(terminology: Terminology) -> None:
    facts = [*F.adult(), F.rejected()]
    active = DurableEngine(load_rules(RULES / "knee-hip-v1.yaml", terminology), name="no_drafts")
    drafts = DurableEngine(load_rules(RULES / "knee-hip-v1.yaml", terminology, include_drafts=True),
                           name="with_drafts")
    assert "R11" not in fired(active.evaluate(facts))
    assert [r.name for r in drafts.evaluate(facts).recommendations] == ["data-quality"]


def test_negated_findings_come_from_earlier_stages(ruleset: RuleSet) -> None:
    """The stratification invariant the durable_rules join order relies on."""
    produced_at: dict[tuple[str, str], int] = {}
    for rule in ruleset.compiled:
        for e in rule.effects:
            if e.verb != "suppress":
                key = ("finding" if e.verb == "derive" else "recommendation", e.name)
                produced_at[key] = max(produced_at.get(key, 0), rule.stage)
    for rule in ruleset.compiled:
        for p in rule.negatives:
            assert produced_at.get((p.type, p.kind), 0) < rule.stage, rule.key


# ---- broken rule files --------------------------------------------------------------------

GOOD = (RULES / "knee-hip-v1.yaml").read_text()


def broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in GOOD
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "reason"),
    [
        ("{fact: knee-hyperextension-gait, side: same", "{fact: knee-hyperextension-gaze, side: same",
         "knee-hyperextension-gaze", "unknown fact 'knee-hyperextension-gaze'"),
        ("degrees: {above: hyperextension_marked}", "degrees: {over: hyperextension_marked}",
         "degrees: {over:", "unknown comparison 'over'"),
        ("grade_rank: {at_most: weak_mmt_grade}}\n    then:\n      - derive: end-range-hip-flexion-weakness",
         "grade: {at_most: weak_mmt_grade}}\n    then:\n      - derive: end-range-hip-flexion-weakness",
         "grade: {at_most", "needs a number"),
        ('value: "4+"', 'value: "4++"', 'value: "4++"', "not an MRC grade"),
        ("status: active\n    title: Selective", "status: maybe\n    title: Selective", "status: maybe",
         "status"),
        ("- {finding: in-scope}\n      - {finding: anterior-knee-pain, side: same}\n      - {finding: end",
         "- {finding: in-scop}\n      - {finding: anterior-knee-pain, side: same}\n      - {finding: end",
         "- id: R3", "'in-scop' is not produced by any active rule"),
        ("  - id: D2\n", "  - id: D1-mmt\n", "rules:", "rule id D1-mmt is used twice"),
    ],
)
def test_broken_rule_file_names_file_line_and_reason(
        tmp_path: Path, terminology: Terminology, old: str, new: str, needle: str, reason: str) -> None:
    path = broken(tmp_path, old, new)
    with pytest.raises(ContentError) as caught:
        load_rules(path, terminology)
    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, needle)
    assert reason in caught.value.reason


def test_cycle_through_not_is_refused(tmp_path: Path, terminology: Terminology) -> None:
    path = broken(tmp_path, "      - {fact: unclassified-knee-records, not: true}\n    then:\n      - derive: in-scope",
                  "      - {finding: in-scope, not: true}\n    then:\n      - derive: in-scope")
    with pytest.raises(ContentError, match="cycle") as caught:
        load_rules(path, terminology)
    assert caught.value.line == path.read_text().splitlines().index("  - id: D8") + 1
    assert "rule D8" in caught.value.reason


def test_invalid_yaml_names_the_line(tmp_path: Path, terminology: Terminology) -> None:
    path = broken(tmp_path, "    title: Selective end-range", "    title: [Selective end-range")
    with pytest.raises(ContentError, match="not valid YAML") as caught:
        load_rules(path, terminology)
    assert caught.value.line is not None
    assert caught.value.line >= line_of(path, "[Selective")


@pytest.mark.parametrize(("role", "finding"), [("scope_finding", "eligible"), ("red_flag_finding", "red-flag-present")])
def test_a_finding_renamed_without_its_role_stops_start_up_at_the_role(tmp_path: Path, terminology: Terminology,
                                                                       role: str, finding: str) -> None:
    """The rules stay consistent (every use renamed); only the role still names the old finding."""
    text = (RULES / "knee-hip-v1.yaml").read_text()
    renamed = re.sub(rf"(?<![\w_])(derive|finding): {re.escape(finding)}\b(?!-)", rf"\1: {finding}-v2", text)
    (tmp_path / "rules.yaml").write_text(renamed)
    with pytest.raises(ContentError) as caught:
        load_rules(tmp_path / "rules.yaml", terminology)
    role_line = next(n for n, line in enumerate(renamed.splitlines(), 1) if line.strip().startswith(f"{role}:"))
    assert str(caught.value) == (f"{tmp_path / 'rules.yaml'}:{role_line}: roles.{role}: no rule derives the "
                                 f"finding {finding!r}")
