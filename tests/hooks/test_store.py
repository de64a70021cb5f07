"""The store on both backends: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cds.hooks.store import CardRule, FeedbackRecord, IssuedCard, Snapshot, Store, issued_cards, patient_key


def card(service: str = "hipflex-patient-view") -> IssuedCard:
    return IssuedCard(card_uuid=str(uuid.uuid4()), service_id=service, hook_instance=str(uuid.uuid4()),
                      card_kind="hip-strengthening", side="right", rules=[CardRule(id="R1", version=1)],
                      suggestions=[str(uuid.uuid4())])


def feedback_on(issued: IssuedCard, timestamp: str = "2026-11-24T10:00:00Z") -> FeedbackRecord:
    return FeedbackRecord(card_uuid=issued.card_uuid, outcome="accepted", accepted_suggestions=issued.suggestions,
                          override_system=None, override_code=None, override_comment=None,
                          outcome_timestamp=timestamp)


def test_issued_cards_keep_rules_and_a_keyed_patient_hash(database_url: str) -> None:
    store = Store(database_url, b"key-1")
    issued = card()
    store.record_cards([issued], "patient-123")
    assert store.issued(issued.card_uuid) == issued
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT patient_hash FROM issued_cards").scalar_one()
    assert "patient-123" not in stored
    assert stored == store.patient_hash("patient-123")
    assert stored != Store(database_url, b"key-2").patient_hash("patient-123")
    store.close()


def test_feedback_is_stored_once_even_when_resent(database_url: str) -> None:
    store = Store(database_url, b"key")
    issued = card()
    store.record_cards([issued], "p")
    assert store.record_feedback(feedback_on(issued)) is True
    assert store.record_feedback(feedback_on(issued)) is False
    assert store.record_feedback(feedback_on(issued, "2026-11-24T10:05:00Z")) is True
    assert [f.outcome_timestamp for f in store.feedback_for(issued.card_uuid)] == [
        "2026-11-24T10:00:00Z", "2026-11-24T10:05:00Z"]
    store.close()


def test_feedback_survives_a_new_store_on_the_same_database(database_url: str) -> None:
    first = Store(database_url, b"key")
    issued = card()
    first.record_cards([issued], "p")
    first.record_feedback(feedback_on(issued))
    first.close()
    second = Store(database_url, b"key")
    assert [f.card_uuid for f in second.feedback_for(issued.card_uuid)] == [issued.card_uuid]
    second.close()


def test_a_jwt_id_is_accepted_once_until_it_expires(database_url: str) -> None:
    store = Store(database_url, b"key")
    later = int(time.time()) + 300
    assert store.first_use_of_token("https://ehr.example", "jti-1", later) is True
    assert store.first_use_of_token("https://ehr.example", "jti-1", later) is False
    assert store.first_use_of_token("https://other.example", "jti-1", later) is True
    assert store.first_use_of_token("https://ehr.example", "old", int(time.time()) - 10) is True
    assert store.first_use_of_token("https://ehr.example", "jti-2", later) is True  # purges the expired one
    assert store.first_use_of_token("https://ehr.example", "old", later) is True
    store.close()


def test_patient_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "patient.key"
    first = patient_key(None, key_file)
    assert patient_key(None, key_file) == first
    assert len(first) == 64
    assert key_file.stat().st_mode & 0o077 == 0
    assert patient_key("explicit", key_file) == b"explicit"


def test_a_failing_statement_never_carries_its_values_into_an_error_or_a_log(database_url: str) -> None:
    """What the service logs for an internal fault is the exception text: it must not hold the clinician's words."""
    import sqlalchemy as sa

    store = Store(database_url, b"key")
    issued = card()
    store.record_cards([issued], "p")
    secret = "patient said: my name is Jane Example"
    record = FeedbackRecord(card_uuid=issued.card_uuid, outcome="overridden" * 10, accepted_suggestions=[],
                            override_system=None, override_code=None, override_comment=secret,
                            outcome_timestamp="2026-11-24T10:00:00Z")
    failed = None
    try:
        store.record_feedback(record)  # outcome is String(16): PostgreSQL refuses it, SQLite stores it
    except sa.exc.SQLAlchemyError as exc:
        failed = exc
    if database_url.startswith("postgresql"):
        assert failed is not None
    if failed is not None:
        assert secret not in str(failed)
        assert "parameters hidden" in str(failed)
    store.close()


def test_a_call_written_inline_reads_back_as_one_written_by_sqlalchemy(store: Store) -> None:
    """The inline path converts each value as SQLAlchemy would, so every reader sees the same rows."""
    by_core, inline = card(), card()
    snapshot = Snapshot(str(uuid.uuid4()), dt.date(2026, 11, 24), '{"facts": []}')
    store.record_calls([([by_core], "p", None)])
    assert store.record_calls_inline([([inline], "p", snapshot)]) is True
    assert store.issued(inline.card_uuid) == inline
    assert store.snapshot(snapshot.snapshot_id) == snapshot
    with store.engine.connect() as conn:
        times = dict(conn.execute(sa.select(issued_cards.c.card_uuid, issued_cards.c.issued_at)).all())
    assert abs(times[inline.card_uuid] - times[by_core.card_uuid]) < dt.timedelta(seconds=5)


def test_the_inline_write_gives_way_at_once_to_a_held_write_lock(store: Store, tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    refused = store.record_calls_inline([([card()], "p", None)])
    waited = time.perf_counter() - started
    holder.execute("ROLLBACK")
    later = card()
    assert (refused, waited < 1) == (False, True)  # the driver's own busy timeout is 5 s
    assert store.record_calls_inline([([later], "p", None)]) is True
    assert store.issued(later.card_uuid) == later


def test_only_a_sqlite_store_writes_inline(database_url: str) -> None:
    store = Store(database_url, b"key")
    assert store.writes_inline is database_url.startswith("sqlite")
    store.close()


class CardInsertFails(Store):
    """A real store whose issued-card insert on the loop fails once its snapshot row is already written."""

    failing = True

    def _inline_insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
        if self.failing and table is issued_cards:
            raise TypeError("a value the driver cannot take")
        return super()._inline_insert(table, rows)


def test_an_inline_write_that_fails_midway_keeps_none_of_its_rows(tmp_path: Path) -> None:
    store = CardInsertFails(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"k")
    failed = Snapshot(str(uuid.uuid4()), dt.date(2026, 11, 24), '{"facts": []}')
    assert store.record_calls_inline([([card()], "p", failed)]) is False
    store.failing = False
    assert store.record_calls_inline([([card()], "p", None)]) is True
    assert store.snapshot(failed.snapshot_id) is None  # not committed by the next batch
    store.close()
