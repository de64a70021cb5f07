"""The service under attack and under a faulty EHR, on a real server: deadlines, SSRF, never a 500,
bounded work, tenants, strict bodies. Each case here once broke the service (issue 16)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.jsonlimits import JSON_DEPTH_LIMIT
from cds.web.app import create_app
from tests.support.builders import example_prefetch, hook_request, searchset
from tests.support.paths import EXAMPLE_DATE
from tests.support.servers import FhirStub, running, served_by_cli, service_settings
from tests.support.signing import ISSUER, Signer

PATIENT_VIEW = "/cds-services/hipflex-patient-view"
PUBLIC = "https://cds.example.org"
JSON = {"Content-Type": "application/json"}


def fetching(stub: FhirStub, token: str = "ehr-token-7", **context: Any) -> dict[str, Any]:
    """A request with no prefetch: everything is to be read from `stub`."""
    body = hook_request(fhirServer=stub.base, fhirAuthorization={
        "access_token": token, "token_type": "Bearer", "expires_in": 30, "scope": "user/*.read", "subject": "x"})
    del body["prefetch"]
    body["context"] |= context
    return body


@pytest.fixture
def guarded(tmp_path: Path, fhir_stub: FhirStub) -> Iterator[str]:
    """Authentication off; the stub listed as a FHIR server; a 2 s deadline for all reads of a call."""
    settings = service_settings(tmp_path, fhir_servers=[fhir_stub.base], fhir_deadline_seconds=2,
                                fhir_read_seconds=5, max_calls_in_flight=200)
    with running(create_app(settings)) as url:
        yield url


# ---- deadlines -----------------------------------------------------------------------------------------

def serve_p01(stub: FhirStub, under: str = "") -> None:
    """P01 at the paths the discovery templates give (below `under`), so that reads succeed (slowly, if the stub
    trickles)."""
    data = example_prefetch()
    stub.serve(f"{under}Patient/p01", data["patient"])
    for key, path in (("observations", "Observation"), ("conditions", "Condition"), ("procedures", "Procedure"),
                      ("serviceRequests", "ServiceRequest")):
        stub.serve(under + path, data[key])
    for path in ("MedicationRequest", "MedicationStatement"):
        stub.serve(under + path, searchset([]))


def test_a_trickling_fhir_server_ends_the_call_at_the_deadline(guarded: str, fhir_stub: FhirStub) -> None:
    serve_p01(fhir_stub)
    fhir_stub.trickle_seconds = 0.5
    started = time.monotonic()
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", json=fetching(fhir_stub), timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert "did not answer within 2 s" in response.json()["message"]
    assert elapsed < 2 + 1.5, elapsed


@pytest.mark.no_cover  # timed against the event loop: coverage's tracer would slow it
def test_a_hundred_slow_calls_leave_health_and_prefetch_calls_answering(tmp_path: Path) -> None:
    """100 calls stuck on a FHIR server that trickles (in its own process) for the whole 8 s deadline; meanwhile
    /health and a prefetch-only call answer within 4 s, so they did not queue behind the slow calls."""
    import subprocess
    import sys

    from tests.support.servers import free_port

    port = free_port()
    trickle = subprocess.Popen([sys.executable, "-m", "tests.support.trickle_server", str(port)])
    base = f"http://127.0.0.1:{port}/fhir"
    settings = service_settings(tmp_path, fhir_servers=[base], fhir_deadline_seconds=8, max_calls_in_flight=200)
    body = hook_request(fhirServer=base)
    del body["prefetch"]

    async def storm(url: str) -> tuple[list[int], int, int]:
        limits = httpx.Limits(max_connections=None)  # the client's own pool must not be what queues
        async with httpx.AsyncClient(timeout=30, limits=limits) as client, httpx.AsyncClient() as other:
            slow = [asyncio.ensure_future(client.post(f"{url}{PATIENT_VIEW}", json=body)) for _ in range(100)]
            await asyncio.sleep(1.0)  # the slow calls are in flight now
            health = await other.get(f"{url}/health", timeout=4)
            quick = await other.post(f"{url}{PATIENT_VIEW}", json=hook_request(), timeout=4)
            return [r.status_code for r in await asyncio.gather(*slow)], health.status_code, quick.status_code

    try:
        time.sleep(0.5)
        with running(create_app(settings)) as url:
            slow, health, quick = asyncio.run(storm(url))
    finally:
        trickle.kill()
        trickle.wait(10)
    assert (health, quick) == (200, 200)
    assert set(slow) == {412}


@pytest.mark.no_cover  # timed against the event loop: coverage's tracer would slow it
def test_a_burst_on_one_slow_server_leaves_another_servers_reads_as_fast_as_before(tmp_path: Path,
                                                                                  fhir_stub: FhirStub) -> None:
    """64 calls at once against a trickling server fill only that origin's pool: afterwards, and again 10 s later,
    a call reading from another server answers with cards within its normal time (it once got 412 until restart)."""
    import subprocess
    import sys

    from tests.support.servers import free_port

    serve_p01(fhir_stub)
    port = free_port()
    trickle = subprocess.Popen([sys.executable, "-m", "tests.support.trickle_server", str(port)])
    slow_base = f"http://127.0.0.1:{port}/fhir"
    settings = service_settings(tmp_path, fhir_servers=[slow_base, fhir_stub.base], fhir_deadline_seconds=2,
                                max_calls_in_flight=200)
    slow_body, good_body = hook_request(fhirServer=slow_base), hook_request(fhirServer=fhir_stub.base)
    del slow_body["prefetch"], good_body["prefetch"]
    health: list[dict[str, Any]] = []

    async def burst_then_reads(url: str) -> tuple[set[int], list[tuple[int, float]]]:
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            health.append((await client.get(f"{url}/health")).json())
            calls = [asyncio.ensure_future(client.post(f"{url}{PATIENT_VIEW}", json=slow_body)) for _ in range(64)]
            await asyncio.sleep(1.0)
            health.append((await client.get(f"{url}/health")).json())
            slow = await asyncio.gather(*calls)
            reads = []
            for pause in (0.0, 10.0):
                await asyncio.sleep(pause)
                started = time.monotonic()
                good = await client.post(f"{url}{PATIENT_VIEW}", json=good_body)
                reads.append((good.status_code, time.monotonic() - started))
            return {r.status_code for r in slow}, reads

    try:
        time.sleep(0.5)
        with running(create_app(settings)) as url:
            slow, reads = asyncio.run(burst_then_reads(url))
    finally:
        trickle.kill()
        trickle.wait(10)
    assert slow == {412}
    assert [status for status, _ in reads] == [200, 200]
    assert all(took < 2.0 for _, took in reads), reads  # well inside the 2 s deadline: no queue behind the burst
    before, during = health
    assert (before["status"], before["fhir_client"]["status"]) == ("ok", "ok")
    assert (during["status"], during["fhir_client"]["origins_with_a_full_pool"]) == ("degraded", 1)
    assert during["fhir_client"]["reads_in_flight"] >= 20


def test_beyond_the_bound_on_calls_in_flight_the_answer_is_503_with_retry_after(tmp_path: Path,
                                                                               fhir_stub: FhirStub) -> None:
    serve_p01(fhir_stub)
    fhir_stub.trickle_seconds = 1.0
    settings = service_settings(tmp_path, fhir_servers=[fhir_stub.base], fhir_deadline_seconds=2,
                                max_calls_in_flight=2)

    async def flood(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*[client.post(f"{url}{PATIENT_VIEW}", json=fetching(fhir_stub))
                                               for _ in range(6)]))

    with running(create_app(settings)) as url:
        responses = asyncio.run(flood(url))
    busy = [r for r in responses if r.status_code == 503]
    assert len(busy) >= 3
    assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "busy" for r in busy)


# ---- SSRF ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("server", [
    "http://127.0.0.1:{port}/fhir",          # the stub itself, but not listed
    "http://localhost:{port}/fhir",
    "http://0x7f000001:{port}/fhir",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/fhir",
    "http://[::1]:{port}/fhir",
    "https://fhir.elsewhere.example/r4",
])
def test_an_unlisted_fhir_server_is_refused_without_a_connection(tmp_path: Path, fhir_stub: FhirStub,
                                                                  server: str) -> None:
    port = fhir_stub.base.split(":")[2].split("/")[0]
    body = fetching(fhir_stub)
    body["fhirServer"] = server.format(port=port)
    with running(create_app(service_settings(tmp_path, fhir_servers=["https://fhir.hospital.example/r4"]))) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=body)
    assert response.status_code == 412
    assert "not one this service may read from" in response.json()["message"]
    assert fhir_stub.seen == []


@pytest.mark.parametrize("escape", ["/ok/../admin", "/ok/./../admin", "/ok/%2e%2e/admin", "/ok/%2E%2E%2Fadmin",
                                    "/ok/..%5Cadmin", "/ok/.."])
def test_dot_segments_cannot_leave_a_listed_path(tmp_path: Path, fhir_stub: FhirStub, escape: str) -> None:
    """Listed: {stub}/ok. The path is refused before any connection, so no server can resolve it to /admin."""
    body = fetching(fhir_stub)
    body["fhirServer"] = fhir_stub.base + escape
    listed = service_settings(tmp_path, fhir_servers=[fhir_stub.base + "/ok"])
    with running(create_app(listed)) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=body)
        body["fhirServer"] = fhir_stub.base + "/ok"
        serve_p01(fhir_stub, under="ok/")
        inside = httpx.post(f"{url}{PATIENT_VIEW}", json=body)
    assert response.status_code == 412
    assert "not one this service may read from" in response.json()["message"]
    assert inside.status_code == 200
    assert inside.json()["cards"]
    assert all(seen.path.startswith("ok/") for seen in fhir_stub.seen)


def test_with_nothing_listed_no_fhir_server_is_read(tmp_path: Path, fhir_stub: FhirStub) -> None:
    with running(create_app(service_settings(tmp_path))) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=fetching(fhir_stub))
    assert response.status_code == 412
    assert fhir_stub.seen == []


def test_a_listed_host_name_that_resolves_to_loopback_is_refused(tmp_path: Path, fhir_stub: FhirStub) -> None:
    """A name is listed, but it answers with a loopback address: never connect (only a listed address may be)."""
    port = fhir_stub.base.split(":")[2].split("/")[0]
    named = f"http://ip6-localhost:{port}/fhir"
    body = fetching(fhir_stub)
    body["fhirServer"] = named
    with running(create_app(service_settings(tmp_path, fhir_servers=[named]))) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=body)
    assert response.status_code == 412
    message = response.json()["message"]
    assert "resolves to an address this service does not read from" in message or "could not be read" in message
    assert fhir_stub.seen == []


def test_an_issuer_that_lists_fhir_servers_reads_only_those(tmp_path: Path, fhir_stub: FhirStub,
                                                            signer: Signer) -> None:
    """HIPFLEX_FHIR_SERVERS is inherited only by an issuer that lists none; a list of its own is the whole list."""
    (tmp_path / "client-jwks.json").write_text(json.dumps(signer.jwks()))
    issuers = {"issuers": [{"iss": ISSUER, "jwks_file": "client-jwks.json",
                            "fhir_servers": ["https://fhir.its-own.example/r4"]}]}
    (tmp_path / "issuers.yaml").write_text(yaml.safe_dump(issuers))
    settings = service_settings(tmp_path, issuers_file=tmp_path / "issuers.yaml", public_url=PUBLIC,
                                fhir_servers=[fhir_stub.base])
    with running(create_app(settings)) as url:
        token = signer.token(f"{PUBLIC}{PATIENT_VIEW}")
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=fetching(fhir_stub),
                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 412
    assert "not one this service may read from" in response.json()["message"]
    assert fhir_stub.seen == []


# ---- never a 500 -------------------------------------------------------------------------------------------

def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("mangle", "status"), [
    (lambda b: b | {"extension": deep(100_000)}, 400),
    (lambda b: b | {"extension": deep(JSON_DEPTH_LIMIT + 5)}, 400),
    (lambda b: b | {"fhirServer": "http://[::1", "fhirAuthorization": None}, 400),
    (lambda b: {k: v for k, v in b.items() if k != "prefetch"} | {"fhirServer": f"http://{'a' * 300}.example/f"}, 412),
    (lambda b: b | {"fhirServer": "http://exa\u0000mple.org/fhir"}, 400),
    (lambda b: b | {"fhirServer": "http://ok.example/fhir", "fhirAuthorization": {
        "access_token": "t\u00f6ken", "token_type": "Bearer", "expires_in": 1, "scope": "s", "subject": "s"}}, 400),
    (lambda b: {**b, "context": b["context"] | {"patientId": "p01\n"}}, 400),
    (lambda b: {**b, "context": b["context"] | {"userId": "Practitioner/1\n"}}, 400),
])
def test_bodies_that_once_crashed_the_service_get_a_400(guarded: str, mangle: Any, status: int) -> None:
    body = mangle(hook_request())
    try:
        raw = json.dumps(body)
    except RecursionError:  # Python's own encoder: build the text by hand
        raw = json.dumps(hook_request())[:-1] + ', "extension": ' + "[" * 100_000 + '"x"' + "]" * 100_000 + "}"
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", content=raw.encode(), headers=JSON)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_a_lone_surrogate_in_a_prefetched_record_is_a_400_naming_its_place(guarded: str) -> None:
    """The json module reads "\\ud800" into a string nothing can write out again (it was a 500)."""
    body = hook_request()
    body["prefetch"]["observations"]["entry"][0]["resource"]["note"] = [{"text": "pain \ud800"}]
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 400
    assert "lone surrogate" in response.json()["message"]
    assert "prefetch.observations.entry[0].resource.note[0].text" in response.json()["message"]


def test_a_lone_surrogate_from_the_fhir_server_is_unusable_data_not_a_crash(guarded: str, fhir_stub: FhirStub) -> None:
    fhir_stub.serve("Patient/p01", {"resourceType": "Patient", "id": "p01", "name": [{"text": "\ud800"}]})
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", json=fetching(fhir_stub))
    assert response.status_code == 412
    assert response.json()["field"] == "prefetch.patient"


def test_deep_json_from_the_fhir_server_is_unavailable_data_not_a_crash(guarded: str, fhir_stub: FhirStub) -> None:
    fhir_stub.serve("Patient/p01", {"resourceType": "Patient", "id": "p01", "extension": deep(5000)})
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", json=fetching(fhir_stub))
    assert response.status_code == 412
    assert response.json()["field"] == "prefetch.patient"


def odd(path: str, value: Any) -> Any:
    """P01's prefetch with one element of the first matching resource replaced by `value`."""
    prefetch = copy.deepcopy(example_prefetch())
    rtype, element = path.split(".", 1)
    key = {"Patient": "patient", "Observation": "observations", "Condition": "conditions",
           "Procedure": "procedures", "ServiceRequest": "serviceRequests"}[rtype]
    target = prefetch[key] if rtype == "Patient" else prefetch[key]["entry"][0]["resource"] if prefetch[key].get(
        "entry") else None
    if target is None:
        prefetch[key] = searchset([{"resourceType": rtype, "id": "odd", "status": "active"}])
        target = prefetch[key]["entry"][0]["resource"]
    holder, name = target, element
    while "." in name:
        first, name = name.split(".", 1)
        holder = holder.setdefault(first, {}) if isinstance(holder.get(first, {}), dict) else holder
    holder[name] = value
    return prefetch


