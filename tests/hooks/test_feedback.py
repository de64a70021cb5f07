"""Feedback bodies (S2 #feedback, cds-fb-1…3) checked against the cards this service issued."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from cds.hooks.errors import InvalidRequest, UnknownCard
from cds.hooks.feedback import parse_feedback, store_feedback
from cds.hooks.store import CardRule, IssuedCard, Store

SERVICE = "hipflex-patient-view"


@pytest.fixture
def issued(store: Store) -> IssuedCard:
    card = IssuedCard(card_uuid=str(uuid.uuid4()), service_id=SERVICE, hook_instance=str(uuid.uuid4()),
                      card_kind="patellar-glide", side="right", rules=[CardRule(id="R3", version=1)],
                      suggestions=[str(uuid.uuid4())])
    store.record_cards([card], "p01")
    return card


def body(*items: dict[str, Any]) -> bytes:
    return json.dumps({"feedback": list(items)}).encode()


def accepted(card: IssuedCard, **extra: Any) -> dict[str, Any]:
    return {"card": card.card_uuid, "outcome": "accepted", "acceptedSuggestions": [{"id": card.suggestions[0]}],
            "outcomeTimestamp": "2026-11-24T10:00:00Z"} | extra


def overridden(card: IssuedCard, **extra: Any) -> dict[str, Any]:
    return {"card": card.card_uuid, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00.123Z"} | extra


def test_sandbox_shaped_feedback_is_stored(store: Store, issued: IssuedCard) -> None:
    reason = {"reason": {"code": "not-appropriate", "system": "urn:x"}, "userComment": "already doing this"}
    stored = store_feedback(parse_feedback(body(accepted(issued), overridden(issued, overrideReason=reason))),
                            SERVICE, store)
    assert stored == [True, True]
    records = store.feedback_for(issued.card_uuid)
    assert [(r.outcome, r.accepted_suggestions, r.override_code) for r in records] == [
        ("accepted", issued.suggestions, None), ("overridden", [], "not-appropriate")]


def test_the_same_feedback_twice_is_stored_once(store: Store, issued: IssuedCard) -> None:
    assert store_feedback(parse_feedback(body(accepted(issued))), SERVICE, store) == [True]
    assert store_feedback(parse_feedback(body(accepted(issued))), SERVICE, store) == [False]


@pytest.mark.parametrize(("item", "field", "message"), [
    ({"outcome": "accepted"}, "feedback.0.card", "Field required"),
    ({"card": "nope", "outcome": "overridden", "outcomeTimestamp": "2026-11-24T10:00:00Z"}, "feedback.0.card",
     "pattern"),
    (lambda c: accepted(c, outcome="ignored"), "feedback.0.outcome", "'accepted' or 'overridden'"),
    (lambda c: accepted(c, acceptedSuggestions=None), "feedback.0", "cds-fb-2"),
    (lambda c: overridden(c, overrideReason={}), "feedback.0.overrideReason", "cds-fb-3"),
    (lambda c: overridden(c, outcomeTimestamp="yesterday"), "feedback.0.outcomeTimestamp", "RFC 3339"),
    (lambda c: overridden(c, outcomeTimestamp="2026-11-24T10:00:00"), "feedback.0.outcomeTimestamp", "time zone"),
    (lambda c: overridden(c, acceptedSuggestions=[{"id": c.suggestions[0]}]), "feedback.0", "only allowed"),
])
def test_invalid_feedback_names_the_field(issued: IssuedCard, item: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_feedback(body(item(issued) if callable(item) else item))
    assert raised.value.field == field
    assert message in raised.value.message


def test_an_empty_feedback_list_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="feedback"):
        parse_feedback(b'{"feedback": []}')


def test_unknown_card_or_other_service_is_404(store: Store, issued: IssuedCard) -> None:
    for item, service in ((overridden(issued) | {"card": str(uuid.uuid4())}, SERVICE),
                          (overridden(issued), "hipflex-order-select")):
        with pytest.raises(UnknownCard) as raised:
            store_feedback(parse_feedback(body(item)), service, store)
        assert raised.value.error == "unknown-card"
    assert store.feedback_for(issued.card_uuid) == []


def test_a_suggestion_of_another_card_is_refused_and_nothing_is_stored(store: Store, issued: IssuedCard) -> None:
    stranger = accepted(issued, acceptedSuggestions=[{"id": str(uuid.uuid4())}])
    with pytest.raises(InvalidRequest) as raised:
        store_feedback(parse_feedback(body(overridden(issued), stranger)), SERVICE, store)
    assert raised.value.field == "feedback.1.acceptedSuggestions.0.id"
    assert store.feedback_for(issued.card_uuid) == []
