"""The review page in a real browser: Playwright driving Debian's chromium against the real service."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from cds.hooks.store import Store
from cds.web.app import create_app
from cds.web.html import CSP
from tests.support.builders import hook_request
from tests.support.paths import EXAMPLES, PROJECT_ROOT, load_json
from tests.support.servers import running, service_settings

SHOTS = PROJECT_ROOT / "test-artifacts" / "review"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh service (its own SQLite file) per test, so feedback counts start at zero."""
    with running(create_app(service_settings(tmp_path))) as url:
        yield url, tmp_path


@pytest.fixture
def page(browser: Browser, service: tuple[str, Path]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=service[0])
    page = context.new_page()
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_example(page: Page, name: str = "P01-classic-right") -> None:
    page.goto("/review")
    page.select_option("#example", name)
    page.click("button[type=submit]")
    expect(page.locator("#cards-title")).to_be_visible()


def rule_row(page: Page, rule: str) -> dict[str, str]:
    page.goto("/review/rules")
    row = page.locator(f"#rule-{rule}")
    return {name: row.locator(f"td.{name}").inner_text() for name in ("fired", "accepted", "overridden", "reasons")}


def test_p01_shows_its_two_cards_at_desktop_and_phone_width(page: Page) -> None:
    open_example(page)
    cards = page.locator("article.card")
    expect(cards).to_have_count(2)
    expect(cards.nth(0).locator("h3")).to_contain_text("psoas-focused strengthening")
    expect(cards.nth(1).locator("h3")).to_contain_text("inferior patellar glides")
    expect(cards.nth(0).locator(".indicator")).to_have_text("\u2139 Info")
    expect(page.locator(".findings")).to_contain_text("right weakness above 90° only")
    expect(page.locator(".patient h2")).to_have_text("Patient p01 · female · 24 years")
    for card in range(2):  # both cards start within the first 800 px of a 1280-wide screen, details collapsed
        assert page.locator("article.card").nth(card).bounding_box()["y"] < 800  # type: ignore[index]
    expect(page.locator("form.override").first).to_be_hidden()
    expect(page.locator("table.data")).to_contain_text("4/5")
    shot(page, "p01-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "p01-390")


def test_why_shows_rules_versions_facts_and_thresholds(page: Page) -> None:
    open_example(page)
    why = page.locator("article.card").first.locator("details.why")
    why.locator("summary").click()
    expect(why.locator("table")).to_contain_text("R3")
    expect(why).to_contain_text("seated hip flexion above 90°: 4/5")
    expect(why).to_contain_text("weak mmt grade: 4+/5")


def test_feedback_on_the_review_page_is_stored_once_and_its_previews_are_counted_nowhere(page: Page) -> None:
    open_example(page)
    first = page.locator("article.card").first
    first.locator("button.accept").click()
    expect(first.locator(".feedback-status")).to_have_text("Accepted: feedback stored.")
    expect(first.locator("button.accept")).to_be_disabled()  # one answer per card
    expect(first.locator("form.override button")).to_be_disabled()
    row = rule_row(page, "R3")
    assert (row["fired"], row["accepted"]) == ("0", "0")
    expect(page.locator("p.previews")).to_contain_text("Review-page runs (2 cards, 1 feedback items on them)")
    shot(page, "rules-after-accept")


def test_an_override_with_reason_and_comment_is_stored(page: Page, service: tuple[str, Path]) -> None:
    open_example(page)
    card = page.locator("article.card").nth(1)
    card.locator("details.override-box summary").click()
    card.locator("select[name=reason]").select_option(label="Patient declined")
    card.locator("textarea[name=comment]").fill("prefers to wait two weeks")
    card.locator("form.override button").click()
    expect(card.locator(".feedback-status")).to_have_text("Overridden: feedback stored.")
    uuid = card.get_attribute("aria-labelledby").removeprefix("summary-")  # type: ignore[union-attr]
    store = Store(f"sqlite:///{service[1] / 'hipflex.sqlite3'}", b"test-key")
    [record] = store.feedback_for(uuid)
    store.close()
    assert (record.outcome, record.override_code, record.override_comment) == (
        "overridden", "patient-declined", "prefers to wait two weeks")


def test_the_page_works_from_the_keyboard(page: Page) -> None:
    page.goto("/review")
    page.focus("#example")
    page.select_option("#example", "P01-classic-right")
    page.focus("#hook")
    for _ in range(10):  # the user selector, then the date field's day, month and year are tab stops
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Show the cards":
            break
    assert page.evaluate("document.activeElement.textContent") == "Show the cards"
    page.keyboard.press("Enter")
    accept = page.locator("button.accept").first
    expect(accept).to_be_visible()
    accept.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".feedback-status").first).to_have_text("Accepted: feedback stored.")