@pytest.mark.parametrize(("path", "value"), [
    ("Observation.code.coding", "a string"), ("Observation.code.coding", 42), ("Observation.code.coding", {"x": 1}),
    ("Observation.subject", "Patient/p01"), ("Condition.clinicalStatus", {"coding": 7}),
    ("Condition.code", {"coding": "ICD"}), ("Procedure.bodySite", "knee"), ("ServiceRequest.code", [1, 2]),
    ("Observation.bodySite", ["left"]), ("Observation.valueQuantity", {"value": "heavy"}),
])
def test_odd_shapes_in_resources_are_data_issues_not_crashes(guarded: str, path: str, value: Any) -> None:
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", json=hook_request(prefetch=odd(path, value)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("entries", ["oops", 5, {"resource": {}}, None])
def test_a_bundle_whose_entry_is_not_a_list_is_read_as_no_entries(guarded: str, entries: Any) -> None:
    prefetch = example_prefetch() | {"conditions": {"resourceType": "Bundle", "type": "searchset", "entry": entries,
                                                    "link": "not-a-list"}}
    assert httpx.post(f"{guarded}{PATIENT_VIEW}", json=hook_request(prefetch=prefetch)).status_code == 200


def test_a_searchset_that_includes_the_patient_gives_the_same_cards(guarded: str) -> None:
    prefetch = example_prefetch()
    included = copy.deepcopy(prefetch)
    included["observations"]["entry"].append({"resource": prefetch["patient"], "search": {"mode": "include"}})
    plain = httpx.post(f"{guarded}{PATIENT_VIEW}", json=hook_request(prefetch=prefetch)).json()
    doubled = httpx.post(f"{guarded}{PATIENT_VIEW}", json=hook_request(prefetch=included))
    assert doubled.status_code == 200
    assert [c["summary"] for c in doubled.json()["cards"]] == [c["summary"] for c in plain["cards"]]


