"""Population runs: a synthetic Bulk FHIR export, the rules over it on Dask (local and a real scheduler with
worker processes), the per-patient answers checked against the HTTP service, and a rule change's diff."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema_rs
import pyarrow.parquet as pq
import pytest

from cds.hooks.examplerequests import request_for
from cds.population.impact import Run, patient_of, run_impact
from cds.population.ndjson import export_files
from cds.population.synth import synthesise
from cds.web.app import create_app
from tests.support.paths import EXAMPLE_DATE, RULES
from tests.support.servers import free_port, running, service_settings

KEY = b"population-test-key"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    synthesise(400, 7, folder, as_of=EXAMPLE_DATE, per_file=300)
    return folder


def run(export: Path, out: Path, workers: int = 2, scheduler: str | None = None, rules: str | None = None,
        baseline: str | None = None) -> dict[str, Any]:
    """summary.json as an analyst's notebook reads it, after checking it against the schema written beside it."""
    run_impact(export, out, Run(as_of=EXAMPLE_DATE, patient_key=KEY, out=str(out), rules=rules, baseline=baseline),
               scheduler=scheduler, workers=workers)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    jsonschema_rs.validate(json.loads((out / "summary.schema.json").read_text()), summary)
    return summary


def stable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("seconds", "patients_per_second", "worker_peak_rss_mb")}


