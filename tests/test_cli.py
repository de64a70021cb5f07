"""The `hipflex-cds` command, run as a user would run it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import EXAMPLES

P01 = EXAMPLES / "P01-classic-right.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_evaluate_json_prints_the_service_response_for_p01() -> None:
    run = cli("evaluate", str(P01), "--json")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert list(body) == ["cards"]
    topics = [c["source"]["topic"]["code"] for c in body["cards"]]
    assert topics == ["hip-flexor-strengthening", "patellar-glide"]
    assert all("(right)" in c["suggestions"][0]["label"] for c in body["cards"])


def test_evaluate_for_people_names_cards_rules_and_date() -> None:
    run = cli("evaluate", str(P01))
    assert run.returncode == 0
    assert "as of 2026-11-24 (Bundle.timestamp)" in run.stdout
    assert "[info] Right knee: anterior knee pain with weak hip flexion above 90°" in run.stdout
    assert "rules: R3 v1" in run.stdout


def test_validate_exit_status_follows_errors() -> None:
    assert cli("validate", str(P01)).returncode == 0
    bad = cli("validate", str(EXAMPLES / "P13-bad-input.json"))
    assert bad.returncode == 1
    assert "'7' is not an MRC grade" in bad.stdout
    issues = json.loads(cli("validate", str(EXAMPLES / "P13-bad-input.json"), "--json").stdout)["issues"]
    assert {"resource": "Observation/p13-mmt-2", "path": "Observation.valueCodeableConcept"}.items() <= \
        next(i for i in issues if i["resource"] == "Observation/p13-mmt-2").items()


def test_rules_catalog_lists_ids_versions_status_evidence() -> None:
    run = cli("rules", "--json")
    catalog = {r["id"]: r for r in json.loads(run.stdout)}
    assert catalog["R3"]["version"] == 1
    assert catalog["R3"]["evidence"]["grade"] == "F"  # its weakest claim: the psoas emphasis
    assert [c["grade"] for c in catalog["R3"]["evidence"]["claims"]] == ["A", "C/D", "F"]
    assert catalog["R11"]["status"] == "draft"
    assert "R3" in cli("rules").stdout


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON (line 1, column 2"),
    ('{"hello": 1}', "not a FHIR resource (no resourceType)"),
    ('{"resourceType": "Encounter", "id": "e"}', "a Encounter cannot be evaluated"),
])
def test_unusable_files_give_one_line_and_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "input.json"
    path.write_text(content)
    run = cli("evaluate", str(path))
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    run = cli("validate", str(tmp_path / "nope.json"))
    assert (run.returncode, "cannot read file" in run.stderr) == (2, True)


def test_broken_rule_file_stops_with_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    source = EXAMPLES.parent / "rules"
    for name in ("terminology.yaml", "cards.yaml"):
        (rules / name).write_text((source / name).read_text())
    text = (source / "knee-hip-v1.yaml").read_text().replace("status: active", "status: enabled", 1)
    (rules / "knee-hip-v1.yaml").write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "status: enabled" in x)
    run = subprocess.run([sys.executable, "-m", "cds.cli", "rules"], capture_output=True, text=True, timeout=120,
                         env={"HIPFLEX_RULES_DIR": str(rules), "PATH": "/usr/bin:/bin"}, check=False)
    assert run.returncode == 2
    assert f"knee-hip-v1.yaml:{line}: rules.0.status" in run.stderr


def test_request_builds_a_valid_order_select_request_with_a_physiotherapy_draft() -> None:
    run = cli("request", str(P01), "--hook", "order-select")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    drafts = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    assert body["hook"] == "order-select"
    assert body["context"]["selections"] == [f"ServiceRequest/{drafts[0]['id']}"]
    assert drafts[0]["status"] == "draft"
    assert drafts[0]["code"]["coding"][0]["code"] == "91251008"


def test_evaluate_order_select_gives_the_services_cards_without_a_second_referral() -> None:
    """The CLI and the service share one hook call; here the CLI, in test_app the service, on the same data."""
    body = json.loads(cli("evaluate", str(P01), "--hook", "order-select", "--json").stdout)
    topics = [c["source"]["topic"]["code"] for c in body["cards"]]
    assert topics == ["hip-flexor-strengthening", "patellar-glide"]
    assert not any(c.get("suggestions") for c in body["cards"])
    assert all("no new referral is suggested" in c["detail"] for c in body["cards"])