def test_two_different_patients_with_one_id_are_a_data_issue(guarded: str) -> None:
    prefetch = copy.deepcopy(example_prefetch())
    other = prefetch["patient"] | {"birthDate": "1950-01-01"}
    prefetch["observations"]["entry"].append({"resource": other})
    response = httpx.post(f"{guarded}{PATIENT_VIEW}", json=hook_request(prefetch=prefetch))
    assert response.status_code == 200
    assert response.json()["cards"] == []  # age unknown: no suggestion


def test_a_body_that_is_not_declared_as_json_is_415(guarded: str) -> None:
    raw = json.dumps(hook_request()).encode()
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = httpx.post(f"{guarded}{PATIENT_VIEW}", content=raw, headers=headers)
        assert (response.status_code, response.json()["error"]) == (415, "unsupported-media-type")
    assert httpx.post(f"{guarded}{PATIENT_VIEW}", content=raw,
                      headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


# ---- bounded work ----------------------------------------------------------------------------------------

def test_too_many_resources_or_feedback_items_are_refused(tmp_path: Path) -> None:
    bare = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "x", "code": "y"}]}}
    prefetch = example_prefetch() | {"observations": searchset([bare | {"id": f"o{i}"} for i in range(60)])}
    with running(create_app(service_settings(tmp_path, max_resources=50, max_feedback_items=3))) as url:
        call = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(prefetch=prefetch))
        item = {"card": "00000000-0000-0000-0000-000000000000", "outcome": "overridden",
                "outcomeTimestamp": "2026-11-24T10:00:00Z"}
        feedback = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json={"feedback": [item] * 4})
    assert (call.status_code, call.json()["error"]) == (400, "too-many-resources")
    assert (feedback.status_code, feedback.json()["field"]) == (400, "feedback")