def injected_p01() -> str:
    bundle: dict[str, Any] = copy.deepcopy(load_json(EXAMPLES / "P01-classic-right.json"))
    observation = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    observation["note"] = [{"text": "<script>window.__xss = 1; alert('xss')</script>"}]
    observation["code"]["text"] = '<img src=x onerror="window.__xss = 2; alert(2)">'
    return json.dumps(bundle)


def test_script_in_a_pasted_bundle_is_shown_as_text_and_never_runs(page: Page) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto("/review")
    page.click("details.paste summary")
    page.fill("#bundle", injected_p01())
    page.click("button[type=submit]")
    data = page.locator("table.data")
    expect(data).to_contain_text("<script>window.__xss = 1; alert('xss')</script>")
    expect(data).to_contain_text('<img src=x onerror="window.__xss = 2; alert(2)">')
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0
    assert dialogs == []
    expect(page.locator("article.card")).to_have_count(2)
    shot(page, "pasted-injection")


def test_an_uploaded_bad_bundle_shows_its_data_issues(page: Page) -> None:
    page.goto("/review")
    page.click("details.paste summary")
    page.set_input_files("#upload", str(EXAMPLES / "P13-bad-input.json"))
    page.click("button[type=submit]")
    issues = page.locator("table.issues")
    expect(issues).to_contain_text("error")
    expect(issues).to_contain_text("Observation.status")
    shot(page, "p13-issues")


def test_a_paste_that_is_not_a_bundle_is_explained(page: Page) -> None:
    page.goto("/review")
    page.click("details.paste summary")
    page.fill("#bundle", "{not json")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("The bundle is not JSON (line 1, column 2")
    expect(page.locator("#bundle")).to_have_value("{not json")


def test_a_pasted_bundle_with_a_lone_surrogate_is_explained_by_its_place(page: Page) -> None:
    page.goto("/review")
    page.click("details.paste summary")
    page.fill("#bundle", '{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "p", '
                         '"name": [{"text": "\\ud800"}]}}]}')
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("The bundle holds a lone surrogate escape")
    expect(page.get_by_role("alert")).to_contain_text("entry[0].resource.name[0].text")


def test_review_pages_send_a_content_security_policy(service: tuple[str, Path]) -> None:
    for path in ("/review", "/review/rules", "/review?example=P01-classic-right"):
        response = httpx.get(f"{service[0]}{path}")
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CSP


def test_with_authentication_on_there_is_no_review_page(tmp_path: Path, issuers_file: Path) -> None:
    settings = service_settings(tmp_path, issuers_file=issuers_file, public_url="https://cds.example.org")
    with running(create_app(settings)) as url:
        assert httpx.get(f"{url}/review").status_code == 404


def test_docs_render_offline_and_show_the_hook_endpoint(browser: Browser, service: tuple[str, Path]) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=service[0])
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(service[0]) else outside.append(r.url))
    page.goto("/docs")
    expect(page.get_by_text("/cds-services/{service_id}", exact=True).first).to_be_visible(timeout=15000)
    shot(page, "docs")
    context.close()
    assert outside == []


