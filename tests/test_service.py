"""The HTTP service, run for real (uvicorn on a free loopback port) and called over HTTP."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from cds.service import create_app
from cds.settings import Settings
from cds.validate import bundle_resources
from tests.conftest import EXAMPLES, load_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings()), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def p01_request(**overrides: Any) -> dict[str, Any]:
    resources = bundle_resources(load_json(EXAMPLES / "P01-classic-right.json"))
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/COREPRACTITIONER1", "patientId": "p01"},
        "prefetch": {
            "patient": next(r for r in resources if r["resourceType"] == "Patient"),
            "observations": {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": r} for r in observations]},
            "conditions": None,
        },
    }
    body.update(overrides)
    return body


def test_discovery_lists_the_three_hooks(base_url: str) -> None:
    body = httpx.get(f"{base_url}/cds-services").json()
    assert {s["hook"] for s in body["services"]} == {"patient-view", "encounter-start", "order-select"}
    for service in body["services"]:
        assert service["id"]
        assert service["description"]
        assert "{{context.patientId}}" in service["prefetch"]["observations"]


def test_patient_view_with_prefetch_returns_p01_cards(base_url: str) -> None:
    response = httpx.post(f"{base_url}/cds-services/hipflex-patient-view", json=p01_request())
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["hip-flexor-strengthening", "patellar-glide"]


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, None),
    (p01_request(hookInstance="nope"), 400, "hookInstance"),
    (p01_request(hook="order-sign"), 400, "hook"),
    (p01_request(context={"patientId": "p01"}), 400, "context.userId"),
    (p01_request(fhirAuthorization={"access_token": "secret-token"}), 400, "fhirServer"),
    (p01_request(prefetch={"patient": None}), 412, "prefetch.observations"),
])
def test_bad_requests_get_specific_errors(base_url: str, body: Any, status: int, field: str | None) -> None:
    url = f"{base_url}/cds-services/hipflex-patient-view"
    response = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert response.status_code == status
    payload = response.json()
    assert payload.get("field") == field
    assert payload["message"]
    assert "Traceback" not in response.text
    assert "secret-token" not in response.text


def test_unknown_service_is_404(base_url: str) -> None:
    response = httpx.post(f"{base_url}/cds-services/nope", json=p01_request())
    assert (response.status_code, response.json()["error"]) == (404, "unknown-service")
