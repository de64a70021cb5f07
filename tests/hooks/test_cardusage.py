"""What clinicians did with the cards, counted from a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest

from cds.hooks.cardusage import card_use, previews, rule_use, wilson
from cds.hooks.store import CardRule, FeedbackRecord, IssuedCard, Store


def issued(kind: str, rules: list[CardRule], *, preview: bool = False) -> IssuedCard:
    return IssuedCard(card_uuid=str(uuid.uuid4()), service_id="hipflex-patient-view", hook_instance=str(uuid.uuid4()),
                      card_kind=kind, side="right", rules=rules, suggestions=[str(uuid.uuid4())], preview=preview)


def outcome(card: IssuedCard, what: str, at: str, reason: str | None = None) -> FeedbackRecord:
    return FeedbackRecord(card_uuid=card.card_uuid, outcome=what,
                          accepted_suggestions=card.suggestions if what == "accepted" else [],
                          override_system="urn:x" if reason else None, override_code=reason, override_comment=None,
                          outcome_timestamp=at)


MAKER, SUPPORT = CardRule(id="R3", version=1, recommends=True), CardRule(id="D5", version=1)


def test_each_card_counts_once_by_its_latest_outcome(database_url: str) -> None:
    store = Store(database_url, b"k")
    first, second, third = (issued("hip-strengthening", [MAKER, SUPPORT]) for _ in range(3))
    store.record_cards([first, second, third], "p")
    store.record_feedback(outcome(first, "accepted", "2026-11-24T10:00:00Z"))
    store.record_feedback(outcome(first, "overridden", "2026-11-24T11:00:00Z", "patient-declined"))  # later: wins
    store.record_feedback(outcome(second, "overridden", "2026-11-24T12:00:00Z", "already-addressed"))
    store.record_feedback(outcome(second, "accepted", "2026-11-24T09:00:00Z"))  # arrives last, happened first
    kinds = card_use(store)["hip-strengthening"]
    assert (kinds.issued, kinds.accepted, kinds.overridden) == (3, 0, 2)
    assert dict(kinds.reasons) == {"patient-declined": 1, "already-addressed": 1}
    rules = rule_use(store)
    assert (rules["R3 v1"].fired, rules["R3 v1"].overridden) == (3, 2)
    assert (rules["D5 v1"].fired, rules["D5 v1"].overridden) == (3, 0)  # it supported the cards, did not make them
    store.close()


def test_review_page_previews_are_counted_apart(database_url: str) -> None:
    store = Store(database_url, b"k")
    shown = issued("patellar-glide", [MAKER], preview=True)
    store.record_cards([shown, issued("patellar-glide", [MAKER])], "p")
    store.record_feedback(outcome(shown, "accepted", "2026-11-24T10:00:00Z"))
    assert previews(store) == (1, 1)
    assert card_use(store)["patellar-glide"].issued == 1
    assert (rule_use(store)["R3 v1"].fired, rule_use(store)["R3 v1"].accepted) == (1, 0)
    store.close()


@pytest.mark.parametrize(("successes", "total", "low", "high"), [
    (5, 10, 0.2366, 0.7634),   # the textbook example: Wilson 95 % for 5 of 10
    (0, 10, 0.0, 0.2775),      # no successes still gives an upper bound
    (10, 10, 0.7225, 1.0),
])
def test_acceptance_rates_carry_the_wilson_interval(successes: int, total: int, low: float, high: float) -> None:
    found = wilson(successes, total)
    assert found is not None
    assert found[0] == successes / total
    assert found[1] == pytest.approx(low, abs=1e-4)
    assert found[2] == pytest.approx(high, abs=1e-4)
    assert wilson(0, 0) is None
