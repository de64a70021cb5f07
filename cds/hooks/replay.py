"""Why did this patient get this card? Each call's cards keep a de-identified snapshot of the facts they were
decided on, so a card can be decided again: under the release that made it (it must give the same card; when it
does not, that is said) and under the active one, with the rule and threshold changes between the two.

A snapshot holds the typed facts with every identifier and free text taken out: fact ids renumbered, FHIR
references dropped, the words of records (`display`) not kept. The patient is only the keyed hash the card
already has. Snapshots are deleted after HIPFLEX_SNAPSHOT_RETENTION_DAYS (default 400).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import to_json

from cds.clinical.cards import ExplainedCard
from cds.clinical.pipeline import Pipeline
from cds.content.changes import Changes, compare
from cds.content.facts import InputFact
from cds.errors import HipflexError
from cds.hooks.store import IssuedCard, Snapshot, Store

FACTS = TypeAdapter(list[InputFact])
NOT_KEPT = "(not kept)"


class CannotReplay(HipflexError):
    """The card is unknown, its snapshot has expired, or its release is no longer published."""


def snapshot_of(facts: list[InputFact], as_of: dt.date) -> Snapshot:
    """The facts without identifiers or free text, ready to store beside the call's cards."""
    kept: list[dict[str, Any]] = FACTS.dump_python(facts, mode="json")  # one pass for all of them
    for number, fields in enumerate(kept, 1):
        fields |= {"id": f"{fields['kind']}:{number}", "source": None}
        if "display" in fields:
            fields["display"] = NOT_KEPT
    return Snapshot(str(uuid.uuid4()), as_of, to_json(kept).decode())  # valid facts still (read back with FACTS)


def card_key(card: ExplainedCard) -> str:
    rec = card.explanation.recommendation
    return f"{rec.card}:{rec.side or '-'}"


@dataclass(frozen=True)
class Redecided:
    version: str | None
    cards: list[str]  # kind:side
    makers: dict[str, list[str]]  # kind:side -> rule labels that made it


@dataclass(frozen=True)
class Replay:
    card: IssuedCard
    as_of: dt.date
    own: Redecided
    same_as_issued: bool
    active: Redecided
    changes: Changes | None  # from the card's release to the active one (None: the same release)

    @property
    def key(self) -> str:
        return f"{self.card.card_kind}:{self.card.side or '-'}"


def redecide(pipeline: Pipeline, facts: list[InputFact]) -> Redecided:
    evaluation = pipeline.engine.evaluate(facts)
    cards = pipeline.cards.build(evaluation, [], "replay")
    return Redecided(pipeline.release.version if pipeline.release else None, sorted(card_key(c) for c in cards),
                     {card_key(c): sorted(r.label for r in c.explanation.rules if r.recommends) for c in cards})


def replay(store: Store, card_uuid: str, own: Pipeline, active: Pipeline) -> Replay:
    """Decide a stored card's snapshot again under `own` (the card's release) and `active`."""
    card = store.issued(card_uuid.lower())
    if card is None:
        raise CannotReplay(f"no issued card {card_uuid}")
    found = store.snapshot(card.snapshot_id) if card.snapshot_id else None
    if found is None:
        raise CannotReplay(f"card {card_uuid} has no snapshot any more (kept HIPFLEX_SNAPSHOT_RETENTION_DAYS, or "
                           "issued before snapshots were kept)")
    facts = FACTS.validate_json(found.facts)
    then, now = redecide(own, facts), redecide(active, facts)
    key = f"{card.card_kind}:{card.side or '-'}"
    makers = sorted(r.label for r in card.rules if r.recommends)
    same = key in then.cards and (not makers or then.makers.get(key) == makers)
    changes = None if own is active else compare(own.ruleset, active.ruleset)
    return Replay(card, found.as_of, then, same, now, changes)
