"""What clinicians did with the issued cards, read from the store: per rule and per card kind, accepted and
overridden with the reasons, by week, and the review page's previews counted apart. For the review pages.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cds.hooks.store import CARD_RULES, PREVIEW, Store, feedback, issued_cards

COUNTED = sa.or_(issued_cards.c.origin.is_(None), issued_cards.c.origin != PREVIEW)


def previews(store: Store) -> tuple[int, int]:
    """(review-page cards, feedback items on them): stored, shown apart, counted in no rule or card figure."""
    preview = issued_cards.c.origin == PREVIEW
    with store.engine.connect() as conn:
        cards = conn.execute(sa.select(sa.func.count()).select_from(issued_cards).where(preview)).scalar_one()
        items = conn.execute(sa.select(sa.func.count()).select_from(feedback.join(issued_cards)).where(preview)
                             ).scalar_one()
    return int(cards), int(items)


@dataclass
class RuleUse:
    """How often a rule (id and version) stood behind an issued card, and what clinicians did with those cards."""

    fired: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def rule_use(store: Store) -> dict[str, RuleUse]:
    """Per rule label ("R3 v1"): cards it stood behind, and what clinicians did with the cards it made.

    `fired` counts every card a rule supported; accepted and overridden count only against the rules that made
    the card (not those behind a card it builds on), and only the latest outcome of each card (a card accepted
    and later overridden counts once, as overridden; every item stays stored). Reads every row: fine for review.
    """
    with store.engine.connect() as conn:
        cards = conn.execute(sa.select(issued_cards.c.card_uuid, issued_cards.c.rules).where(COUNTED)).all()
        items = conn.execute(sa.select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.override_code,
                                       feedback.c.outcome_timestamp, feedback.c.id)).all()
    latest = _latest_outcomes(items)
    use: dict[str, RuleUse] = {}
    for card_uuid, rules_json in cards:
        rules = CARD_RULES.validate_json(rules_json)
        makers = [r for r in rules if r.recommends] or rules  # cards stored before the flag: all rules
        for rule in rules:
            use.setdefault(rule.label, RuleUse()).fired += 1
        if card_uuid not in latest:
            continue
        _, outcome, reason = latest[card_uuid]
        for rule in makers:
            entry = use[rule.label]
            entry.accepted += outcome == "accepted"
            entry.overridden += outcome == "overridden"
            if outcome == "overridden":
                entry.reasons[reason or "(no reason given)"] += 1
    return use


@dataclass
class CardUse:
    """What clinicians did with the cards of one kind: issued, latest outcome per card, reasons, weekly trend."""

    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    weekly: dict[str, list[int]] = field(default_factory=dict)  # ISO week -> [issued, accepted, overridden]


def card_use(store: Store) -> dict[str, CardUse]:
    """Per card kind; each card counts once, by its latest outcome, in the week it was issued."""
    with store.engine.connect() as conn:
        cards = conn.execute(sa.select(issued_cards.c.card_uuid, issued_cards.c.card_kind,
                                       issued_cards.c.issued_at).where(COUNTED)).all()
        items = conn.execute(sa.select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.override_code,
                                       feedback.c.outcome_timestamp, feedback.c.id)).all()
    latest = _latest_outcomes(items)
    use: dict[str, CardUse] = {}
    for card_uuid, kind, issued_at in cards:
        entry = use.setdefault(kind, CardUse())
        year, week, _ = issued_at.isocalendar()
        counts = entry.weekly.setdefault(f"{year}-W{week:02d}", [0, 0, 0])
        entry.issued += 1
        counts[0] += 1
        if card_uuid in latest:
            _, outcome, reason = latest[card_uuid]
            accepted = outcome == "accepted"
            entry.accepted += accepted
            entry.overridden += not accepted
            counts[1 if accepted else 2] += 1
            if not accepted:
                entry.reasons[reason or "(no reason given)"] += 1
    return use


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float, float] | None:
    """A proportion with its 95 % Wilson interval (sound for small counts, unlike p ± 1.96·SE); None if no data."""
    if total == 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / denominator
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _latest_outcomes(items: Sequence[Any]) -> dict[str, tuple[tuple[dt.datetime, int], str, str | None]]:
    """Card uuid -> its latest feedback (by outcome time, then arrival): (order, outcome, override code)."""
    latest: dict[str, tuple[tuple[dt.datetime, int], str, str | None]] = {}
    for card_uuid, outcome, reason, stamp, row_id in items:
        order = (_instant(stamp), row_id)
        if card_uuid not in latest or order > latest[card_uuid][0]:
            latest[card_uuid] = (order, outcome, reason)
    return latest


def _instant(stamp: str) -> dt.datetime:
    """An outcomeTimestamp (RFC 3339, checked on the way in) as an aware datetime, for ordering."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
