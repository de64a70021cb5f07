"""The analysts' feature report: every scenario's result and, per rule version, the scenarios that fired it.

Written by test_features.py after the scenarios ran, from what the step plugin (tests/support/steps.py) recorded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.support.paths import PROJECT_ROOT
from tests.support.steps import COVERAGE, SCENARIOS

REPORTS = Path(os.environ.get("HIPFLEX_FEATURE_REPORTS", PROJECT_ROOT / "test-artifacts" / "features"))


def rule_coverage(active: list[tuple[str, int]]) -> dict[str, list[str]]:
    """Every active rule (id and version) with the scenarios that fired it."""
    by_rule: dict[str, list[str]] = {f"{rid} v{version}": [] for rid, version in active}
    for node, rules in sorted(COVERAGE.items()):
        label = describe(node)
        for rule in rules:
            by_rule.setdefault(rule, []).append(label)
    return by_rule


def describe(node: str) -> str:
    info = SCENARIOS.get(node)
    return f"{info['feature']}: {info['scenario']}" + example_suffix(node) if info else node


def example_suffix(node: str) -> str:
    match = re.search(r"\[(.+)\]$", node)
    return f" [{match.group(1)}]" if match else ""


def write_reports(coverage: dict[str, list[str]]) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "rule-coverage.json").write_text(json.dumps(coverage, indent=2))
    lines = ["# Feature report", "", f"{sum(s['status'] == 'passed' for s in SCENARIOS.values())} of "
             f"{len(SCENARIOS)} scenarios passed.", "", "## Scenarios", "", "| feature | scenario | result |",
             "|---|---|---|"]
    for node, info in sorted(SCENARIOS.items(), key=lambda kv: (kv[1]["feature"], kv[0])):
        result = "passed" if info["status"] == "passed" else f"FAILED at `{info['failed_step']}`"
        lines.append(f"| {info['feature']} | {info['scenario']}{example_suffix(node)} | {result} |")
    lines += ["", "## Rule coverage", "", "| rule | scenarios that fired it |", "|---|---|"]
    lines += [f"| {rule} | {'<br>'.join(sorted(set(names))) or '**none**'} |" for rule, names in coverage.items()]
    (REPORTS / "report.md").write_text("\n".join(lines) + "\n")
    return REPORTS / "report.md"