def distinct_observations(count: int) -> list[dict[str, Any]]:
    """P01's known-code Observations again and again, each with its own id, day and code text (what the attack
    sent, made distinct throughout, so no content-keyed cache makes the copies cheap to check)."""
    source = [e["resource"] for e in example_prefetch()["observations"]["entry"]]
    copies = []
    for index in range(count):
        copy_ = copy.deepcopy(source[index % len(source)])
        copy_["id"] = f"copy-{index}"
        copy_["effectiveDateTime"] = f"2026-11-{1 + index % 24:02d}"
        copy_["code"]["text"] = f"reading {index}"
        copies.append(copy_)
    return copies


def test_reads_of_one_call_together_are_capped_in_bytes(tmp_path: Path, fhir_stub: FhirStub) -> None:
    serve_p01(fhir_stub)
    fhir_stub.serve("Observation", searchset(distinct_observations(200)))  # about 170 kB, each read under its cap
    settings = service_settings(tmp_path, fhir_servers=[fhir_stub.base], fhir_call_bytes=100_000)
    with running(create_app(settings)) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=fetching(fhir_stub))
    assert response.status_code == 412
    assert "over 100000 bytes together (HIPFLEX_FHIR_CALL_BYTES)" in response.json()["message"]


@pytest.mark.no_cover  # timed against the event loop: coverage's tracer would slow this client
def test_large_calls_take_turns_beside_ordinary_ones_and_too_many_are_refused(tmp_path: Path) -> None:
    """Eight large calls (1,500 resources each) at once, then an ordinary one: beyond the one being decided and the
    two allowed to wait, large calls get 503; the ordinary call waits for at most the large call being decided,
    so it finishes before the last accepted large one. The service runs as `serve` runs it, in its own process:
    served from a thread of the test process, it shared the GIL with this client and the collector with every
    object the suite had made, and the ordinary call then waited on those instead (2 of 3 runs of this file)."""
    large = hook_request(prefetch=example_prefetch() | {"observations": searchset(distinct_observations(1500))})
    env = {"HIPFLEX_DATA_DIR": str(tmp_path), "HIPFLEX_PATIENT_HASH_KEY": "test-key",
           "HIPFLEX_AS_OF": EXAMPLE_DATE.isoformat(), "HIPFLEX_LARGE_CALL_RESOURCES": "100",
           "HIPFLEX_MAX_LARGE_CALLS_WAITING": "2", "HIPFLEX_DECISION_CACHE_SIZE": "0"}
    finished: list[str] = []

    async def call(client: httpx.AsyncClient, url: str, name: str, body: dict[str, Any]) -> httpx.Response:
        response = await client.post(f"{url}{PATIENT_VIEW}", json=body)
        finished.append(name)
        return response

    async def scenario(url: str) -> dict[str, httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as client:
            tasks = {f"large-{i}": asyncio.ensure_future(call(client, url, f"large-{i}", large)) for i in range(8)}
            await asyncio.sleep(0.3)
            tasks["ordinary"] = asyncio.ensure_future(call(client, url, "ordinary", hook_request()))
            return {name: await task for name, task in tasks.items()}

    with served_by_cli(env) as url:
        answers = asyncio.run(scenario(url))
    accepted = [name for name, r in answers.items() if name != "ordinary" and r.status_code == 200]
    refused = [r for r in answers.values() if r.status_code == 503]
    assert answers["ordinary"].status_code == 200
    assert len(accepted) >= 3
    assert refused
    assert len(accepted) + len(refused) == 8
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert "HIPFLEX_MAX_LARGE_CALLS_WAITING" in refused[0].json()["message"]
    assert finished.index("ordinary") < max(finished.index(name) for name in accepted), finished


@pytest.mark.parametrize(("item", "field"), [
    ({"overrideReason": {"userComment": "nul \u0000 byte"}}, "feedback.0.overrideReason.userComment"),
    ({"overrideReason": {"reason": {"system": "urn:x", "code": "c\u0000"}}}, "feedback.0.overrideReason.reason.code"),
    ({"outcomeTimestamp": "2026-11-24T10:00:00.000000000000000000000000000000Z"}, "feedback.0.outcomeTimestamp"),
])
def test_feedback_text_the_postgresql_store_cannot_hold_is_400_on_every_store(tmp_path: Path, database_url: str,
                                                                             item: dict[str, Any],
                                                                             field: str) -> None:
    with running(create_app(service_settings(tmp_path, database_url=database_url))) as url:
        card = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()["cards"][0]
        body = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00Z"} | item
        response = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json={"feedback": [body]})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


