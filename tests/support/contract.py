"""The CDS Hooks 2.0 response rules, checked on plain JSON (independent of cds.clinical.response)."""

from __future__ import annotations

import re
from typing import Any

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assert_cds_response(body: dict[str, Any]) -> None:
    """S2 #cds-service-response and the LM invariants cds-resp-1…6, plus no nulls or empties (S2 #use-of-json)."""
    assert isinstance(body.get("cards"), list), "cards must always be present"
    assert set(body) <= {"cards", "systemActions", "extension"}
    assert_no_empties(body, "response")
    ids: list[str] = []
    for card in body["cards"]:
        assert isinstance(card["summary"], str)
        assert 0 < len(card["summary"]) < 140, card["summary"]
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        ids.append(card["uuid"])
        if card.get("suggestions"):
            assert card.get("selectionBehavior") in ("at-most-one", "any"), "cds-resp-6"
            if card["selectionBehavior"] == "at-most-one":
                assert sum(bool(s.get("isRecommended")) for s in card["suggestions"]) <= 1, "cds-resp-1"
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"]
            ids.append(suggestion["uuid"])
            for action in suggestion.get("actions", []):
                assert action["type"] in ("create", "update", "delete")
                assert action["description"], "cds-resp-5"
                if action["type"] == "create":
                    assert isinstance(action["resource"], dict)
                    assert action["resource"]["resourceType"]
                if action["type"] == "delete":
                    assert action.get("resourceId"), "cds-resp-2"
                    assert "resource" not in action, "cds-resp-2"
        for reason in card.get("overrideReasons", []):
            assert all(reason.get(k) for k in ("system", "code", "display")), "cds-resp-4"
        for link in card.get("links", []):
            assert all(link.get(k) for k in ("label", "url")), link
            assert link["type"] in ("absolute", "smart")
            assert link["type"] == "smart" or "appContext" not in link, "cds-resp-3"
    assert all(UUID_RE.match(i) for i in ids), ids
    assert len(ids) == len(set(ids)), "card and suggestion uuids must be unique"


def assert_no_empties(value: Any, where: str) -> None:
    assert value not in (None, "", {}), f"{where} is null or empty"
    if isinstance(value, dict):
        for key, item in value.items():
            if not (where == "response" and key == "cards"):
                assert item != [], f"{where}.{key} is an empty list"
            assert_no_empties(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_empties(item, f"{where}[{index}]")
