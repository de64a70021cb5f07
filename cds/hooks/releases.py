"""Releases in the data store: published whole (every worker and instance decides with the same files), made
active or shadow from a moment on (now, or a date), and the history of every switch kept, so a rollback is one
more switch and `release list` shows what was live when.

Status, CRMI-style: a published release is `draft` until it is made active, `active` while it is the one the
service decides with, `retired` once another took over (it can be made active again: a rollback).
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from cds.content.release import Release, files_json, release_from_json, version_key
from cds.errors import HipflexError
from cds.hooks.store import Store, release_switches, releases
from cds.settings import Settings

ROLES = ("active", "shadow")


class ReleaseRefused(HipflexError):
    """A release cannot be published, made active or shadow as asked; the message says why."""


@dataclass(frozen=True)
class PublishedRelease:
    version: str
    content_hash: str
    published_at: dt.datetime
    status: str  # draft | active | retired (and shadow, while it is the shadow release)
    changes: list[str]
    approved_by: str


def publish(store: Store, release: Release) -> bool:
    """Record a release; False when exactly this release was published before. A version already published with
    other content, or content already published under another version, is refused."""
    with store.engine.begin() as conn:
        same_version = conn.execute(sa.select(releases.c.content_hash).where(releases.c.version == release.version)
                                    ).scalar_one_or_none()
        if same_version == release.content_hash:
            return False
        if same_version is not None:
            raise ReleaseRefused(f"release {release.version} is already published with other content; give the "
                                 "candidate a new version in its release.yaml")
        other = conn.execute(sa.select(releases.c.version).where(releases.c.content_hash == release.content_hash)
                             ).scalar_one_or_none()
        if other is not None:
            raise ReleaseRefused(f"this content is already published as release {other}")
        conn.execute(releases.insert(), [{"version": release.version, "content_hash": release.content_hash,
                                          "manifest": release.manifest.model_dump_json(), "files": files_json(release),
                                          "published_at": dt.datetime.now(dt.UTC)}])
    return True


def load(store: Store, version: str) -> Release:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(releases.c.manifest, releases.c.files).where(releases.c.version == version)
                           ).first()
    if row is None:
        raise ReleaseRefused(f"no published release {version}; published: {', '.join(versions(store)) or 'none'}")
    return release_from_json(row.manifest, row.files)


def versions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        found = [str(v) for v in conn.execute(sa.select(releases.c.version)).scalars()]
    return sorted(found, key=version_key)


def switch(store: Store, role: str, version: str | None, at: dt.datetime | None = None) -> dt.datetime:
    """Make `version` the active (or shadow; None: no shadow) release from `at` on (default now); when it
    takes effect. Activating the shadow release ends the shadow: it has nothing left to be compared with."""
    if role not in ROLES:
        raise ReleaseRefused(f"a release is made active or shadow, not {role!r}")
    if version is not None and version not in versions(store):
        raise ReleaseRefused(f"no published release {version}; publish it first (published: "
                             f"{', '.join(versions(store)) or 'none'})")
    if role == "active" and version is None:
        raise ReleaseRefused("the service always has an active release; activate another one instead")
    now = dt.datetime.now(dt.UTC)
    effective = at or now
    rows = [{"role": role, "version": version, "effective_at": effective, "recorded_at": now}]
    if role == "active" and version == current(store, "shadow", effective):
        rows.append({"role": "shadow", "version": None, "effective_at": effective, "recorded_at": now})  # done
    with store.engine.begin() as conn:
        conn.execute(release_switches.insert(), rows)
    return effective


def current(store: Store, role: str, at: dt.datetime | None = None) -> str | None:
    """The release in `role` at `at` (default now): the latest switch that has taken effect."""
    moment = at or dt.datetime.now(dt.UTC)
    query = (sa.select(release_switches.c.version).where(release_switches.c.role == role,
                                                         release_switches.c.effective_at <= moment)
             .order_by(release_switches.c.effective_at.desc(), release_switches.c.id.desc()).limit(1))
    with store.engine.connect() as conn:
        return conn.execute(query).scalar_one_or_none()


def listing(store: Store) -> list[PublishedRelease]:
    """Every published release with its status now."""
    active, shadow = current(store, "active"), current(store, "shadow")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(releases.c.version, releases.c.content_hash, releases.c.published_at,
                                      releases.c.manifest)).all()
        were_active = set(conn.execute(sa.select(release_switches.c.version)
                                       .where(release_switches.c.role == "active")).scalars())
    out = []
    for version, content_hash, published_at, manifest in rows:
        note = release_from_json(manifest, "{}").manifest.note
        status = ("active" if version == active else "shadow" if version == shadow
                  else "retired" if version in were_active else "draft")
        out.append(PublishedRelease(version, content_hash, published_at, status, note.changes, note.approved_by))
    return sorted(out, key=lambda r: version_key(r.version))


def materialise(store: Store, version: str, settings: Settings) -> Path:
    """The release's files in HIPFLEX_DATA_DIR/releases/<content hash>/ (written once; a content folder the
    pipeline loads)."""
    folder = settings.store.data_dir / "releases"
    release = load(store, version)
    target = folder / release.content_hash
    if not (target / "release.yaml").is_file():  # workers may race here: each writes its own copy, one wins
        partial = release.write(folder / f".{release.content_hash}.{uuid.uuid4().hex}")
        try:
            partial.replace(target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another worker's copy is in place
    return target
