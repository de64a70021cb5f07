"""What changed between two rule files, in the rule pages' words."""

from __future__ import annotations

from pathlib import Path

from cds.content.changes import compare
from cds.content.rules import RuleSet, load_rules
from cds.content.terminology import Terminology
from tests.support.paths import RULES


def edited(tmp_path: Path, terminology: Terminology, *edits: tuple[str, str]) -> RuleSet:
    text = (RULES / "knee-hip-v1.yaml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules(path, terminology)


def test_a_threshold_change_names_the_rules_that_read_it(tmp_path: Path, ruleset: RuleSet,
                                                         terminology: Terminology) -> None:
    new = edited(tmp_path, terminology, ("  hyperextension_present:\n    value: 5",
                                         "  hyperextension_present:\n    value: 8"))
    changes = compare(ruleset, new)
    assert [str(p) for p in changes.parameters] == ["hyperextension present threshold 5° → 8°"]
    assert [str(r) for r in changes.rules] == ["D3-angle v1 → v1: hyperextension present 5° → 8°"]
    assert [c.rule for c in changes.kept_version] == ["D3-angle"]


def test_a_new_version_and_a_removed_rule(tmp_path: Path, ruleset: RuleSet, terminology: Terminology) -> None:
    new = edited(tmp_path, terminology, ("  - id: R4\n    version: 1\n    status: active",
                                         "  - id: R4\n    version: 2\n    status: draft"))
    changes = compare(ruleset, new)
    assert [str(r) for r in changes.rules] == ["R4 v1 → v2: status active → draft"]
    assert changes.kept_version == []
    assert compare(ruleset, ruleset).rules == []
