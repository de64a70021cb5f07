"""Every scenario in features/, the rule coverage they give, and the analysts' step reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_bdd import scenarios

from cds.clinical.pipeline import Pipeline
from tests.support import featurereports, stepreference, steps
from tests.support.paths import PROJECT_ROOT

FEATURES = Path(os.environ.get("HIPFLEX_FEATURES_DIR", PROJECT_ROOT / "features"))

scenarios(str(FEATURES))


def test_every_active_rule_is_fired_by_a_scenario(request: pytest.FixtureRequest, pipeline: Pipeline) -> None:
    """Runs after the scenarios (pytest keeps file order) and writes the reports; the rules are those the scenarios
    ran on (HIPFLEX_RULES_DIR: a release candidate's)."""
    ruleset = pipeline.ruleset
    scenario_items = [i for i in request.session.items if "_pytest_bdd_example" in getattr(i, "fixturenames", ())]
    if not scenario_items or any(i.nodeid not in steps.SCENARIOS for i in scenario_items):
        pytest.skip("rule coverage needs the whole feature suite in one run")
    coverage = featurereports.rule_coverage([(r.id, r.version) for r in ruleset.active()])
    report = featurereports.write_reports(coverage)
    active = {f"{r.id} v{r.version}" for r in ruleset.active()}
    uncovered = sorted(rule for rule, names in coverage.items() if rule in active and not names)
    assert not uncovered, f"active rules no scenario fires: {', '.join(uncovered)} (see {report})"


def test_the_step_reference_is_current() -> None:
    written = (PROJECT_ROOT / "features" / "README.md").read_text()
    assert written == stepreference.reference(), "features/README.md is stale: python -m tests.support.stepreference"


def test_every_step_is_documented_with_an_example_that_it_matches() -> None:
    from pytest_bdd import parsers

    assert len(steps.VOCABULARY) >= 20
    for doc in steps.VOCABULARY:
        assert doc.doc, f"step '{doc.pattern}' has no docstring"
        keyword, _, text = doc.example.partition(" ")
        assert keyword == doc.keyword
        parser = parsers.parse(doc.pattern.replace("{card}", "{card:Card}"), extra_types={"Card": steps.card_words})
        assert parser.is_matching(text), f"the example '{doc.example}' does not match '{doc.pattern}'"


def test_an_unknown_step_fails_naming_the_closest_documented_steps(tmp_path: Path) -> None:
    (tmp_path / "typo.feature").write_text(
        "Feature: Typo\n  Scenario: A misspelt step\n    Given a 30-year-old female patient\n"
        "    And the right knee hyperextend 8 degrees\n    When the clinician opens the chart\n"
        "    Then the service shows no cards\n")
    env = os.environ | {"HIPFLEX_FEATURES_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_features.py",
                           "-k", "misspelt"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no step 'Given the right knee hyperextend 8 degrees'" in done.stdout
    closest = done.stdout.split("Closest documented steps:", 1)[1].splitlines()[1]
    assert closest.endswith("Given the right knee hyperextends 8°")


def test_the_example_scenario_of_the_step_reference_runs(tmp_path: Path) -> None:
    """A new patient written only from features/README.md runs without touching Python."""
    reference = (PROJECT_ROOT / "features" / "README.md").read_text()
    (tmp_path / "new.feature").write_text(reference.split("```gherkin\n", 1)[1].split("```", 1)[0])
    env = os.environ | {"HIPFLEX_FEATURES_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_features.py",
                           "-k", "weak_above_90_on_the_painful_side"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout
