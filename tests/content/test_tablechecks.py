"""The decision-table checks catch each defect class on a purpose-built broken copy of the shipped content, at
start-up, naming the file and the line (and the rules involved)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds.clinical.pipeline import Pipeline
from cds.content.files import ContentError
from cds.settings import Settings
from tests.support.paths import RULES


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    content = tmp_path / "rules"
    shutil.copytree(RULES, content)
    path = content / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def start_up_error(path: Path) -> ContentError:
    with pytest.raises(ContentError) as caught:
        Pipeline(Settings(rules_dir=path.parent))
    return caught.value


def line_with(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_thresholds_out_of_order(tmp_path: Path) -> None:
    """A borderline dynamometer asymmetry raised above the weak one: every deficit would be 'weak' first."""
    path = broken_copy(tmp_path, "knee-hip-v1.yaml", "  borderline_hhd_asymmetry:\n    value: 10",
                       "  borderline_hhd_asymmetry:\n    value: 20")
    error = start_up_error(path)
    assert error.line == line_with(path, "- [borderline_hhd_asymmetry, weak_hhd_asymmetry]")
    assert "borderline_hhd_asymmetry (20) must be below weak_hhd_asymmetry (15)" in error.reason


def test_grades_are_ordered_by_their_rank(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, "knee-hip-v1.yaml", 'borderline_mmt_grade:\n    value: "5-"',
                       'borderline_mmt_grade:\n    value: "4"')
    assert "weak_mmt_grade (4+) must be below borderline_mmt_grade (4)" in start_up_error(path).reason


def test_a_rule_that_can_never_fire(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, "knee-hip-v1.yaml", "degrees: {at_least: hyperextension_present}}",
                       "degrees: {at_least: hyperextension_present, below: 3}}")
    error = start_up_error(path)
    assert error.line == line_with(path, "- id: D3-angle")
    assert error.reason.startswith("rule D3-angle: can never fire: knee-hyperextension degrees must be")


def test_a_card_withheld_under_the_same_conditions_that_make_it(tmp_path: Path) -> None:
    rule = "      - {finding: knee-hyperextension-pattern, side: same}\n    then:\n      - recommend: patellar-glide\n"
    twin = rule + ("\n  - id: R4-withhold\n    version: 1\n    status: active\n    title: Withholds R4's card\n"
                   "    evidence: {grade: F, source: test}\n    when:\n      - {finding: in-scope}\n"
                   "      - {recommendation: hip-strengthening, side: same}\n"
                   "      - {finding: knee-hyperextension-pattern, side: same}\n    then:\n"
                   "      - suppress: {card: patellar-glide}\n")
    path = broken_copy(tmp_path, "knee-hip-v1.yaml", rule, twin)
    error = start_up_error(path)
    assert error.line == line_with(path, "  - id: R4")
    assert "rule R4: its card 'patellar-glide' is withheld by rule R4-withhold" in error.reason


def test_findings_with_no_card_and_no_reason(tmp_path: Path) -> None:
    fallback = '  - text: "No cards: the recorded findings fit none of the suggestions."'
    path = broken_copy(tmp_path, "cards.yaml", fallback, "")
    error = start_up_error(path)
    assert error.path == str(path)
    assert error.line == line_with(path, "- when: {finding: anterior-knee-pain, no_finding: end-range")
    assert "the last reason must have no `when`" in error.reason