# ---- tenants ----------------------------------------------------------------------------------------------

def test_feedback_comes_only_from_the_issuer_and_tenant_that_got_the_card(tmp_path: Path, signer: Signer) -> None:
    other = Signer(ec=signer.rsa, rsa=signer.rsa)  # a second client with its own key set
    (tmp_path / "a.json").write_text(json.dumps(signer.jwks()))
    (tmp_path / "b.json").write_text(json.dumps({"keys": [signer.jwks()["keys"][1] | {"kid": "b-1"}]}))
    issuers = {"issuers": [{"iss": ISSUER, "jwks_file": "a.json"},
                           {"iss": "https://other-ehr.example", "jwks_file": "b.json"}]}
    (tmp_path / "issuers.yaml").write_text(yaml.safe_dump(issuers))
    settings = service_settings(tmp_path, issuers_file=tmp_path / "issuers.yaml", public_url=PUBLIC)
    aud = f"{PUBLIC}{PATIENT_VIEW}"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    with running(create_app(settings)) as url:
        card = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(),
                          headers=bearer(signer.token(aud, tenant="clinic-a"))).json()["cards"][0]
        item = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-24T10:00:00Z"}]}
        from_b = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=item, headers=bearer(other.token(
            aud + "/feedback", alg="RS384", iss="https://other-ehr.example", headers={"kid": "b-1"},
            tenant="clinic-a")))
        other_tenant = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=item,
                                  headers=bearer(signer.token(aud + "/feedback", tenant="clinic-b")))
        own = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=item,
                         headers=bearer(signer.token(aud + "/feedback", tenant="clinic-a")))
    assert [r.status_code for r in (from_b, other_tenant, own)] == [404, 404, 200]
    assert from_b.json()["error"] == "unknown-card"


