"""The `hipflex-cds` command, run as a user would run it (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.cli import main
from cds.content.catalog import RulePage
from cds.content.terminology import load_terminology
from tests.support.paths import EXAMPLES, RULES

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
    assert topics == ["hip-strengthening", "patellar-glide"]
    assert all("(right)" in c["suggestions"][0]["label"] for c in body["cards"])


def test_evaluate_for_people_names_cards_rules_and_date() -> None:
    run = cli("evaluate", str(P01))
    assert run.returncode == 0
    assert "as of 2026-11-24 (Bundle.timestamp)" in run.stdout
    assert "  info     Right knee: anterior knee pain with weak hip flexion above 90°" in run.stdout
    assert "Findings: right anterior knee pain; a knee complaint; right weak hip flexion above 90°;" in run.stdout
    assert "\x1b[" not in run.stdout  # piped: no colour codes
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
    assert set(catalog["R3"]) == set(RulePage.model_fields)  # the shape of /rules in JSON
    assert catalog["R3"]["version"] == 1
    assert catalog["R3"]["evidence_grade"] == "F"  # its weakest claim: the psoas emphasis
    assert [c["grade"] for c in catalog["R3"]["claims"]] == ["A", "C/D", "F"]
    assert catalog["R11"]["status"] == "draft"
    assert "R3" in cli("rules").stdout


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON (line 1, column 2"),
    ('{"hello": 1}', "not a FHIR resource (no resourceType)"),
    ('{"resourceType": "Encounter", "id": "e"}', "a Encounter cannot be evaluated"),
    ('{"resourceType": "Patient", "id": "p", "name": [{"text": "\\ud800"}]}',
     "lone surrogate escape (such as \\ud800 without its pair) at name[0].text"),
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
    shutil.copytree(source / "valuesets", rules / "valuesets")
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
    coding = drafts[0]["code"]["coding"][0]
    physiotherapy = load_terminology(RULES / "terminology.yaml").physiotherapy_codes
    assert (coding["system"], coding["code"]) in physiotherapy  # a code the service reads as physiotherapy


def test_evaluate_order_select_gives_the_services_cards_without_a_second_referral() -> None:
    """The CLI and the service share one hook call; here the CLI, in test_app the service, on the same data."""
    body = json.loads(cli("evaluate", str(P01), "--hook", "order-select", "--json").stdout)
    topics = [c["source"]["topic"]["code"] for c in body["cards"]]
    assert topics == ["hip-strengthening", "patellar-glide"]
    assert not any(c.get("suggestions") for c in body["cards"])
    assert all("no new referral is suggested" in c["detail"] for c in body["cards"])


@pytest.mark.parametrize(("name", "sentence"), [
    ("P15a", "No cards: the patient is 12; the rules cover ages 16 to 59."),
    ("P04", "No cards: no current anterior knee pain is recorded."),
    ("P03", "No cards: hip flexion tested normal."),
])
def test_no_cards_says_why_in_one_plain_sentence(name: str, sentence: str) -> None:
    run = cli("evaluate", name)
    assert run.returncode == 0
    assert sentence in run.stdout.splitlines()


def test_evaluate_exits_1_on_data_errors_and_json_can_carry_them_in_an_extension() -> None:
    bad = str(EXAMPLES / "P13-bad-input.json")
    assert cli("evaluate", bad).returncode == 1
    run = cli("evaluate", bad, "--json", "--with-issues")
    body = json.loads(run.stdout)
    assert run.returncode == 1
    assert set(body) == {"cards", "extension"}
    assert "invalid-value" in {i["code"] for i in body["extension"]["urn:hipflex-cds:data-issues"]}
    assert set(json.loads(cli("evaluate", bad, "--json").stdout)) == {"cards"}


def test_version_and_help_say_what_every_option_does() -> None:
    assert cli("--version").stdout.strip() == "hipflex-cds 0.1.0"
    text = cli("evaluate", "--help").stdout
    for option in ("--hook", "--user", "--as-of YYYY-MM-DD", "--with-issues", "--patient ID", "exit status:\n  0 fine"):
        assert option in text
    assert "`" not in cli("--help").stdout
    assert "--workers" in cli("serve", "--help").stdout
    assert "--terminology" in cli("rules", "--help").stdout
    wrong = cli("evaluate", "P01", "--as-of", "24/11/2026")
    assert (wrong.returncode, "'24/11/2026' is not a date (YYYY-MM-DD)" in wrong.stderr) == (2, True)


@pytest.mark.parametrize(("content", "message"), [
    ({"resourceType": "Bundle", "type": "collection", "timestamp": "yesterday", "entry": []},
     "Bundle.timestamp 'yesterday' is not a date-time"),
    ({"resourceType": "Bundle", "type": "collection", "entry": "oops"}, "Bundle.entry must be a list of entries"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "x", "birthDate": "1990-13-45"}}]},
     "Patient/x birthDate '1990-13-45' is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
])
def test_each_bad_input_gets_one_line_and_exit_2(tmp_path: Path, content: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    for command in ("validate", "evaluate", "request"):
        run = cli(command, str(path))
        assert (run.returncode, run.stderr.count("\n")) == (2, 1), run.stderr
        assert message in run.stderr
        assert "Traceback" not in run.stderr


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + P01.read_bytes())
    run = cli("evaluate", str(path), "--json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["cards"]) == 2


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_json_never_makes_validate_or_evaluate_crash(tmp_path: Path, data: st.DataObject) -> None:
    """In-process (a subprocess per example would take minutes): any JSON around P01 exits 0, 1 or 2."""
    bundle = json.loads(P01.read_text())
    entry = data.draw(st.integers(0, len(bundle["entry"]) - 1), label="entry")
    resource = bundle["entry"][entry]["resource"]
    key = data.draw(st.sampled_from(sorted(resource)), label="element")
    resource[key] = data.draw(JSON_VALUES, label="value")
    if data.draw(st.booleans(), label="replace the whole file"):
        bundle = data.draw(JSON_VALUES, label="file")
    path = tmp_path / "any.json"
    path.write_text(json.dumps(bundle))
    for command in ("validate", "evaluate"):
        assert main([command, str(path), "--json"]) in (0, 1, 2)


def test_serve_with_an_issuer_whose_private_key_is_public_listens_on_loopback_only(tmp_path: Path) -> None:
    """The sandbox's signing key is published: with its issuers file the service refuses any address but loopback,
    naming the issuer, before it listens."""
    import cds.hooks

    sandbox = Path(cds.hooks.__file__).with_name("issuers") / "cds-hooks-sandbox.yaml"
    env = {"HIPFLEX_ISSUERS_FILE": str(sandbox), "HIPFLEX_PUBLIC_URL": "https://cds.example.org",
           "HIPFLEX_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "cds.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0: issuer https://sandbox.cds-hooks.org signs with a published private key" \
        in run.stderr + run.stdout


# ---- one line and a documented exit code for every front-door problem (issue 21) -----------------------

def run_with(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={"PATH": "/usr/bin:/bin"} | env)


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in run.stderr.splitlines() if not line.startswith("{")]  # serve's JSON log lines
    assert len(lines) == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    return lines[0]


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("HIPFLEX_LOOKBACK_DAYS", "abc", "HIPFLEX_LOOKBACK_DAYS='abc': input should be a valid integer"),
    ("HIPFLEX_LOOKBACK_DAYS", "0", "HIPFLEX_LOOKBACK_DAYS='0': input should be greater than or equal to 1"),
    ("HIPFLEX_AS_OF", "yesterday", "HIPFLEX_AS_OF='yesterday': input should be a valid date"),
    ("HIPFLEX_PUBLIC_URL", "garbage", "HIPFLEX_PUBLIC_URL='garbage': not an http(s) URL"),
    ("HIPFLEX_CORS_ORIGINS", "https://x", "HIPFLEX_CORS_ORIGINS: not valid JSON"),
    ("HIPFLEX_INCLUDE_DRAFT_RULES", "maybe", "HIPFLEX_INCLUDE_DRAFT_RULES='maybe': input should be a valid boolean"),
    ("HIPFLEX_ISSUERS_FILE", "issuers.yaml", "HIPFLEX_PUBLIC_URL is required with HIPFLEX_ISSUERS_FILE"),
])
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_3(variable: str, value: str, says: str) -> None:
    run = run_with({variable: value}, "evaluate", "P01")
    assert run.returncode == 3
    assert one_line(run).startswith(f"hipflex-cds: {says}")


@pytest.mark.parametrize(("env", "code", "says"), [
    ({"DATABASE_URL": "garbage"}, 3, "DATABASE_URL 'garbage' is not a database URL"),
    ({"DATABASE_URL": "postgresql://u:secret-pw@127.0.0.1:1/db"}, 4,
     "DATABASE_URL 'postgresql://u:***@127.0.0.1:1/db': the database cannot be reached"),
    ({"HIPFLEX_DATA_DIR": "/proc/hipflex"}, 3, "the patient-hash key file /proc/hipflex/patient-hash.key cannot be"),
])
def test_serve_with_a_store_it_cannot_use_says_so_in_one_line(env: dict[str, str], code: int, says: str) -> None:
    run = run_with(env, "serve", "--port", "1")
    assert run.returncode == code
    line = one_line(run)
    assert says in line
    assert "secret-pw" not in run.stderr + run.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["serve", "--port", "99999"], "argument --port: '99999' is not a port (1-65535)"),
    (["serve", "--workers", "0"], "argument --workers: '0': must be above 0"),
    (["synth", "--patients", "-5", "--out", "{tmp}/s"], "argument --patients: '-5': must be above 0"),
    (["synth", "--out", "{tmp}/a-file"], "argument --out: {tmp}/a-file: exists and is not a folder"),
    (["impact", "{tmp}", "--out", "/proc/x"], "argument --out: /proc/x: cannot be written"),
    (["impact", "{tmp}", "--out", "{tmp}/o", "--workers", "-1"], "argument --workers: '-1': must be above 0"),
    (["impact", "{tmp}", "--out", "{tmp}/o", "--from-server", "http://x", "--token-file", "{tmp}/none"],
     "argument --token-file: {tmp}/none: no such file"),
])
def test_options_are_checked_where_they_are_parsed(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "a-file").write_text("x")
    run = run_with({}, *[a.format(tmp=tmp_path) for a in args])
    assert run.returncode == 2
    assert says.format(tmp=tmp_path) in run.stderr
    assert "Traceback" not in run.stderr


def test_an_unreachable_dask_scheduler_is_one_line_and_exit_4(tmp_path: Path) -> None:
    (tmp_path / "Patient.000.ndjson").write_text('{"resourceType": "Patient", "id": "p1"}\n')
    run = run_with({"HIPFLEX_PATIENT_HASH_KEY": "k"}, "impact", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--scheduler", "tcp://127.0.0.1:1", timeout=120)
    assert run.returncode == 4
    assert "--scheduler tcp://127.0.0.1:1: no Dask scheduler answers there" in one_line(run)


@pytest.mark.parametrize(("name", "says"), [
    ("P1", "P1: ambiguous, it could be P10-hhd-over-mmt, P11-bilateral, P12a"),
    ("P12", "P12: ambiguous, it could be P12a-hyperextension-5deg, P12b-hyperextension-4deg, P12c-hhd-15-percent, "
            "P12d-hhd-14.9-percent"),
    ("P99", "P99: no such file, and no example starts with it (`hipflex-cds examples` lists them)"),
])
def test_example_names_resolve_by_unique_prefix_or_say_what_matches(name: str, says: str) -> None:
    run = cli("evaluate", name)
    assert run.returncode == 2
    assert one_line(run) == f"hipflex-cds: {says}" or says in one_line(run)


@pytest.mark.parametrize(("name", "expected"), [("P15b", "No cards: the user is the patient"),
                                                ("P17", "Cards (2):")])
def test_an_example_is_evaluated_in_the_context_its_manifest_gives(name: str, expected: str) -> None:
    run = cli("evaluate", name)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    assert "(the example's date)" in run.stdout


def test_examples_lists_every_example_with_one_line_and_its_context() -> None:
    run = cli("examples")
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert len(lines) == len(list(EXAMPLES.glob("*.json")))
    assert any(line.startswith("P15b-patient-viewer") and "[as Patient/p15]" in line for line in lines)
    assert any(line.startswith("P17-site-codes-concept-map") and "ConceptMaps in maps/" in line for line in lines)


def test_output_cut_short_by_a_closed_pipe_exits_0() -> None:
    done = subprocess.run(f"{sys.executable} -m cds.cli evaluate P01 | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_every_subcommand_has_a_description_examples_and_exit_codes_in_its_help() -> None:
    top = cli("--help").stdout
    for command in ("validate", "evaluate", "request", "rules", "examples", "synth", "impact", "serve"):
        assert f"    {command}" in top
        text = cli(command, "--help").stdout
        assert "examples:\n  hipflex-cds" in text, command
        assert "exit status:" in text, command
    assert "HIPFLEX_ISSUERS_FILE" in cli("serve", "--help").stdout
    assert "HIPFLEX_PATIENT_HASH_KEY" in cli("impact", "--help").stdout
    assert "HIPFLEX_RULES_DIR" in cli("evaluate", "--help").stdout
