"""A CDS client written here (tests/web/cds_client/: discovery, a hook call with a JWT, the cards with their links,
accept and override feedback), served from its own origin and driven in Debian's chromium against the real
`serve` with authentication on: what an EHR's browser-based client meets, CORS included."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from cds.hooks.store import Store
from tests.support.builders import hook_request
from tests.support.paths import PROJECT_ROOT
from tests.support.servers import free_port, served_by_cli
from tests.support.signing import Signer

CLIENT = Path(__file__).with_name("cds_client")
SHOTS = PROJECT_ROOT / "test-artifacts" / "cds-client"
SERVICE_ID = "hipflex-patient-view"


@pytest.fixture
def client_origin() -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(CLIENT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def service(tmp_path: Path, issuers_file: Path, client_origin: str) -> Iterator[str]:
    port = free_port()
    env = {"HIPFLEX_DATA_DIR": str(tmp_path / "var"), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_ISSUERS_FILE": str(issuers_file), "HIPFLEX_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "HIPFLEX_CORS_ORIGINS": json.dumps([client_origin]), "HIPFLEX_PATIENT_HASH_KEY": "client-test"}
    with served_by_cli(env, port) as url:
        yield url


def test_a_browser_client_calls_renders_follows_the_link_and_sends_feedback(
        browser: Browser, service: str, client_origin: str, signer: Signer, tmp_path: Path) -> None:
    hook = f"{service}/cds-services/{SERVICE_ID}"
    config = {"service": service, "serviceId": SERVICE_ID, "request": hook_request(),
              "tokens": {"discovery": signer.token(f"{service}/cds-services"), "hook": signer.token(hook),
                         "feedback": [signer.token(f"{hook}/feedback") for _ in range(2)]}}
    page = browser.new_context(viewport={"width": 480, "height": 900}).new_page()
    page.goto(f"{client_origin}/index.html#{urllib.parse.quote(json.dumps(config))}")
    expect(page.locator("#discovery")).to_have_text("200: patient-view, encounter-start, order-select")
    expect(page.locator("#hook")).to_have_text("200: 2 cards")
    cards = page.locator("article")
    expect(cards.nth(0).locator("h2")).to_contain_text("psoas-focused strengthening")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "cards.png"), full_page=True)
    cards.nth(0).locator("button.accept").click()
    expect(cards.nth(0).locator(".status")).to_have_text("200: stored 1")
    cards.nth(1).locator("button.override").click()
    expect(cards.nth(1).locator(".status")).to_have_text("200: stored 1")
    card_ids = [cards.nth(i).evaluate("(a) => a.id") for i in range(2)]
    assert card_ids == ["card-0", "card-1"]
    cards.nth(0).get_by_role("link", name="Why this suggestion").click()
    expect(page.locator("h1")).to_have_text("Why this suggestion: End-range hip-flexor strengthening")
    assert page.url == f"{service}/why/hip-strengthening"
    page.screenshot(path=str(SHOTS / "why-this-suggestion.png"), full_page=True)
    page.context.close()
    store = Store(f"sqlite:///{tmp_path / 'var' / 'hipflex.sqlite3'}", b"client-test")
    try:
        with store.engine.connect() as conn:
            outcomes = sorted(row[0] for row in conn.exec_driver_sql("SELECT outcome FROM feedback"))
    finally:
        store.close()
    assert outcomes == ["accepted", "overridden"]