CLAIM_TEXT = "claim must be a string of 1 to 255 printable ASCII characters"


@pytest.mark.parametrize(("claims", "says"), [
    ({"tenant": {"id": "clinic-a"}}, f"the tenant {CLAIM_TEXT}"), ({"tenant": ["a"]}, f"the tenant {CLAIM_TEXT}"),
    ({"tenant": "a\u0000b"}, f"the tenant {CLAIM_TEXT}"), ({"jti": "j\u0000k"}, f"the jti {CLAIM_TEXT}"),
    ({"jti": "j\u00e9"}, f"the jti {CLAIM_TEXT}"), ({"jti": 12345}, "the token could not be verified")])
def test_a_tenant_or_jti_the_store_cannot_key_on_is_a_401_on_every_store(tmp_path: Path, signer: Signer,
                                                                         database_url: str, claims: dict[str, Any],
                                                                         says: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(signer.jwks()))
    (tmp_path / "issuers.yaml").write_text(yaml.safe_dump({"issuers": [{"iss": ISSUER, "jwks_file": "a.json"}]}))
    settings = service_settings(tmp_path, issuers_file=tmp_path / "issuers.yaml", public_url=PUBLIC,
                                database_url=database_url)
    with running(create_app(settings)) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), headers={
            "Authorization": f"Bearer {signer.token(f'{PUBLIC}{PATIENT_VIEW}', **claims)}"})
    assert response.status_code == 401, response.text
    assert says in response.json()["message"]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def test_memory_stays_bounded_under_unique_four_megabyte_resources(tmp_path: Path) -> None:
    """100 calls, each with one unique 4 MB Observation: the structure-check cache keeps digests, not resources."""
    import subprocess
    import sys

    from tests.support.servers import free_port, wait_until_up

    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HIPFLEX_DATA_DIR": str(tmp_path), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_MAX_BODY_BYTES": "6000000"}
    server = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        prefetch = example_prefetch()
        big = copy.deepcopy(prefetch["observations"]["entry"][0]["resource"])
        sizes: list[float] = []
        with httpx.Client(timeout=60) as client:
            for call in range(100):
                big["note"] = [{"text": f"{call:06d}" + "x" * 4_000_000}]
                body = hook_request(prefetch=prefetch | {"observations": searchset([big])})
                assert client.post(f"{url}{PATIENT_VIEW}", json=body).status_code == 200
                if call in (9, 99):
                    sizes.append(rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(10)
    assert sizes[1] - sizes[0] < 60, sizes  # v0.1 grew ~235 MB over 60 such calls


# ---- property: arbitrary JSON around valid bodies never gets a 5xx ----------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value could be swapped (bounded, so big prefetch trees stay cheap)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in list(value.items())[:12]:
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            found += paths(item, (*prefix, index))
    return found


def swapped(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(document)
    holder = copied
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return copied


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[httpx.Client, str]]:
    """A server on this store, started once for all the examples hypothesis runs inside one test call."""
    with running(create_app(service_settings(tmp_path, database_url=database_url))) as url, \
            httpx.Client(timeout=30) as client:
        yield client, url


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_json_inside_a_valid_hook_call_or_feedback_never_gets_a_5xx(
        served: tuple[httpx.Client, str], data: st.DataObject) -> None:
    request = hook_request()
    place = data.draw(st.sampled_from(paths(request)), label="where")
    body = swapped(request, place, data.draw(JSON_VALUES, label="what"))
    feedback = {"feedback": [{"card": "6f1a9a8e-0f5e-4d39-9d1e-0f7d3a2b1c00", "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-24T10:00:00Z", "overrideReason": {"userComment": "x"}}]}
    fb_place = data.draw(st.sampled_from(paths(feedback)), label="feedback where")
    fb_body = swapped(feedback, fb_place, data.draw(JSON_VALUES, label="feedback what"))
    client, url = served
    answered = client.post(f"{url}{PATIENT_VIEW}", content=json.dumps(body), headers=JSON).status_code
    fed = client.post(f"{url}{PATIENT_VIEW}/feedback", content=json.dumps(fb_body), headers=JSON).status_code
    assert answered in (200, 400, 412, 413)
    assert fed in (200, 400, 404, 413)