def by_patient(export: Path) -> dict[str, list[dict[str, Any]]]:
    """The export grouped by patient, read here independently of the impact code."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in export_files(export):
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            groups.setdefault(str(patient_of(resource)), []).append(resource)
    return groups


def digest(pid: str) -> str:
    return hmac.new(KEY, pid.encode(), hashlib.sha256).hexdigest()


def test_a_seed_always_gives_the_same_export_plain_or_gzipped(tmp_path: Path) -> None:
    for compress in (False, True):
        first, second = tmp_path / f"a{compress}", tmp_path / f"b{compress}"
        counts = synthesise(150, 3, first, as_of=EXAMPLE_DATE, per_file=100, compress=compress)
        synthesise(150, 3, second, as_of=EXAMPLE_DATE, per_file=100, compress=compress)
        assert [p.read_bytes() for p in export_files(first)] == [p.read_bytes() for p in export_files(second)]
        assert counts["Patient"] == 150
        assert len(list(export_files(first))) > 5  # several files per type once one is full
    assert synthesise(150, 4, tmp_path / "other", as_of=EXAMPLE_DATE) != counts


def test_the_run_writes_summary_parquet_and_report_and_counts_every_patient(export: Path, tmp_path: Path) -> None:
    summary = run(export, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "patients.parquet").to_pylist()
    assert summary["patients_read"] == summary["patients_evaluated"] == len(table) == 400
    assert Counter(card for row in table for card in row["cards"]) == summary["cards"]
    assert {"hip-strengthening:left", "red-flag:-"} <= set(summary["cards"])
    assert {"stale", "preliminary", "invalid-unit"} <= set(summary["data_issues"])
    assert all(len(row["patient"]) == 64 and not row["patient"].startswith("syn-") for row in table)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Cards by kind and side" in page
    assert "<svg" in page
    assert "http" not in page.split("<body>")[1]  # self-contained: nothing fetched when opened offline
    assert not (tmp_path / "out" / "buckets").exists()


def test_each_patients_cards_equal_the_services_answer(export: Path, tmp_path: Path) -> None:
    run(export, tmp_path / "out")
    rows = {row["patient"]: row for row in pq.read_table(tmp_path / "out" / "patients.parquet").to_pylist()}
    templates = None
    compared = 0
    with running(create_app(service_settings(tmp_path, as_of=EXAMPLE_DATE))) as url, httpx.Client() as client:
        for pid, resources in by_patient(export).items():
            templates = templates or client.get(f"{url}/cds-services").json()["services"][0]["prefetch"]
            body = request_for(resources, "patient-view", templates, "Practitioner/impact")
            cards = client.post(f"{url}/cds-services/hipflex-patient-view", json=body).json()["cards"]
            explained = [c["extension"]["urn:hipflex-cds:explanation"] for c in cards]
            served = sorted(f"{e['recommendation']['card']}:{e['recommendation'].get('side', '-')}" for e in explained)
            rules = sorted({f"{r['id']} v{r['version']}" for e in explained for r in e["rules"]})
            assert (rows[digest(pid)]["cards"], rows[digest(pid)]["rules"]) == (served, rules), pid
            compared += 1
    assert compared == 400


def test_one_and_four_workers_give_the_same_summary(export: Path, tmp_path: Path) -> None:
    assert stable(run(export, tmp_path / "one", workers=1)) == stable(run(export, tmp_path / "four", workers=4))


def test_a_changed_threshold_reports_exactly_the_patients_whose_cards_change(export: Path, tmp_path: Path) -> None:
    from cds.clinical.context import Context
    from cds.clinical.pipeline import Pipeline
    from cds.settings import Settings

    candidate = tmp_path / "candidate.yaml"
    text = (RULES / "knee-hip-v1.yaml").read_text()
    candidate.write_text(text.replace("  hyperextension_present:\n    value: 5",
                                      "  hyperextension_present:\n    value: 7"))
    summary = run(export, tmp_path / "out", rules=str(candidate), baseline=str(RULES / "knee-hip-v1.yaml"))
    table = pq.read_table(tmp_path / "out" / "patients.parquet").to_pylist()
    reported = {row["patient"] for row in table if row["gained"] or row["lost"]}

    def cards(pipeline: Pipeline, pid: str, resources: list[dict[str, Any]]) -> set[str]:
        decision = pipeline.decide(resources, Context(today=EXAMPLE_DATE, patient_id=pid,
                                                      user_id="Practitioner/impact"))
        explained = [c.explanation.recommendation for c in decision.cards]
        return {f"{e.card}:{e.side or '-'}" for e in explained}

    old, new = Pipeline(Settings()), Pipeline(Settings(rule_path=candidate))
    expected = {digest(pid) for pid, resources in by_patient(export).items()
                if cards(old, pid, resources) != cards(new, pid, resources)}
    assert expected, "the synthetic export must hold patients with 5° or 6° of hyperextension"
    assert reported == expected
    assert summary["patients_whose_cards_change"] == len(expected)
    # a higher threshold only takes cards away: glides (R4) and the hip-test card (R5) need hyperextension
    assert {c["change"].split(":")[0] for c in summary["changes"]} <= {"lost patellar-glide", "lost hip-test"}
    assert all(c["examples"] and set(c["examples"]) <= expected for c in summary["changes"])


def test_a_real_dask_scheduler_and_worker_processes_run_it(export: Path, tmp_path: Path) -> None:
    port = free_port()
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"tcp://127.0.0.1:{port}"
    workers = [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        from dask.distributed import Client

        deadline = time.monotonic() + 60
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(client.scheduler_info()["workers"]) == 2
        done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(export), "--out", str(tmp_path / "c"),
                               "--as-of", EXAMPLE_DATE.isoformat(), "--scheduler", address],
                              capture_output=True, text=True, timeout=300, check=False,
                              env={"PATH": "/usr/bin:/bin", "HIPFLEX_PATIENT_HASH_KEY": KEY.decode()})
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
            process.wait(20)
    assert done.returncode == 0, done.stderr[-2000:]
    clustered = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert stable(clustered) == stable(run(export, tmp_path / "local"))


def test_an_export_is_downloaded_from_a_fhir_server_with_the_asynchronous_pattern(export: Path,
                                                                                  tmp_path: Path) -> None:
    """A localhost stub of $export: kick-off 202, two polls answered 202 with Retry-After, then the manifest."""
    import http.server
    import threading

    files = {path.name: path.read_bytes() for path in export_files(export)}
    seen: list[tuple[str, str | None]] = []
    polls = {"count": 0}

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            base = f"http://127.0.0.1:{cast(http.server.HTTPServer, self.server).server_port}/fhir"
            if self.path == "/fhir/$export" and self.headers.get("Prefer") == "respond-async":
                self.send_response(202)
                self.send_header("Content-Location", f"{base}/status/1")
                self.end_headers()
            elif self.path == "/fhir/status/1" and polls["count"] < 2:
                polls["count"] += 1
                self.send_response(202)
                self.send_header("Retry-After", "0.2")
                self.end_headers()
            elif self.path == "/fhir/status/1":
                manifest = {"transactionTime": "2026-11-24T09:00:00Z", "requiresAccessToken": True,
                            "output": [{"type": name.split(".")[0], "url": f"{base}/files/{name}"} for name in files]}
                self.reply(200, json.dumps(manifest).encode())
            elif self.path.startswith("/fhir/files/"):
                self.reply(200, files[self.path.removeprefix("/fhir/files/")])
            else:
                self.reply(404, b"{}")

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("export-token-9\n")
    try:
        done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(tmp_path / "downloaded"), "--out",
                               str(tmp_path / "out"), "--as-of", EXAMPLE_DATE.isoformat(), "--workers", "1",
                               "--from-server", f"http://127.0.0.1:{server.server_address[1]}/fhir",
                               "--token-file", str(token)], capture_output=True, text=True, timeout=300,
                              check=False, env={"PATH": "/usr/bin:/bin", "HIPFLEX_PATIENT_HASH_KEY": KEY.decode()})
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    assert polls["count"] == 2
    assert {auth for _, auth in seen} == {"Bearer export-token-9"}
    assert "export-token-9" not in done.stdout + done.stderr
    downloaded = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stable(downloaded) == stable(run(export, tmp_path / "direct"))


def test_bad_lines_and_files_are_counted_and_named_in_the_summary_not_a_crash(export: Path, tmp_path: Path) -> None:
    """Each kind of unreadable line or file found by the attack run, beside one good file of the export."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = next(p for p in export_files(export) if p.name.startswith("Patient"))
    (folder / good.name).write_bytes(good.read_bytes())
    patient = b'{"resourceType": "Patient", "id": "bad-1"}'
    other = b'{"resourceType": "Patient", "id": "bad-2"}'
    (folder / "Observation.lines.ndjson").write_bytes(b"\n".join([
        b'{"resourceType": "Observation", "id": "o\xff"}', b"[" * 3000 + b"]" * 3000,
        b'{"resourceType": "Observation", "id": "\\ud800"}', b"{not json", b'"just a string"', b""]))
    (folder / "Patient.gzipped.ndjson").write_bytes(gzip.compress(patient))
    (folder / "Patient.truncated.ndjson.gz").write_bytes(gzip.compress(patient + b"\n" + other)[:-12])
    (folder / "Patient.long.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "' + b"x" * 6_000_000 + b'"}\n'
                                                 + other + b"\n")
    done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(folder), "--out", str(tmp_path / "out"),
                           "--as-of", EXAMPLE_DATE.isoformat(), "--workers", "1"], capture_output=True, text=True,
                          timeout=300, check=False, env={"PATH": "/usr/bin:/bin", "HIPFLEX_PATIENT_HASH_KEY": "k"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    found = {p["problem"]: (p["count"], p["first"]) for p in summary["unreadable"]}
    assert found["not UTF-8 (a compressed file without .gz?)"][1][:2] == ["Observation.lines.ndjson:1",
                                                                         "Patient.gzipped.ndjson:1"]
    assert found["JSON nested deeper than 100 levels"] == (1, ["Observation.lines.ndjson:2"])
    assert found["a lone surrogate escape (\\ud800...) that is no character"] == (1, ["Observation.lines.ndjson:3"])
    assert found["not JSON"] == (1, ["Observation.lines.ndjson:4"])
    assert found["not a FHIR resource (no resourceType)"] == (1, ["Observation.lines.ndjson:5"])
    assert found["a line over 5,000,000 bytes"] == (1, ["Patient.long.ndjson:1"])
    assert found["a file that ends early or is not gzip (the rest of it was not read)"][1] == [
        "Patient.truncated.ndjson.gz:2"]
    good_patients = sum(b'"resourceType": "Patient"' in line or b'"resourceType":"Patient"' in line
                        for line in good.read_bytes().splitlines())
    assert summary["patients_read"] == good_patients + 2  # and bad-1 before the truncation, bad-2 after the long line
    assert "lines or files could not be read" in done.stderr
    assert "could not be read" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize("content", [None, "notes.txt", "junk.ndjson"])
def test_an_export_with_nothing_readable_is_refused_in_one_line(tmp_path: Path, content: str | None) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    if content:
        (folder / content).write_text("this is no FHIR\n{also not}\n")
    done = subprocess.run([sys.executable, "-m", "cds.cli", "impact", str(folder), "--out", str(tmp_path / "out"),
                           "--workers", "1"], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "HIPFLEX_PATIENT_HASH_KEY": "k"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert ("not one readable FHIR resource" if content == "junk.ndjson" else "no .ndjson or .ndjson.gz files") \
        in lines[0]
