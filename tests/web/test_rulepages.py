"""The rule pages a card links to: served with authentication on and off, HTML for people, JSON for machines,
and no patient data; and feedback counted against the rules that made each card."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.web.app import create_app
from tests.support.builders import hook_request
from tests.support.servers import running, service_settings
from tests.support.signing import Signer

PUBLIC = "https://cds.example.org"
PATIENT_VIEW = "/cds-services/hipflex-patient-view"


@pytest.fixture
def open_service(tmp_path: Path) -> Iterator[str]:
    """Authentication off, with a public URL so that cards carry links (as a deployment behind a proxy would)."""
    with running(create_app(service_settings(tmp_path, public_url=PUBLIC))) as url:
        yield url


def local(url: str, base: str) -> str:
    """A card's public link, asked of the local server that stands for the public URL."""
    assert url.startswith(PUBLIC), url
    return base + url.removeprefix(PUBLIC)


def test_every_card_links_to_a_rule_page_that_answers_with_authentication_on(tmp_path: Path, issuers_file: Path,
                                                                           signer: Signer) -> None:
    settings = service_settings(tmp_path, issuers_file=issuers_file, public_url=PUBLIC)
    with running(create_app(settings)) as url:
        token = signer.token(f"{PUBLIC}{PATIENT_VIEW}")
        cards = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(),
                           headers={"Authorization": f"Bearer {token}"}).json()["cards"]
        pages = [httpx.get(local(c["source"]["url"], url)) for c in cards]
        links = [httpx.get(local(c["links"][0]["url"], url)) for c in cards]
        review = httpx.get(f"{url}/review")
    assert [c["links"][0]["label"] for c in cards] == ["Why this suggestion"] * 2
    assert [p.status_code for p in pages + links] == [200] * 4
    assert "<h1>R3 v1:" in pages[0].text
    assert "<h1>R4 v1:" in pages[1].text
    assert "<h1>Why this suggestion: End-range hip-flexor strengthening</h1>" in links[0].text
    assert "<h1>Why this suggestion: Inferior patellar glide</h1>" in links[1].text
    assert review.status_code == 404  # the review pages stay off with authentication on


def test_a_rule_page_says_what_it_checks_its_thresholds_and_evidence(open_service: str) -> None:
    page = httpx.get(f"{open_service}/rules/D1-mmt").text
    assert "the recorded end range mmt on the side being checked with grade rank at most 4+/5" in page
    assert "End-range MMT at or below this grade counts as weak" in page
    assert "Grade C" in page
    assert "v1: current version" in page


def test_the_red_flag_rule_lists_the_red_flags_it_checks(open_service: str) -> None:
    body = httpx.get(f"{open_service}/rules/D5", headers={"Accept": "application/json"}).json()
    assert any("red flag present" in action for action in body["then"])
    surgery = next(f for f in body["red_flags"] if f.startswith("knee surgery within 6 months (within 183 days): "))
    assert "codes matching 298(6[6-9]|7\\d|8\\d) — source: CPT musculoskeletal ranges" in surgery
    assert "OPCS-4: W40 and below" in surgery
    assert "any procedure on a knee structure" in surgery
    trauma = next(f for f in body["red_flags"] if f.startswith("recent knee trauma (within 42 days): "))
    assert "ICD-10-CM: S80.0 and below" in trauma
    assert any(f.startswith("Which records count: a Condition without clinicalStatus") for f in body["red_flags"])
    assert httpx.get(f"{open_service}/rules/D1-mmt", headers={"Accept": "application/json"}).json()["red_flags"] == []


def test_the_catalog_answers_json_to_machines_and_html_to_people(open_service: str) -> None:
    as_json = httpx.get(f"{open_service}/rules", headers={"Accept": "application/json"}).json()
    ids = [r["id"] for r in as_json["rules"]]
    assert {"R3", "R4", "D1-mmt", "D1-hhd"} <= set(ids)
    assert as_json["ruleset"]["version"] == "1.0.0"
    html = httpx.get(f"{open_service}/rules", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert '<a href="/rules/R3">R3 v1</a>' in html.text
    assert httpx.head(f"{open_service}/rules/R3").status_code == 200


def test_an_unknown_rule_is_a_404_in_the_service_error_shape(open_service: str) -> None:
    response = httpx.get(f"{open_service}/rules/R99")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown-rule"


def feedback(card: dict[str, Any], outcome: str, when: str, reason: dict[str, Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": when}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    if reason is not None:
        item["overrideReason"] = reason
    return {"feedback": [item]}


def rule_counts(page: str, rule: str) -> tuple[int, int, int]:
    row = page.split(f'<tr id="rule-{rule}">', 1)[1].split("</tr>", 1)[0]
    cell = {name: int(row.split(f'<td class="{name}">', 1)[1].split("<", 1)[0])
            for name in ("fired", "accepted", "overridden")}
    return cell["fired"], cell["accepted"], cell["overridden"]


def test_feedback_counts_only_against_the_rules_that_made_the_card(open_service: str) -> None:
    """Sandbox feedback shapes: accept, override with a reason {code, system} without display, plain dismiss."""
    strengthening, glides = httpx.post(f"{open_service}{PATIENT_VIEW}", json=hook_request()).json()["cards"]
    sandbox_reason = {"reason": {"code": "not-clinically-appropriate",
                                 "system": "urn:hipflex-cds:fhir:CodeSystem:knee-hip"}}
    posted = [httpx.post(f"{open_service}{PATIENT_VIEW}/feedback", json=body) for body in (
        feedback(glides, "overridden", "2026-11-24T10:00:00Z", sandbox_reason),
        feedback(strengthening, "accepted", "2026-11-24T10:00:00.586Z"),
        feedback(strengthening, "overridden", "2026-11-24T10:05:00.586Z"))]  # the sandbox's plain dismiss
    assert [p.status_code for p in posted] == [200, 200, 200]
    page = httpx.get(f"{open_service}/review/rules").text
    assert rule_counts(page, "R4") == (1, 0, 1)
    assert rule_counts(page, "R3") == (2, 0, 1)  # behind both cards; its own card's latest outcome is the override
    assert rule_counts(page, "D1-mmt") == (2, 0, 0)  # supports both cards, made neither
