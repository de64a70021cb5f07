"""What the service remembers: the cards it issued, the feedback on them, and seen JWT ids.

One code path for SQLite (the default, a file) and PostgreSQL (`DATABASE_URL=postgresql://…`),
through SQLAlchemy Core; the one exception is the SQLite insert of issued cards made on the event loop
(`record_calls_inline`, see groupcommit.py), which hands SQLAlchemy's own compiled statement and converted
values to the driver, so every reader sees the same rows. A card is stored with the rule ids and versions
behind it so feedback joins to rules; the patient only as a keyed hash (HMAC-SHA256), so the store holds no
patient identifier yet cards of one patient can still be grouped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, TypeAdapter
from sqlalchemy.exc import IntegrityError

from cds.clinical.explanation import rule_label
from cds.errors import HipflexError
from cds.settings import masked

metadata = sa.MetaData()

issued_cards = sa.Table(
    "issued_cards", metadata,
    sa.Column("card_uuid", sa.String(36), primary_key=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("hook_instance", sa.String(36), nullable=False),
    sa.Column("card_kind", sa.String(64), nullable=False),
    sa.Column("side", sa.String(16)),
    sa.Column("rules", sa.Text, nullable=False),  # JSON [{"id":…, "version":…}]
    sa.Column("suggestions", sa.Text, nullable=False),  # JSON [suggestion uuid, …]
    sa.Column("patient_hash", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("issuer", sa.Text),  # the JWT issuer whose call got the card (None: authentication off)
    sa.Column("tenant", sa.Text),
    sa.Column("origin", sa.Text),  # PREVIEW: a review-page run, kept out of every count; None: an EHR call
    sa.Column("release_version", sa.Text),  # the release the card came from (None: content outside any release)
    sa.Column("release_hash", sa.Text),
    sa.Column("snapshot_id", sa.Text),  # the de-identified facts it was decided on (snapshots), while kept
)
ADDED_COLUMNS = {"issued_cards": ("issuer", "tenant", "origin", "release_version", "release_hash", "snapshot_id")}
# (added since v0.1: older stores get them at start-up)
PREVIEW = "review-page"

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(36), sa.ForeignKey("issued_cards.card_uuid"), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("accepted_suggestions", sa.Text, nullable=False),  # JSON [uuid, …], sorted
    sa.Column("override_system", sa.Text),
    sa.Column("override_code", sa.Text),
    sa.Column("override_comment", sa.Text),
    sa.Column("outcome_timestamp", sa.String(40), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("card_uuid", "outcome", "accepted_suggestions", "outcome_timestamp", name="feedback_once"),
)

releases = sa.Table(  # published content, whole, so every worker and instance decides with the same files
    "releases", metadata,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("manifest", sa.Text, nullable=False),  # release.yaml as JSON
    sa.Column("files", sa.Text, nullable=False),  # JSON {file name: text}
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
)

release_switches = sa.Table(  # every activation, rollback and shadow change, effective from a time (maybe later)
    "release_switches", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("role", sa.String(8), nullable=False),  # active | shadow
    sa.Column("version", sa.String(32)),  # None: no shadow release
    sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

shadow_results = sa.Table(  # each hook call decided again under the shadow release: where it would differ
    "shadow_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("patient_hash", sa.String(64), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("agreed", sa.Boolean, nullable=False),
    sa.Column("gained", sa.Text, nullable=False),  # JSON ["kind:side by R4 v2", …]
    sa.Column("lost", sa.Text, nullable=False),
)

snapshots = sa.Table(  # what a call's cards were decided on, de-identified, for replay; deleted when expired
    "snapshots", metadata,
    sa.Column("snapshot_id", sa.String(36), primary_key=True),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("facts", sa.Text, nullable=False),  # JSON, no identifiers or free text (cds.hooks.replay)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

seen_tokens = sa.Table(
    "seen_tokens", metadata,
    sa.Column("issuer", sa.Text, primary_key=True),
    sa.Column("jti", sa.String(255), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)


class CardRule(BaseModel):
    """A rule behind a stored card, as kept in `issued_cards.rules` (JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    version: int
    recommends: bool = False  # made the card (the others support it); cards stored before the flag have none

    @property
    def label(self) -> str:
        return rule_label(self.id, self.version)


CARD_RULES = TypeAdapter(list[CardRule])


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    service_id: str
    hook_instance: str
    card_kind: str
    side: str | None
    rules: list[CardRule]
    suggestions: list[str]
    issuer: str | None = None
    tenant: str | None = None
    preview: bool = False  # from the review page: feedback on it is stored, but it is counted nowhere
    release_version: str | None = None
    release_hash: str | None = None
    snapshot_id: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The de-identified facts one call's cards were decided on (made by `cds.hooks.replay`)."""

    snapshot_id: str
    as_of: dt.date
    facts: str  # JSON


@dataclass(frozen=True)
class FeedbackRecord:
    card_uuid: str
    outcome: str
    accepted_suggestions: list[str]
    override_system: str | None
    override_code: str | None
    override_comment: str | None
    outcome_timestamp: str


def engine_url(url: str) -> str:
    """DATABASE_URL as SQLAlchemy takes it: `postgresql://` means psycopg 3 (the driver the package installs)."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


class Store:
    """Thread-safe (SQLAlchemy pools connections); create once per process."""

    def __init__(self, url: str, patient_key: bytes) -> None:
        """Connect and create the tables; StoreUnavailable (one line, password masked) when that cannot be done."""
        shown, url = masked(url), engine_url(url)
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # hide_parameters: a failing statement is logged without its values (clinician comments, jti, codes)
            # pre-ping finds a dropped PostgreSQL connection before a call uses it; a SQLite file cannot drop one
            self.engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"), hide_parameters=True)
        except (sa.exc.ArgumentError, ImportError, ValueError):
            raise StoreUnavailable(f"DATABASE_URL {shown!r} is not a database URL (sqlite:///path or "
                                   "postgresql://user:password@host/db)") from None
        except OSError as exc:
            raise StoreUnavailable(f"DATABASE_URL {shown!r}: cannot create its folder ({exc.strerror}); check "
                                   "HIPFLEX_DATA_DIR") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.patient_key = patient_key
        self._inline: Any = None  # the connection of record_calls_inline, made on first use
        self._inline_lock = threading.Lock()
        self._inline_statements: dict[str, tuple[str, list[tuple[str, Any]]]] = {}
        try:
            metadata.create_all(self.engine)
            self._add_missing_columns()
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            if self.engine.dialect.name == "sqlite":
                raise StoreUnavailable(f"DATABASE_URL {shown!r}: cannot open or write the SQLite file; check "
                                       "HIPFLEX_DATA_DIR is writable") from None
            reason = str(exc.orig).strip().splitlines()[0][:160] if exc.orig else "no connection"
            raise StoreUnavailable(f"DATABASE_URL {shown!r}: the database cannot be reached ({masked(reason)})",
                                   unreachable=True) from None

    def _add_missing_columns(self) -> None:
        """The one schema change so far: columns added to a table an older version created."""
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as conn:
            for table, columns in ADDED_COLUMNS.items():
                present = {c["name"] for c in inspector.get_columns(table)}
                for column in (c for c in columns if c not in present):
                    conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} TEXT"))

    def close(self) -> None:
        with self._inline_lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None
        self.engine.dispose()

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def patient_hash(self, patient_id: str) -> str:
        return patient_digest(self.patient_key, patient_id)

    def record_cards(self, cards: list[IssuedCard], patient_id: str, snapshot: Snapshot | None = None) -> None:
        """The cards of one call, and the snapshot they were decided on, in one transaction."""
        self.record_calls([(cards, patient_id, snapshot)])

    def record_calls(self, calls: list[tuple[list[IssuedCard], str, Snapshot | None]]) -> None:
        """The cards and snapshots of several calls in one transaction (the group commit's batch)."""
        rows, kept = self._rows(calls, dt.datetime.now(dt.UTC))
        if rows:
            with self.engine.begin() as conn:
                if kept:
                    conn.execute(snapshots.insert(), kept)
                conn.execute(issued_cards.insert(), rows)

    @property
    def writes_inline(self) -> bool:
        """Whether `record_calls_inline` can be tried: a SQLite file (a local append); never a network database."""
        return self.engine.dialect.name == "sqlite"

    def record_calls_inline(self, calls: list[tuple[list[IssuedCard], str, Snapshot | None]]) -> bool:
        """The same transaction as `record_calls`, on the caller's thread (the event loop), through one connection
        of its own that never waits: False, with nothing written, when another connection holds the write lock
        (its busy timeout is 0), when another thread is using it, or on any error in the transaction; the caller then
        hands the calls to `record_calls` in its writer thread, which waits, retries call by call and raises.
        That connection never checkpoints the WAL either (a checkpoint copies pages and syncs the file);
        `checkpoint` does it, from the writer thread."""
        if not self._inline_lock.acquire(blocking=False):
            return False
        try:
            connection = self._inline_connection()
            rows, kept = self._rows(calls, dt.datetime.now(dt.UTC))
            try:
                cursor = connection.cursor()
                if kept:
                    cursor.executemany(*self._inline_insert(snapshots, kept))
                if rows:
                    cursor.executemany(*self._inline_insert(issued_cards, rows))
                connection.commit()
                return True
            except Exception:  # noqa: BLE001 -- a lock, a bad row or a bad value: the thread's turn, nothing kept
                connection.rollback()  # or the next batch's commit would keep this one's first rows
                return False
        finally:
            self._inline_lock.release()

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the SQLite file without waiting for anyone (PASSIVE)."""
        if self.writes_inline:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _inline_connection(self) -> Any:
        if self._inline is None:
            pooled = self.engine.raw_connection()
            self._inline = pooled.dbapi_connection
            pooled.detach()  # its own for the process: never handed to another thread by the pool
            cursor = self._inline.cursor()
            cursor.execute("PRAGMA busy_timeout = 0")
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.close()
        return self._inline

    def _inline_insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
        """The driver's own statement and parameter tuples for `rows`, with each column's value converted as
        SQLAlchemy converts it (dates and times as the SQLite dialect stores them), compiled once per table."""
        if table.name not in self._inline_statements:
            compiled = table.insert().compile(dialect=self.engine.dialect)
            order = list(compiled.positiontup or [])
            processors = [table.c[name].type.dialect_impl(self.engine.dialect).bind_processor(self.engine.dialect)
                          for name in order]
            self._inline_statements[table.name] = (str(compiled), list(zip(order, processors, strict=True)))
        statement, columns = self._inline_statements[table.name]
        return statement, [tuple(row[name] if convert is None else convert(row[name]) for name, convert in columns)
                           for row in rows]

    def _rows(self, calls: list[tuple[list[IssuedCard], str, Snapshot | None]],
              now: dt.datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows, kept = [], []
        for cards, patient_id, snapshot in calls:
            if not cards:
                continue
            digest = self.patient_hash(patient_id)
            rows += [{"card_uuid": c.card_uuid, "service_id": c.service_id, "hook_instance": c.hook_instance,
                      "card_kind": c.card_kind, "side": c.side, "rules": CARD_RULES.dump_json(c.rules).decode(),
                      "suggestions": json.dumps(c.suggestions), "patient_hash": digest, "issued_at": now,
                      "issuer": c.issuer, "tenant": c.tenant, "origin": PREVIEW if c.preview else None,
                      "release_version": c.release_version, "release_hash": c.release_hash,
                      "snapshot_id": c.snapshot_id} for c in cards]
            if snapshot is not None:
                kept.append({"snapshot_id": snapshot.snapshot_id, "as_of": snapshot.as_of, "facts": snapshot.facts,
                             "created_at": now})
        return rows, kept

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(snapshots).where(snapshots.c.snapshot_id == snapshot_id)).mappings().first()
        return Snapshot(row["snapshot_id"], row["as_of"], row["facts"]) if row else None

    def delete_snapshots_before(self, moment: dt.datetime) -> int:
        """Expired snapshots go (the cards stay, and say their snapshot has expired); how many went."""
        with self.engine.begin() as conn:
            return int(conn.execute(snapshots.delete().where(snapshots.c.created_at < moment)).rowcount or 0)

    def issued(self, card_uuid: str) -> IssuedCard | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(issued_cards).where(issued_cards.c.card_uuid == card_uuid)).mappings().first()
        if row is None:
            return None
        return IssuedCard(row["card_uuid"], row["service_id"], row["hook_instance"], row["card_kind"], row["side"],
                          CARD_RULES.validate_json(row["rules"]), json.loads(row["suggestions"]), row["issuer"],
                          row["tenant"], row["origin"] == PREVIEW, row["release_version"], row["release_hash"],
                          row["snapshot_id"])

    def record_feedback(self, record: FeedbackRecord) -> bool:
        """Store one feedback item; False when the same item was stored before (clients may resend)."""
        row = {**record.__dict__, "accepted_suggestions": json.dumps(sorted(record.accepted_suggestions)),
               "received_at": dt.datetime.now(dt.UTC)}
        try:
            with self.engine.begin() as conn:
                conn.execute(feedback.insert(), [row])
        except IntegrityError:
            return False
        return True

    def feedback_for(self, card_uuid: str) -> list[FeedbackRecord]:
        query = sa.select(feedback).where(feedback.c.card_uuid == card_uuid).order_by(feedback.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [FeedbackRecord(r["card_uuid"], r["outcome"], json.loads(r["accepted_suggestions"]),
                               r["override_system"], r["override_code"], r["override_comment"],
                               r["outcome_timestamp"]) for r in rows]

    def first_use_of_token(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Remember a JWT id until it expires; False when it was already used (a replay)."""
        now = int(dt.datetime.now(dt.UTC).timestamp())
        try:
            with self.engine.begin() as conn:
                conn.execute(seen_tokens.delete().where(seen_tokens.c.expires_at < now))
                conn.execute(seen_tokens.insert(), [{"issuer": issuer, "jti": jti, "expires_at": expires_at}])
        except IntegrityError:
            return False
        return True


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    """WAL with normal sync: a commit per hook call no longer waits for an fsync, and readers never block the
    writer. A power cut may lose the last commits, never corrupt the file."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def patient_digest(key: bytes, patient_id: str) -> str:
    """A patient id as stored and reported: a keyed hash (HMAC-SHA256), never the id."""
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()


def patient_key(explicit: str | None, key_file: Path) -> bytes:
    """The HMAC key for patient hashes: from settings, else a random key kept beside the data (0600)."""
    if explicit:
        return explicit.encode()
    try:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_hex(32))
        return key_file.read_text().strip().encode()
    except OSError as exc:
        raise StoreUnavailable(f"the patient-hash key file {key_file} cannot be created or read ({exc.strerror}); "
                               "check HIPFLEX_DATA_DIR or set HIPFLEX_PATIENT_HASH_KEY") from None


class StoreUnavailable(HipflexError):
    """The store (or its key file) cannot be used; `unreachable`: a database server that does not answer."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
