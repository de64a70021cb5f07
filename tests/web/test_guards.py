"""Checks before any work, on a real server: the Host allow-list, redirects that never follow the Host header,
the review form refused cross-site and capped in size, and a review link that records nothing."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.hooks.cardusage import card_use, previews
from cds.hooks.store import Store
from cds.web.app import create_app
from tests.support.paths import EXAMPLES
from tests.support.servers import running, service_settings

P01 = "P01-classic-right"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    settings = service_settings(tmp_path, allowed_hosts=["cds.internal"], max_body_bytes=200_000)
    with running(create_app(settings)) as url:
        yield url


def issued(tmp_path: Path) -> int:
    """Every card the store holds: those EHR calls got and the review page's previews."""
    store = Store(f"sqlite:///{tmp_path / 'hipflex.sqlite3'}", b"test-key")
    try:
        return sum(use.issued for use in card_use(store).values()) + previews(store)[0]
    finally:
        store.close()


@pytest.mark.parametrize(("host", "status"), [("evil.example", 400), ("evil.example:8080", 400), ("", 400),
                                              ("localhost", 200), ("cds.internal", 200), ("CDS.internal:1", 200)])
def test_only_the_names_the_service_is_reached_by_are_answered(service: str, host: str, status: int) -> None:
    response = httpx.get(f"{service}/review/rules", headers={"Host": host})
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"] == "host-not-allowed"
        assert "HIPFLEX_ALLOWED_HOSTS" in response.json()["message"]


def test_the_public_urls_host_is_answered(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, public_url="https://cds.example.org")
    with running(create_app(settings)) as url:
        public = httpx.get(f"{url}/cds-services", headers={"Host": "cds.example.org"})
        evil = httpx.get(f"{url}/cds-services", headers={"Host": "evil.example"})
    assert public.status_code == 200
    assert evil.status_code == 400


@pytest.mark.parametrize("path", ["/cds-services/", "/cds-services//", "/review/rules/", "/health/"])
def test_a_trailing_slash_is_served_directly_never_redirected(service: str, path: str) -> None:
    slashed = httpx.get(f"{service}{path}", headers={"Host": "evil.example" if path == "/x" else "cds.internal"})
    assert slashed.status_code == 200
    assert "location" not in slashed.headers


def form(**fields: str) -> dict[str, Any]:
    return {"data": {"example": P01, "hook": "patient-view", "user": "clinician"} | fields}


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://127.0.0.1:1"}])
def test_a_review_form_sent_from_another_site_is_refused_and_records_nothing(service: str, tmp_path: Path,
                                                                            headers: dict[str, str]) -> None:
    refused = httpx.post(f"{service}/review", headers=headers, files={"upload": ("x.json", b"{}")}, **form())
    own = httpx.post(f"{service}/review", headers={"Origin": service, "Sec-Fetch-Site": "same-origin"}, **form())
    assert refused.status_code == 403
    assert "only accepts what the service's own page sends" in html.unescape(refused.text)
    assert own.status_code == 200
    assert issued(tmp_path) == 2  # the page's own run: P01's two cards


def test_a_review_upload_over_the_body_limit_is_refused_without_being_read(service: str) -> None:
    big = b"{" + b" " * 5_000_000 + b"}"
    started = time.monotonic()
    response = httpx.post(f"{service}/review", files={"upload": ("big.json", big)}, **form())
    assert response.status_code == 413
    assert "the limit is 200000" in response.text
    assert time.monotonic() - started < 30

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b"--b\r\nContent-Disposition: form-data; name=\"bundle\"\r\n\r\n"
        for _ in range(100):
            yield b" " * 10_000

    streamed = httpx.post(f"{service}/review", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
    assert "over the limit of 200000 bytes" in streamed.text


def test_a_review_link_shows_the_cards_but_records_nothing_and_offers_no_feedback(service: str,
                                                                                 tmp_path: Path) -> None:
    page = httpx.get(f"{service}/review", params={"example": P01})
    assert page.status_code == 200
    assert page.text.count('<article class="card') == 2
    assert page.text.count(" disabled>Accept") == 2
    assert "these cards are not recorded" in page.text
    assert issued(tmp_path) == 0
    assert (EXAMPLES / f"{P01}.json").exists()


def test_a_review_link_takes_the_examples_context_and_resolves_a_prefix(service: str) -> None:
    patient = httpx.get(f"{service}/review", params={"example": "P15b"})
    clinician = httpx.get(f"{service}/review", params={"example": "P15b", "user": "clinician"})
    ambiguous = httpx.get(f"{service}/review", params={"example": "P12"})
    assert patient.status_code == clinician.status_code == 200
    assert "the user is the patient" in html.unescape(patient.text)
    assert clinician.text.count('<article class="card') == 2
    assert ambiguous.status_code == 400
    assert "P12: ambiguous, it could be P12a-hyperextension-5deg" in html.unescape(ambiguous.text)
