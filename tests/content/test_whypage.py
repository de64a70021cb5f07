"""The clinician's "Why this suggestion" page, read from a real server: every threshold behind the card (checked
against the rule file, read here on its own), the how-to cues, the red flags, no engine or test words."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from cds.clinical.explanation import Explanation
from cds.web.app import create_app
from tests.support.builders import hook_request
from tests.support.paths import RULES
from tests.support.servers import running, service_settings

PUBLIC = "https://cds.example.org"
UNITS = {"mrc-grade": "/5", "%": " %", "a": " years", "deg": "°", "Cel": " °C"}
ENGINE_WORDS = ["the finding", "there is no", "derives", "recommends the card", "Grade F", "None listed",
                "make test", "in-scope", "strength-conflict", "“", "["]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = service_settings(tmp_path_factory.mktemp("why"), public_url=PUBLIC)
    with running(create_app(settings)) as url:
        yield url


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def parameters_used(rule: dict[str, Any], parameters: dict[str, Any]) -> set[str]:
    found = set()
    for condition in rule.get("when", []):
        for value in condition.values():
            values = value.values() if isinstance(value, dict) else [value]
            found |= {v for v in values if isinstance(v, str) and v in parameters}
    return found


def test_the_strengthening_page_lists_every_threshold_p01s_card_rests_on(service: str) -> None:
    card = httpx.post(f"{service}/cds-services/hipflex-patient-view", json=hook_request()).json()["cards"][0]
    link = card["links"][0]["url"]
    assert link == f"{PUBLIC}/why/hip-strengthening"
    page = httpx.get(service + link.removeprefix(PUBLIC))
    assert page.status_code == 200
    source = yaml.safe_load((RULES / "knee-hip-v1.yaml").read_text())
    rules = {r["id"]: r for r in source["rules"]}
    behind = {r.id for r in Explanation.of(card).rules}
    names = set().union(*(parameters_used(rules[rule], source["parameters"]) for rule in behind))
    assert names  # P01's card rests on thresholds: at least the weak grade and the ages
    shown = text_of(page.text)
    for name in names:
        parameter = source["parameters"][name]
        assert f"{parameter['value']}{UNITS[parameter['unit']]}" in shown, name


@pytest.mark.parametrize(("card", "cues"), [
    ("hip-strengthening", ["back against a wall", "no side tilt", "mirror", "above hip level"]),
    ("patellar-glide", ["towards the foot", "every hour or as needed", "unlock your knees", "never on its own"]),
])
def test_a_why_page_says_how_to_do_it_when_not_to_and_the_evidence(service: str, card: str,
                                                                  cues: list[str]) -> None:
    shown = text_of(httpx.get(f"{service}/why/{card}").text)
    for cue in cues:
        assert cue in shown
    assert "recent knee trauma (within 42 days)" in shown
    assert "expert opinion" in shown
    assert "Rule set knee-hip 1.0.0" in shown
    assert [word for word in ENGINE_WORDS if word in shown] == []


def test_a_why_page_answers_json_and_an_unknown_card_is_404(service: str) -> None:
    page = httpx.get(f"{service}/why/hip-strengthening", headers={"Accept": "application/json"}).json()
    assert page["claims"][0]["grade"] == "A (strong)"
    assert {"R3", "D1-mmt", "D8"} <= {r["id"] for r in page["rules"]}
    missing = httpx.get(f"{service}/why/no-such-card")
    assert missing.status_code == 404
    assert "no card kind 'no-such-card'" in missing.json()["message"]
