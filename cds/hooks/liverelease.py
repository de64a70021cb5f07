"""The pipelines a running service decides with: the active release's, and the shadow release's if there is one,
following the store. At start-up the packaged content is published as its release (1.0.0) and made active when
the store has none; a service then looks for a switch every HIPFLEX_RELEASE_CHECK_SECONDS in a background thread
(`follow`), and builds the new pipeline there while calls go on being answered with the old one.

Content given by HIPFLEX_RULES_DIR / HIPFLEX_RULE_PATH is decided with as it is (a development or analysis
setting); with a release active in the store, that is refused at start-up, so nobody wonders which one runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import sqlalchemy as sa

from cds.clinical.pipeline import Pipeline
from cds.content.release import read_release
from cds.errors import HipflexError
from cds.hooks.releases import current, materialise, publish, switch
from cds.hooks.store import Store
from cds.settings import PACKAGED, ConfigurationError, Settings

log = logging.getLogger("hipflex_cds.releases")


def uses_packaged_content(settings: Settings) -> bool:
    return settings.content.rules_dir == PACKAGED / "rules" and settings.content.rule_path is None


class LiveReleases:
    """The active (and shadow) pipeline of this process; `refresh_if_due` is cheap and never blocks a call."""

    def __init__(self, settings: Settings, store: Store | None, pipeline: Pipeline | None = None) -> None:
        self.settings, self.store = settings, store
        self._built: dict[str, Pipeline] = {}
        self.shadow: Pipeline | None = None
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self.pipeline = pipeline or self._start()

    def _start(self) -> Pipeline:
        if self.store is None:
            return Pipeline(self.settings)
        active = current(self.store, "active")
        if not uses_packaged_content(self.settings):
            if active is not None:
                raise ConfigurationError(f"HIPFLEX_RULES_DIR or HIPFLEX_RULE_PATH is set, and release {active} is "
                                         "active in the store: unset them to use the store's releases, or use "
                                         "another DATABASE_URL for this content")
            return Pipeline(self.settings)
        if active is None:
            packaged = read_release(self.settings.content.rules_dir)
            publish(self.store, packaged)
            switch(self.store, "active", packaged.version)
            active = packaged.version
        pipeline = self._pipeline(active)
        shadow = current(self.store, "shadow")
        self.shadow = self._pipeline(shadow) if shadow else None
        return pipeline

    def _pipeline(self, version: str) -> Pipeline:
        if version not in self._built:
            assert self.store is not None
            self._built[version] = Pipeline.for_content(self.settings, materialise(self.store, version, self.settings))
        return self._built[version]

    def follow(self) -> None:
        """Follow the store from a background thread until `stop` (only for the store's releases)."""
        if self.store is None or not uses_packaged_content(self.settings):
            return

        def loop() -> None:
            while not self._stop.wait(self.settings.releases.check_seconds):
                self.refresh()

        threading.Thread(target=loop, name="release-follow", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        """Follow the store: a new active or shadow release is built, then swapped in (a failure keeps the old)."""
        if self.store is None or not self._busy.acquire(blocking=False):
            return
        try:
            active, shadow = current(self.store, "active"), current(self.store, "shadow")
            if active is not None and active != self.version:
                self.pipeline = self._pipeline(active)
                log.info("release switched", extra={"release": active, "role": "active"})
            shadow_now = self.shadow.release.version if self.shadow and self.shadow.release else None
            if shadow != shadow_now:
                self.shadow = self._pipeline(shadow) if shadow else None
                log.info("release switched", extra={"release": shadow or "(none)", "role": "shadow"})
            self.expire_snapshots()
        except (HipflexError, sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("release refresh failed; the current release stays", extra={"error": str(exc)[:200]})
        finally:
            self._busy.release()

    def expire_snapshots(self) -> None:
        """Replay snapshots older than their retention are deleted (looked at with every refresh)."""
        if self.store is not None:
            days = self.settings.store.snapshot_retention_days
            self.store.delete_snapshots_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))

    @property
    def version(self) -> str | None:
        return self.pipeline.release.version if self.pipeline.release else None

    def pipeline_for(self, version: str | None) -> Pipeline:
        """The pipeline of a published release (replay), or the active one."""
        return self.pipeline if version is None or version == self.version else self._pipeline(version)
