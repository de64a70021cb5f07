"""The HTTP service, run for real (uvicorn on a free loopback port) and called over HTTP."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import durable_rules_engine
import httpx
import pytest
import yaml
from pydantic import ValidationError

from cds.clinical import engine as engine_module
from cds.clinical.engine import POOL_SIZE
from cds.clinical.explanation import Explanation
from cds.hooks.prefetch import render
from cds.hooks.store import Store
from cds.settings import Settings
from cds.web.app import create_app, serve
from cds.web.observability import JsonFormatter
from tests.support.builders import example_prefetch, hook_request
from tests.support.contract import assert_cds_response, assert_no_empties
from tests.support.paths import EXAMPLES, expected_for
from tests.support.servers import FhirStub, free_port, running, service_settings, wait_until_up
from tests.support.signing import SANDBOX_ISSUER, SANDBOX_KID, Signer, sandbox_issuers, sandbox_token

PATIENT_VIEW = "/cds-services/hipflex-patient-view"
JSON = {"Content-Type": "application/json"}
PUBLIC = "https://cds.example.org"
P01_CARDS = [(c["card"], c["side"]) for c in expected_for(EXAMPLES / "P01-classic-right.json")["cards"]]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(create_app(service_settings(tmp_path_factory.mktemp("service")))) as url:
        yield url


def kinds(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(Explanation.of(c).recommendation.card, Explanation.of(c).recommendation.side) for c in body["cards"]]


def test_discovery_lists_the_three_hooks_without_empty_values(base_url: str) -> None:
    body = httpx.get(f"{base_url}/cds-services").json()
    assert_no_empties(body, "discovery")
    assert {s["hook"] for s in body["services"]} == {"patient-view", "encounter-start", "order-select"}
    for service in body["services"]:
        assert service["id"]
        assert service["description"]
        assert set(service["prefetch"]) == {"patient", "observations", "conditions", "procedures", "serviceRequests",
                                            "findings", "medications", "medicationStatements"}
        assert "{{context.patientId}}" in service["prefetch"]["observations"]


@pytest.mark.parametrize("hook", ["patient-view", "encounter-start"])
def test_p01_prefetch_returns_the_expected_cards(base_url: str, hook: str) -> None:
    response = httpx.post(f"{base_url}/cds-services/hipflex-{hook}", json=hook_request(hook))
    assert response.status_code == 200
    body = response.json()
    assert_cds_response(body)
    assert kinds(body) == P01_CARDS
    assert all(c["suggestions"] for c in body["cards"])


def physio_draft(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": "draft-physio", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p01"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91251008"}]}} | extra


def order_select_request(draft: dict[str, Any]) -> dict[str, Any]:
    body = hook_request("order-select")
    body["context"] |= {"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]},
                        "selections": [f"{draft['resourceType']}/{draft['id']}"]}
    return body


def test_order_select_on_a_knee_physiotherapy_order_gives_advice_without_a_second_referral(base_url: str) -> None:
    response = httpx.post(f"{base_url}/cds-services/hipflex-order-select", json=order_select_request(physio_draft()))
    body = response.json()
    assert_cds_response(body)
    assert kinds(body) == P01_CARDS
    assert not any(c.get("suggestions") for c in body["cards"])
    assert all("no new referral is suggested" in c["detail"] for c in body["cards"])


def test_order_select_on_another_order_says_nothing(base_url: str) -> None:
    sandbox_draft = {"resourceType": "MedicationRequest", "id": "request-123", "status": "draft"}
    response = httpx.post(f"{base_url}/cds-services/hipflex-order-select", json=order_select_request(sandbox_draft))
    assert (response.status_code, response.json()) == (200, {"cards": []})


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, None),
    (hook_request(hookInstance="nope"), 400, "hookInstance"),
    (hook_request(hook="order-sign"), 400, "hook"),
    (hook_request(context={"patientId": "p01"}), 400, "context.userId"),
    (hook_request(fhirAuthorization={"access_token": "secret-token"}), 400, "fhirServer"),
    (hook_request(prefetch={"patient": None}), 412, "prefetch.observations"),
])
def test_bad_requests_get_specific_errors(base_url: str, body: Any, status: int, field: str | None) -> None:
    url = f"{base_url}{PATIENT_VIEW}"
    response = httpx.post(url, content=body, headers=JSON) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert response.status_code == status
    payload = response.json()
    assert payload.get("field") == field
    assert payload["message"]
    assert "Traceback" not in response.text
    assert "secret-token" not in response.text


@pytest.mark.parametrize(("method", "path", "status", "error"), [
    ("POST", "/cds-services/nope", 404, "unknown-service"),
    ("POST", "/cds-services/nope/feedback", 404, "unknown-service"),
    ("GET", "/nowhere", 404, "not-found"),
    ("GET", PATIENT_VIEW, 405, "method-not-allowed"),
])
def test_unknown_paths_and_methods_get_the_same_error_shape(base_url: str, method: str, path: str, status: int,
                                                            error: str) -> None:
    response = httpx.request(method, f"{base_url}{path}", json=hook_request())
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_a_body_over_the_limit_is_413_declared_or_streamed(tmp_path: Path) -> None:
    with running(create_app(service_settings(tmp_path, max_body_bytes=4096))) as url:
        big = json.dumps(hook_request(padding="x" * 10_000)).encode()
        declared = httpx.post(f"{url}{PATIENT_VIEW}", content=big, headers=JSON)
        streamed = httpx.post(f"{url}{PATIENT_VIEW}", content=iter([big[:3000], big[3000:]]), headers=JSON)
    for response in (declared, streamed):
        assert (response.status_code, response.json()["error"]) == (413, "too-large")
    assert "transfer-encoding" not in declared.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"


def serve_p01(stub: FhirStub, request: dict[str, Any], templates: dict[str, str]) -> None:
    from cds.hooks.request import HookRequest

    hook = HookRequest.model_validate(request)
    data = example_prefetch()
    for key, template in templates.items():
        path = render(template, hook)
        assert path is not None
        stub.serve(path, data[key])


def with_fhir_server(stub: FhirStub, token: str = "ehr-access-token-42") -> dict[str, Any]:
    body = hook_request(fhirServer=stub.base, fhirAuthorization={
        "access_token": token, "token_type": "Bearer", "expires_in": 30, "scope": "user/*.read", "subject": "hipflex"})
    del body["prefetch"]
    return body


def test_without_prefetch_the_data_are_fetched_from_the_fhir_server(tmp_path: Path, fhir_stub: FhirStub) -> None:
    request = with_fhir_server(fhir_stub)
    with running(create_app(service_settings(tmp_path, fhir_servers=[fhir_stub.base]))) as url:
        templates = httpx.get(f"{url}/cds-services").json()["services"][0]["prefetch"]
        serve_p01(fhir_stub, request, templates)
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=request)
    assert response.status_code == 200
    assert kinds(response.json()) == P01_CARDS
    assert len(fhir_stub.seen) == 8
    assert {s.authorization for s in fhir_stub.seen} == {"Bearer ehr-access-token-42"}


def test_a_failing_fhir_server_is_412_naming_the_data(tmp_path: Path, fhir_stub: FhirStub) -> None:
    with running(create_app(service_settings(tmp_path, fhir_servers=[fhir_stub.base]))) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=with_fhir_server(fhir_stub))
    assert response.status_code == 412
    assert response.json()["field"] == "prefetch.patient"
    assert "ehr-access-token-42" not in response.text


def feedback_for(card: dict[str, Any]) -> dict[str, Any]:
    return {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                          "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                          "outcomeTimestamp": "2026-11-24T10:00:00Z"}]}


def test_feedback_is_stored_and_still_there_after_a_restart(tmp_path: Path, database_url: str) -> None:
    settings = service_settings(tmp_path, database_url=database_url)
    with running(create_app(settings)) as url:
        card = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()["cards"][0]
        first = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=feedback_for(card))
        reason = {"reason": {"system": "urn:x", "code": "y"}}
        override = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                  "outcomeTimestamp": "2026-11-24T10:01:00Z", "overrideReason": reason}]}
        assert httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=override).status_code == 200
    assert (first.status_code, first.json()) == (200, {"stored": 1, "duplicates": 0})
    with running(create_app(settings)) as url:
        again = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=feedback_for(card))
    assert again.json() == {"stored": 0, "duplicates": 1}
    store = Store(database_url, b"test-key")
    issued = store.issued(card["uuid"])
    assert issued is not None
    assert [r.id for r in issued.rules] == [r.id for r in Explanation.of(card).rules]
    assert [f.outcome for f in store.feedback_for(card["uuid"])] == ["accepted", "overridden"]
    store.close()


def test_feedback_on_an_unknown_card_is_404(base_url: str) -> None:
    body = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-24T10:00:00Z"}]}
    response = httpx.post(f"{base_url}{PATIENT_VIEW}/feedback", json=body)
    assert (response.status_code, response.json()["error"]) == (404, "unknown-card")


# ---- authentication, CORS, operations -----------------------------------------------------------------

@pytest.fixture
def secured(tmp_path: Path, issuers_file: Path) -> Iterator[str]:
    settings = service_settings(tmp_path, issuers_file=issuers_file, public_url=PUBLIC,
                                cors_origins=["https://sandbox.cds-hooks.org"])
    with running(create_app(settings)) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_with_issuers_every_cds_endpoint_needs_a_token_for_itself(secured: str, signer: Signer) -> None:
    assert httpx.get(f"{secured}/cds-services").status_code == 401
    discovery_token = signer.token(f"{PUBLIC}/cds-services")
    assert httpx.get(f"{secured}/cds-services", headers=bearer(discovery_token)).status_code == 200
    wrong = httpx.post(f"{secured}{PATIENT_VIEW}", json=hook_request(), headers=bearer(discovery_token))
    assert (wrong.status_code, wrong.headers["www-authenticate"]) == (401, "Bearer")
    assert "it must be this endpoint's URL" in wrong.json()["message"]
    token = signer.token(f"{PUBLIC}{PATIENT_VIEW}", alg="RS384")
    call = httpx.post(f"{secured}{PATIENT_VIEW}", json=hook_request(), headers=bearer(token))
    assert call.status_code == 200
    replay = httpx.post(f"{secured}{PATIENT_VIEW}", json=hook_request(), headers=bearer(token))
    assert replay.status_code == 401
    assert token not in replay.text
    feedback = httpx.post(f"{secured}{PATIENT_VIEW}/feedback", json=feedback_for(call.json()["cards"][0]),
                          headers=bearer(signer.token(f"{PUBLIC}{PATIENT_VIEW}/feedback")))
    assert feedback.status_code == 200
    assert httpx.get(f"{secured}/health").status_code == 200


def test_cors_preflight_allows_the_configured_origin_only(secured: str) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{secured}{PATIENT_VIEW}", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
    allowed = preflight("https://sandbox.cds-hooks.org")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_metrics_count_requests_cards_by_rule_and_feedback(tmp_path: Path) -> None:
    with running(create_app(service_settings(tmp_path))) as url:
        card = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()["cards"][0]
        httpx.post(f"{url}{PATIENT_VIEW}", content=b"{", headers=JSON)
        httpx.post(f"{url}/cds-services/no-such-service", json={})
        httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=feedback_for(card))
        text = httpx.get(f"{url}/metrics").text
    rule = Explanation.of(card).rules[0]
    kind = Explanation.of(card).recommendation.card
    assert 'hipflex_requests_total{endpoint="hook",service="hipflex-patient-view",status="200"} 1.0' in text
    assert 'hipflex_requests_total{endpoint="hook",service="hipflex-patient-view",status="400"} 1.0' in text
    assert 'hipflex_requests_total{endpoint="hook",service="(unknown)",status="404"} 1.0' in text
    assert f'hipflex_cards_total{{card="{kind}"}} 1.0' in text
    assert f'hipflex_card_rules_total{{card="{kind}",rule="{rule.id} v{rule.version}"}} 1.0' in text
    assert f'hipflex_feedback_total{{card="{kind}",outcome="accepted"}} 1.0' in text
    assert 'hipflex_request_seconds_count{endpoint="hook",service="hipflex-patient-view"} 2.0' in text
    assert "no-such-service" not in text


def test_health_reports_rules_and_store(base_url: str) -> None:
    body = httpx.get(f"{base_url}/health").json()
    assert body["status"] == body["store"] == body["fhir_client"]["status"] == "ok"
    listed = subprocess.run([sys.executable, "-m", "cds.cli", "rules", "--json"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert body["rules"] == len(json.loads(listed)) > 20  # the rules `rules` lists, not the compiled engine rules
    assert body["authentication"] == "off"
    assert httpx.get(f"{base_url}/health/live").json() == {"status": "ok"}


def test_logs_hold_no_token_jwt_or_patient_data(tmp_path: Path, issuers_file: Path, signer: Signer,
                                                fhir_stub: FhirStub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    listed = yaml.safe_load(issuers_file.read_text())
    listed["issuers"][0]["fhir_servers"] = [fhir_stub.base]
    issuers_file.write_text(yaml.safe_dump(listed))
    settings = service_settings(tmp_path, issuers_file=issuers_file, public_url=PUBLIC)
    jwt_token = signer.token(f"{PUBLIC}{PATIENT_VIEW}")
    request = with_fhir_server(fhir_stub, token="ehr-access-token-42")
    with running(create_app(settings)) as url:
        serve_p01(fhir_stub, request, _templates(url, signer))
        ok = httpx.post(f"{url}{PATIENT_VIEW}", json=request, headers=bearer(jwt_token))
        httpx.post(f"{url}{PATIENT_VIEW}", json=request, headers=bearer(jwt_token))  # replay: 401
        httpx.post(f"{url}{PATIENT_VIEW}", json=request | {"hook": "x"}, headers=bearer(signer.token(
            f"{PUBLIC}{PATIENT_VIEW}")))
    assert ok.status_code == 200
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "hipflex-patient-view" in logged
    patient = example_prefetch()["patient"]
    secrets = [jwt_token, jwt_token.split(".")[1], "ehr-access-token-42", patient["id"],
               patient["name"][0]["family"], patient["birthDate"]]
    for secret in secrets:
        assert secret not in logged


def _templates(url: str, signer: Signer) -> dict[str, str]:
    services = httpx.get(f"{url}/cds-services", headers=bearer(signer.token(f"{PUBLIC}/cds-services"))).json()
    templates: dict[str, str] = services["services"][0]["prefetch"]
    return templates


def test_an_internal_fault_is_a_generic_500_with_a_correlation_id(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(service_settings(tmp_path))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("detail that must stay in the log")

    app.state.cds.pipeline.decide = broken
    with running(app) as url:
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request())
    assert response.status_code == 500
    assert "detail that must stay" not in response.text
    correlation = response.json()["message"].rsplit(" ", 1)[-1]
    assert any(getattr(r, "correlation_id", None) == correlation and r.exc_info for r in caplog.records)


def test_serve_refuses_a_public_address_without_trusted_issuers(tmp_path: Path) -> None:
    started = time.monotonic()
    assert serve(service_settings(tmp_path), host="0.0.0.0", port=1) == 2
    assert time.monotonic() - started < 10


def test_issuers_without_a_public_url_stop_start_up(issuers_file: Path) -> None:
    with pytest.raises(ValidationError, match="HIPFLEX_PUBLIC_URL is required"):
        Settings(issuers_file=issuers_file)


def without_uuids(body: dict[str, Any]) -> dict[str, Any]:
    """A response with card and suggestion uuids blanked: the only fields that differ between two calls."""
    cards = []
    for card in body["cards"]:
        suggestions = [s | {"uuid": "-"} for s in card.get("suggestions", [])]
        cards.append(card | {"uuid": "-"} | ({"suggestions": suggestions} if suggestions else {}))
    return {"cards": cards}


@pytest.mark.parametrize("hook", ["patient-view", "encounter-start", "order-select"])
def test_the_cli_and_the_service_give_the_same_cards(base_url: str, hook: str) -> None:
    def cli(*args: str) -> Any:
        run = subprocess.run([sys.executable, "-m", "cds.cli", *args, str(EXAMPLES / "P01-classic-right.json"),
                              "--hook", hook], capture_output=True, text=True, check=True)
        return json.loads(run.stdout)

    served = httpx.post(f"{base_url}/cds-services/hipflex-{hook}", json=cli("request")).json()
    printed = cli("evaluate", "--json")
    assert served["cards"], "P01 gives cards on every hook"
    assert without_uuids(printed) == without_uuids(served)


def test_openapi_documents_the_hook_contract(base_url: str) -> None:
    schema = httpx.get(f"{base_url}/openapi.json").json()
    hook = schema["paths"]["/cds-services/{service_id}"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/HookRequest")
    assert hook["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/CDSResponse")
    assert hook["responses"]["412"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    components = schema["components"]["schemas"]
    assert {"hookInstance", "context", "prefetch"} <= set(components["HookRequest"]["properties"])
    assert "summary" in components["Card"]["properties"]
    feedback = schema["paths"]["/cds-services/{service_id}/feedback"]["post"]
    assert feedback["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/FeedbackRequest")
    contexts = [ref["$ref"].rsplit("/", 1)[1] for ref in components["HookRequest"]["properties"]["context"]["anyOf"]]
    assert contexts == ["PatientViewContext", "EncounterStartContext", "OrderSelectContext"]
    assert set(components["PatientViewContext"]["required"]) == {"userId", "patientId"}
    assert set(components["EncounterStartContext"]["required"]) == {"userId", "patientId", "encounterId"}
    assert set(components["OrderSelectContext"]["required"]) == {"userId", "patientId", "selections", "draftOrders"}


def test_docs_are_served_from_the_package_not_a_cdn(base_url: str) -> None:
    page = httpx.get(f"{base_url}/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert httpx.get(f"{base_url}/docs/static/swagger-ui-bundle.js").status_code == 200


def test_a_failed_engine_session_is_counted_and_the_pool_stays_full(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, decision_cache_size=0))  # every call reaches the engine
    engine = app.state.cds.pipeline.engine
    failures = 0

    class FailingDelete:
        """durable_rules' C engine, except that emptying a session for reuse fails, and so does deleting it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(durable_rules_engine, name)

        def retract_facts(self, handle: int, facts: str) -> None:
            raise RuntimeError("retract_facts failed")

        def delete_state(self, handle: int, sid: str) -> None:
            nonlocal failures
            failures += 1
            raise RuntimeError("delete_state failed")

    with running(app) as url:
        monkeypatch.setattr(engine_module, "_rete", FailingDelete())
        for _ in range(70):  # many more calls than the pool has sessions
            assert httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).status_code == 200
        monkeypatch.undo()
        assert httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    assert failures == 70
    assert "hipflex_engine_failed_sessions 70.0" in text
    assert engine._sids.qsize() == POOL_SIZE


