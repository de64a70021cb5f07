"""Replay snapshots: what a card was decided on, without identifiers or free text, deleted when expired, and
enough to give the same card again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from cds.clinical.pipeline import Pipeline
from cds.hooks.call import HookCalls
from cds.hooks.discovery import services
from cds.hooks.fhirclient import FhirReader
from cds.hooks.liverelease import LiveReleases
from cds.hooks.replay import CannotReplay, replay
from cds.hooks.request import HookRequest
from cds.hooks.store import Store, snapshots
from cds.settings import FhirReads, Settings
from tests.support.builders import hook_request
from tests.support.paths import EXAMPLE_DATE, EXAMPLES, load_json

CHARTS = ["P01-classic-right.json", "P27-knee-osteoarthritis-check-first.json", "P05-red-flag-trauma.json"]


def strings_that_identify(bundle: dict[str, Any]) -> set[str]:
    """Every id, name and free text of a chart, and the words of its diagnoses and procedures."""
    found: set[str] = set()

    def walk(value: Any, key: str = "", within: str = "") -> None:
        if isinstance(value, dict):
            kind = str(value.get("resourceType", within))
            for k, v in value.items():
                walk(v, k, kind)
        elif isinstance(value, list):
            for item in value:
                walk(item, key, within)
        elif isinstance(value, str) and len(value) >= 3 and (
                key in ("id", "reference", "family", "given", "text")
                or (key == "display" and within in ("Condition", "Procedure"))):
            found.add(value)

    walk(bundle)
    return found


def issue(calls: HookCalls, name: str) -> list[dict[str, Any]]:
    service = next(s for s in services(calls.pipeline.terminology) if s.hook == "patient-view")
    answer = calls.call(service, HookRequest.model_validate(hook_request(name=name)), today=EXAMPLE_DATE)
    return [c.dump() for c in answer.response.cards]


@pytest.fixture
def calls(tmp_path: Path, pipeline: Pipeline) -> HookCalls:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"replay-key")
    return HookCalls(pipeline, FhirReader(FhirReads()), store)


@pytest.mark.parametrize("name", CHARTS)
def test_a_snapshot_holds_no_identifier_or_free_text(calls: HookCalls, name: str) -> None:
    cards = issue(calls, name)
    assert cards
    assert calls.store is not None
    card = calls.store.issued(cards[0]["uuid"])
    assert card is not None
    assert card.snapshot_id is not None
    snapshot = calls.store.snapshot(card.snapshot_id)
    assert snapshot is not None
    text = snapshot.facts
    leaks = sorted(s for s in strings_that_identify(load_json(EXAMPLES / name)) if s in text)
    assert leaks == []
    assert json.loads(text), "the snapshot keeps the facts"


@pytest.mark.parametrize("name", CHARTS)
def test_each_card_is_given_again_from_its_snapshot(calls: HookCalls, name: str) -> None:
    assert calls.store is not None
    for card in issue(calls, name):
        result = replay(calls.store, card["uuid"], calls.pipeline, calls.pipeline)
        assert result.same_as_issued
        assert result.key in result.active.cards
        assert result.changes is None


def test_snapshots_expire_and_then_a_card_cannot_be_replayed(calls: HookCalls) -> None:
    assert calls.store is not None
    old, new = issue(calls, "P01-classic-right.json")[0], issue(calls, "P05-red-flag-trauma.json")[0]
    old_snapshot = calls.store.issued(old["uuid"]).snapshot_id  # type: ignore[union-attr]
    with calls.store.engine.begin() as conn:
        conn.execute(snapshots.update().where(snapshots.c.snapshot_id == old_snapshot).values(
            created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=401)))
    LiveReleases(calls.pipeline.settings, calls.store, calls.pipeline).expire_snapshots()  # retention: 400 days
    with pytest.raises(CannotReplay, match="has no snapshot any more"):
        replay(calls.store, old["uuid"], calls.pipeline, calls.pipeline)
    assert replay(calls.store, new["uuid"], calls.pipeline, calls.pipeline).same_as_issued
    assert calls.store.issued(old["uuid"]) is not None  # the card itself stays


def test_no_snapshot_is_kept_when_retention_is_zero(tmp_path: Path) -> None:
    pipeline = Pipeline(Settings(snapshot_retention_days=0))
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"k")
    calls = HookCalls(pipeline, FhirReader(FhirReads()), store)
    card = issue(calls, "P01-classic-right.json")[0]
    assert store.issued(card["uuid"]).snapshot_id is None  # type: ignore[union-attr]