PAGES = ["/review", "/review?example=P01-classic-right", "/review/rules", "/rules", "/rules/R3",
         "/why/hip-strengthening", "/why/patellar-glide"]


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_passes_an_axe_audit_and_is_captured(browser: Browser, service: tuple[str, Path],
                                                        width: int) -> None:
    """axe-core (shipped inside axe-playwright-python, no network): no serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(viewport={"width": width, "height": 800}, base_url=service[0], bypass_csp=True)
    page = context.new_page()
    found = {}
    for path in PAGES:
        page.goto(path)
        violations = Axe().run(page).response["violations"]
        found[path] = [(v["id"], v["impact"]) for v in violations if v["impact"] in ("serious", "critical")]
        name = path.strip("/").replace("/", "-").replace("?example=", "-") or "home"
        shot(page, f"{name}-{width}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, path
    context.close()
    assert found == {path: [] for path in PAGES}


def test_no_header_or_cell_of_the_rules_page_wraps_inside_a_word(page: Page) -> None:
    page.goto("/review/rules")
    broken = page.evaluate("""() => {
        const broken = [];
        for (const cell of document.querySelectorAll("table.rules th, table.rules td")) {
            for (const node of cell.querySelectorAll("*").length ? [] : [cell]) {
                const text = node.firstChild;
                if (!text || text.nodeType !== Node.TEXT_NODE) continue;
                for (const match of text.textContent.matchAll(/[^\\s\\-\\u2013]+/g)) {  // a line may end after a hyphen
                    const range = document.createRange();
                    range.setStart(text, match.index);
                    range.setEnd(text, match.index + match[0].length);
                    if (range.getClientRects().length > 1) broken.push(match[0]);
                }
            }
        }
        return broken;
    }""")
    assert broken == []
    styles = page.evaluate("""() => [...document.querySelectorAll("table.rules td, table.rules th")].map(
        (c) => getComputedStyle(c).overflowWrap + "/" + getComputedStyle(c).wordBreak)""")
    assert set(styles) == {"normal/normal"}


def test_the_charts_count_what_an_ehrs_feedback_said(page: Page, service: tuple[str, Path]) -> None:
    """An EHR's call and feedback (the review page's own runs are counted nowhere), then the charts."""
    hook = f"{service[0]}/cds-services/hipflex-patient-view"
    strength, glide = httpx.post(hook, json=hook_request()).json()["cards"]
    reason = next(r for r in glide["overrideReasons"] if r["display"] == "Not clinically appropriate")
    sent = [{"card": strength["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z",
             "acceptedSuggestions": [{"id": strength["suggestions"][0]["uuid"]}]},
            {"card": glide["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:01:00Z",
             "overrideReason": {"reason": {"system": reason["system"], "code": reason["code"]}}}]
    assert httpx.post(f"{hook}/feedback", json={"feedback": sent}).status_code == 200
    open_example(page)  # a review-page run on top: it must not change a figure
    page.goto("/review/rules")
    assert rule_row(page, "R4")["reasons"] == "Not clinically appropriate (1)"
    strength_row, glide_row = page.locator("#kind-hip-strengthening"), page.locator("#kind-patellar-glide")
    expect(strength_row.locator("td.issued")).to_have_text("1")
    expect(strength_row.locator("td.rate")).to_have_text("100 % (21\u2013100 %)")
    expect(glide_row.locator("td.overridden")).to_have_text("1")
    expect(glide_row.locator("td.reasons")).to_have_text("Not clinically appropriate (1)")
    expect(page.locator("svg.chart desc")).to_contain_text("End-range hip-flexor strengthening: 1 issued, 1 accepted")
    page.locator("table.rules th button.sort", has_text="Fired").click()
    page.locator("table.rules th button.sort", has_text="Fired").click()  # descending: the most fired first
    first = page.locator("table.rules tbody tr").first.locator("td.fired").inner_text()
    assert int(first) == max(int(x) for x in page.locator("table.rules td.fired").all_inner_texts())


def test_the_user_selector_shows_that_a_patient_gets_no_cards(page: Page) -> None:
    page.goto("/review")
    page.select_option("#example", "P01-classic-right")
    page.select_option("#user", "patient")
    page.click("button[type=submit]")
    expect(page.locator("article.card")).to_have_count(0)
    expect(page.locator(".no-cards")).to_have_text(
        "No cards: the user is the patient, and these suggestions are for clinicians.")


def test_the_root_leads_to_a_page_and_head_works_where_get_does(service: tuple[str, Path]) -> None:
    import httpx

    url = service[0]
    assert httpx.get(url, follow_redirects=False).headers["location"] == "/review"
    for path in ("/review", "/review/rules", "/rules", "/rules/R3", "/health", "/cds-services"):
        head = httpx.head(f"{url}{path}")
        assert (head.status_code, head.content) == (200, b""), path


def test_every_page_has_a_favicon_and_the_rules_table_fits_at_1280_px(page: Page, service: tuple[str, Path]) -> None:
    icon = httpx.get(f"{service[0]}/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    page.goto("/review/rules")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.locator("link[rel=icon]").count() == 1