def test_the_sandbox_connects_with_the_shipped_issuers_file(tmp_path: Path, signer: Signer, fhir_stub: FhirStub,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Discovery, a hook and feedback with sandbox-shaped tokens (jku header included); the jku is never fetched,
    and a refused token is logged with the name of its check, never with the token."""
    caplog.set_level(logging.INFO)
    jku = f"{fhir_stub.base}/.well-known/jwks.json"
    settings = service_settings(tmp_path, issuers_file=sandbox_issuers(tmp_path, signer), public_url=PUBLIC,
                                cors_origins=["https://sandbox.cds-hooks.org"])
    with running(create_app(settings)) as url:
        discovery = httpx.get(f"{url}/cds-services",
                              headers=bearer(sandbox_token(signer, f"{PUBLIC}/cds-services", jku)))
        call = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(),
                          headers=bearer(sandbox_token(signer, f"{PUBLIC}{PATIENT_VIEW}", jku)))
        feedback = httpx.post(f"{url}{PATIENT_VIEW}/feedback", json=feedback_for(call.json()["cards"][0]),
                              headers=bearer(sandbox_token(signer, f"{PUBLIC}{PATIENT_VIEW}/feedback", jku)))
        wrong = sandbox_token(signer, f"{PUBLIC}/cds-services", jku)
        refused = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), headers=bearer(wrong))
    assert [r.status_code for r in (discovery, call, feedback, refused)] == [200, 200, 200, 401]
    assert len(discovery.json()["services"]) == 3
    assert fhir_stub.seen == []
    [entry] = [json.loads(JsonFormatter().format(r)) for r in caplog.records if getattr(r, "status", None) == 401]
    assert (entry["auth_check"], entry["issuer"], entry["kid"]) == ("audience", SANDBOX_ISSUER, SANDBOX_KID)
    assert wrong not in json.dumps(entry)


def test_a_cached_decision_gives_the_same_cards_with_fresh_uuids(tmp_path: Path) -> None:
    """patient-view, then encounter-start with the same data: the second is answered from the decision cache."""
    with running(create_app(service_settings(tmp_path / "cached"))) as url:
        first = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()
        again = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()
        cds = httpx.get(f"{url}/metrics").text
    with running(create_app(service_settings(tmp_path / "uncached", decision_cache_size=0))) as url:
        uncached = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request()).json()
    assert without_uuids(first) == without_uuids(again) == without_uuids(uncached)
    uuids = [c["uuid"] for c in first["cards"] + again["cards"]]
    uuids += [s["uuid"] for c in first["cards"] + again["cards"] for s in c["suggestions"]]
    assert len(set(uuids)) == len(uuids)
    assert "hipflex_decision_cache_hits_total 1.0" in cds


def test_two_worker_processes_share_replay_protection_feedback_and_metrics(tmp_path: Path, issuers_file: Path,
                                                                           signer: Signer) -> None:
    """`serve --workers 2`: a token used on one worker is refused when replayed, whichever worker gets it; every
    scrape of /metrics, whichever worker answers it, counts the calls of both."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HIPFLEX_DATA_DIR": str(tmp_path / "var"), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_ISSUERS_FILE": str(issuers_file), "HIPFLEX_PUBLIC_URL": PUBLIC}
    server = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        firsts: list[int] = []
        replays: list[int] = []
        for _ in range(12):
            token = signer.token(f"{PUBLIC}{PATIENT_VIEW}")
            for seen in (firsts, replays):
                with httpx.Client() as client:  # a new connection each time, so either worker may answer
                    seen.append(client.post(f"{url}{PATIENT_VIEW}", json=hook_request(),
                                            headers=bearer(token)).status_code)
        card = None
        with httpx.Client() as client:
            token = signer.token(f"{PUBLIC}{PATIENT_VIEW}")
            card = client.post(f"{url}{PATIENT_VIEW}", json=hook_request(), headers=bearer(token)).json()["cards"][0]
        with httpx.Client() as client:
            stored = client.post(f"{url}{PATIENT_VIEW}/feedback", json=feedback_for(card),
                                 headers=bearer(signer.token(f"{PUBLIC}{PATIENT_VIEW}/feedback")))
        scrapes = []
        for _ in range(8):
            with httpx.Client() as client:
                scrapes.append(client.get(f"{url}/metrics").text)
    finally:
        server.terminate()
        server.wait(20)
    assert len(workers) >= 2
    assert set(firsts) == {200}
    assert set(replays) == {401}
    assert stored.status_code == 200
    for text in scrapes:
        assert 'hipflex_requests_total{endpoint="hook",service="hipflex-patient-view",status="200"} 13.0' in text
        assert 'hipflex_requests_total{endpoint="hook",service="hipflex-patient-view",status="401"} 12.0' in text
        assert 'hipflex_cards_total{card="hip-strengthening"} 13.0' in text


# ---- failures that say why, in the log line and in the body (issue 22) ---------------------------------

def logged(caplog: pytest.LogCaptureFixture, **match: Any) -> list[dict[str, Any]]:
    entries = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def test_a_412_names_the_prefetch_key_and_the_failed_check_in_the_log(tmp_path: Path, fhir_stub: FhirStub,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = hook_request(fhirServer=fhir_stub.base)
    del body["prefetch"]
    with running(create_app(service_settings(tmp_path))) as url:  # nothing listed: the server is not allowed
        response = httpx.post(f"{url}{PATIENT_VIEW}", json=body)
    assert response.status_code == 412
    [entry] = logged(caplog, status=412)
    assert (entry["prefetch_key"], entry["check"], entry["field"]) in {
        ("patient", "not-allowed", "prefetch.patient"), ("observations", "not-allowed", "prefetch.observations")}
    assert "p01" not in json.dumps(entry)


def test_a_refused_cors_preflight_is_logged_with_its_origin(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = service_settings(tmp_path, cors_origins=["https://sandbox.cds-hooks.org"])
    with running(create_app(settings)) as url:
        refused = httpx.options(f"{url}{PATIENT_VIEW}", headers={
            "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400
    [entry] = logged(caplog, error="cors-refused")
    assert entry["cors_origin"] == "https://elsewhere.example"
    assert "Disallowed CORS origin" in entry["message"]


def test_a_wrong_audience_names_the_url_in_the_token_and_the_one_it_must_name(tmp_path: Path, signer: Signer,
                                                                              issuers_file: Path) -> None:
    settings = service_settings(tmp_path, issuers_file=issuers_file, public_url="http://localhost:8080")
    with running(create_app(settings)) as url:
        wrong = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), headers=bearer(
            signer.token(f"http://127.0.0.1:8080{PATIENT_VIEW}")))
        slashed = httpx.get(f"{url}/cds-services/", headers=bearer(signer.token("http://localhost:8080/cds-services/")))
    assert wrong.status_code == 401
    message = wrong.json()["message"]
    assert f"the token's aud is 'http://127.0.0.1:8080{PATIENT_VIEW}'" in message
    assert f"it must be this endpoint's URL, http://localhost:8080{PATIENT_VIEW}" in message
    assert slashed.status_code == 200  # the trailing-slash form, served directly, its aud accepted


def test_with_the_documented_sandbox_setup_and_no_prefetch_the_allowed_fhir_server_is_read(
        tmp_path: Path, signer: Signer, fhir_stub: FhirStub, caplog: pytest.LogCaptureFixture) -> None:
    """docs/ehr-integration.md's configuration: the shipped issuers file (no fhir_servers of its own) inherits
    HIPFLEX_FHIR_SERVERS; a server not listed is a 412 whose log line names the key and the check."""
    from tests.web.test_app_hardening import serve_p01

    caplog.set_level(logging.INFO)
    serve_p01(fhir_stub)
    settings = service_settings(tmp_path, issuers_file=sandbox_issuers(tmp_path, signer), public_url=PUBLIC,
                                cors_origins=["https://sandbox.cds-hooks.org"], fhir_servers=[fhir_stub.base])
    jku = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    body = hook_request(fhirServer=fhir_stub.base)
    del body["prefetch"]
    elsewhere = hook_request(fhirServer="https://fhir.not-listed.example/r4")
    del elsewhere["prefetch"]
    with running(create_app(settings)) as url:
        read = httpx.post(f"{url}{PATIENT_VIEW}", json=body,
                          headers=bearer(sandbox_token(signer, f"{PUBLIC}{PATIENT_VIEW}", jku)))
        refused = httpx.post(f"{url}{PATIENT_VIEW}", json=elsewhere,
                             headers=bearer(sandbox_token(signer, f"{PUBLIC}{PATIENT_VIEW}", jku)))
    assert read.status_code == 200
    assert len(read.json()["cards"]) == 2
    assert "Patient/p01" in fhir_stub.paths()
    assert refused.status_code == 412
    [entry] = logged(caplog, status=412)
    assert entry["check"] == "not-allowed"
    assert entry["prefetch_key"] in {"patient", "observations"}
