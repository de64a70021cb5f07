"""The `$export` client trusts nothing the server sends: file names, other origins, sizes, polling, manifests.
Each test runs the real client against a real HTTP stub on localhost (the only stand-in: a remote FHIR server)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cds.population.bulkexport import PROBLEMS_FILE, ExportFailed, ExportLimits, download
from tests.support.paths import EXAMPLE_DATE
from tests.support.servers import ExportStub, export_server

PATIENT = b'{"resourceType": "Patient", "id": "p1", "birthDate": "1990-01-01"}\n'
QUICK = ExportLimits(min_poll_seconds=0.05, max_polls=50)


def ready(stub: ExportStub, outputs: list[dict[str, str]], requires_token: bool = True) -> None:
    """Kick-off answered with a status URL whose first poll already has the manifest."""
    stub.kick_off(f"{stub.base}/status/1")
    stub.serve("/fhir/status/1", {"transactionTime": "2026-11-24T09:00:00Z", "requiresAccessToken": requires_token,
                                  "output": outputs})


def test_file_names_come_from_a_checked_type_and_a_counter_never_from_the_manifest(tmp_path: Path) -> None:
    dest = tmp_path / "export" / "inner"
    with export_server() as stub:
        stub.serve("/fhir/files/a", PATIENT)
        ready(stub, [{"type": "../../escaped", "url": f"{stub.base}/files/a"},
                     {"type": str(tmp_path / "absolute"), "url": f"{stub.base}/files/a"},
                     {"type": "Patient", "url": f"{stub.base}/files/a"}])
        result = download(stub.base, "tok", dest, QUICK)
    assert [p.name for p in result.files] == ["Patient.0002.ndjson"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["Patient.0002.ndjson", PROBLEMS_FILE]
    assert len(result.problems) == 2
    assert all("is not a FHIR resource type" in p for p in result.problems)
    assert json.loads((dest / PROBLEMS_FILE).read_text()) == result.problems


def test_a_status_url_on_another_server_is_refused_and_never_sees_the_token(tmp_path: Path) -> None:
    with export_server() as stub, export_server() as other:
        stub.kick_off(f"{other.base}/status/1")
        other.serve("/fhir/status/1", {"output": []})
        with pytest.raises(ExportFailed, match="status URL is on another server"):
            download(stub.base, "secret-token", tmp_path, QUICK)
    assert other.seen == []
    assert stub.auth_for("/fhir/$export") == {"Bearer secret-token"}


def test_files_on_another_server_need_no_token_and_an_allowed_host(tmp_path: Path) -> None:
    with export_server() as stub, export_server() as other:
        other.serve("/fhir/files/b", PATIENT)
        outputs = [{"type": "Patient", "url": f"{other.base}/files/b"}]
        ready(stub, outputs, requires_token=True)
        needs_token = download(stub.base, "secret-token", tmp_path / "a", QUICK)
        ready(stub, outputs, requires_token=False)
        loopback = download(stub.base, "secret-token", tmp_path / "b", QUICK)
        listed = download(stub.base, "secret-token", tmp_path / "c",
                          ExportLimits(min_poll_seconds=0.05, allowed_hosts=(other.origin.removeprefix("http://"),)))
    assert needs_token.files == []
    assert "needs the access token" in needs_token.problems[0]
    assert loopback.files == []
    assert "not a public address" in loopback.problems[0]
    assert [p.read_bytes() for p in listed.files] == [PATIENT]
    assert other.auth_for("/fhir/files/") == {None}  # fetched once, and without the token


def test_a_compressed_answer_is_capped_once_decompressed_and_the_part_is_deleted(tmp_path: Path) -> None:
    bomb = gzip.compress(PATIENT * 200_000)  # about 13 MB decompressed, a few kB sent
    with export_server() as stub:
        stub.serve("/fhir/files/bomb", bomb, Content_Encoding="gzip")
        stub.serve("/fhir/files/ok", PATIENT)
        ready(stub, [{"type": "Patient", "url": f"{stub.base}/files/bomb"},
                     {"type": "Patient", "url": f"{stub.base}/files/ok"}])
        result = download(stub.base, None, tmp_path, ExportLimits(min_poll_seconds=0.05, max_expanded_bytes=1_000_000))
    assert len(bomb) < 100_000
    assert [p.name for p in result.files] == ["Patient.0001.ndjson"]
    assert "once decompressed" in result.problems[0]
    assert not (tmp_path / "Patient.0000.ndjson").exists()


def test_files_as_sent_and_all_files_together_are_capped(tmp_path: Path) -> None:
    with export_server() as stub:
        stub.serve("/fhir/files/big", PATIENT * 20_000)  # 1.3 MB
        stub.serve("/fhir/files/small", PATIENT * 5_000)
        ready(stub, [{"type": "Patient", "url": f"{stub.base}/files/big"},
                     {"type": "Patient", "url": f"{stub.base}/files/small"},
                     {"type": "Patient", "url": f"{stub.base}/files/small"}])
        capped = download(stub.base, None, tmp_path / "a",
                          ExportLimits(min_poll_seconds=0.05, max_file_bytes=1_000_000))
        total = download(stub.base, None, tmp_path / "b",
                         ExportLimits(min_poll_seconds=0.05, max_total_bytes=len(PATIENT) * 28_000))
    assert [p.name for p in capped.files] == ["Patient.0001.ndjson", "Patient.0002.ndjson"]
    assert "as sent" in capped.problems[0]
    assert [p.name for p in total.files] == ["Patient.0000.ndjson", "Patient.0001.ndjson"]
    assert "in all" in total.problems[0]


def test_a_gzip_file_sent_as_it_is_is_kept_as_gz(tmp_path: Path) -> None:
    with export_server() as stub:
        stub.serve("/fhir/files/z", gzip.compress(PATIENT))
        ready(stub, [{"type": "Patient", "url": f"{stub.base}/files/z"}])
        result = download(stub.base, None, tmp_path, QUICK)
    assert [p.name for p in result.files] == ["Patient.0000.ndjson.gz"]
    assert gzip.decompress(result.files[0].read_bytes()) == PATIENT


def test_retry_after_zero_is_polled_no_faster_than_the_minimum_and_no_more_than_the_maximum(tmp_path: Path) -> None:
    with export_server() as stub:
        stub.kick_off(f"{stub.base}/status/1")
        stub.serve("/fhir/status/1", status=202, Retry_After="0")
        started = time.monotonic()
        with pytest.raises(ExportFailed, match="not ready after 4 polls"):
            download(stub.base, None, tmp_path, ExportLimits(min_poll_seconds=0.3, max_polls=4))
        seconds = time.monotonic() - started
    assert sum(path == "/fhir/status/1" for path, _ in stub.seen) == 4
    assert seconds >= 4 * 0.3


@pytest.mark.parametrize(("body", "says"), [(b"[]", "a JSON list, not an object"), (b"{nope", "not JSON"),
                                            (b"[" * 3000 + b"]" * 3000, "not JSON"),
                                            (b'{"output": "x"}', "no output list")])
def test_a_manifest_that_cannot_be_used_is_one_clear_failure(tmp_path: Path, body: bytes, says: str) -> None:
    with export_server() as stub:
        stub.kick_off(f"{stub.base}/status/1")
        stub.serve("/fhir/status/1", body)
        with pytest.raises(ExportFailed, match=says):
            download(stub.base, None, tmp_path, QUICK)


def test_the_cli_reports_what_it_could_not_download_in_one_line_each_and_in_the_summary(tmp_path: Path) -> None:
    with export_server() as stub:
        stub.serve("/fhir/files/a", PATIENT)
        ready(stub, [{"type": "Patient", "url": f"{stub.base}/files/a"}, {"type": "../x", "url": f"{stub.base}/a"}])
        done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(tmp_path / "export"), "--out",
                               str(tmp_path / "out"), "--as-of", EXAMPLE_DATE.isoformat(), "--workers", "1",
                               "--min-poll-seconds", "0.05", "--from-server", stub.base],
                              capture_output=True, text=True, timeout=300, check=False,
                              env={"PATH": "/usr/bin:/bin", "HIPFLEX_PATIENT_HASH_KEY": "k"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not downloaded: manifest output 1: type '../x' is not a FHIR resource type" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["patients_read"] == 1
    assert summary["download_problems"] == ["manifest output 1: type '../x' is not a FHIR resource type; not fetched"]


def test_export_options_must_be_positive_numbers(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--max-polls", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--max-polls: '0': must be above 0" in done.stderr
