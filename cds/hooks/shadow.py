"""A release in shadow: each hook call is decided again under it, after the real answer and off its path, and
where the two would differ (cards gained or lost, by kind, side and the rules behind them) is stored with the
patient hash. Bounded: one worker thread and at most `max_waiting` calls waiting; beyond that a call is not
shadowed (counted as dropped). A shadow evaluation that fails is counted and logged, and never reaches the call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cds.clinical.cards import ExplainedCard
from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.content.facts import DataIssue
from cds.content.release import is_version, version_key
from cds.hooks.store import Store, shadow_results

log = logging.getLogger("hipflex_cds.shadow")


def card_words(cards: Sequence[ExplainedCard]) -> dict[str, str]:
    """kind:side -> 'kind:side by R4 v2' (the rules that made it)."""
    out = {}
    for card in cards:
        rec = card.explanation.recommendation
        key = f"{rec.card}:{rec.side or '-'}"
        makers = ", ".join(r.label for r in card.explanation.rules if r.recommends)
        out[key] = f"{key} by {makers}" if makers else key
    return out


def _ignore(*_: object) -> None:
    """No one listening (a listener is set by the web layer's metrics)."""


class ShadowRunner:
    def __init__(self, store: Store, max_waiting: int = 32) -> None:
        self.store, self.max_waiting = store, max_waiting
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self.waiting = 0
        self.lock = threading.Lock()
        self.on_decided: Callable[[str, bool], None] = _ignore  # (release, disagreed)
        self.on_skipped: Callable[[str], None] = _ignore  # "dropped" | "failed"

    def submit(self, shadow: Pipeline, resources: list[dict[str, Any]], context: Context,
               unavailable: list[DataIssue], live: Sequence[ExplainedCard], patient_id: str) -> None:
        """Queue one call's shadow decision; returns at once (drops it when too many wait)."""
        with self.lock:
            full = self.waiting >= self.max_waiting
            self.waiting += not full
        if full:
            self.on_skipped("dropped")
            return
        self.pool.submit(self._run, shadow, resources, context, unavailable, card_words(live), patient_id)

    def _run(self, shadow: Pipeline, resources: list[dict[str, Any]], context: Context,
             unavailable: list[DataIssue], live: dict[str, str], patient_id: str) -> None:
        version = shadow.release.version if shadow.release else "(unreleased)"
        try:
            decided = card_words(shadow.decide(resources, context, unavailable).cards)
            gained = sorted(words for key, words in decided.items() if key not in live)
            lost = sorted(words for key, words in live.items() if key not in decided)
            with self.store.engine.begin() as conn:
                conn.execute(shadow_results.insert(), [{
                    "version": version, "patient_hash": self.store.patient_hash(patient_id),
                    "decided_at": dt.datetime.now(dt.UTC), "agreed": not gained and not lost,
                    "gained": json.dumps(gained), "lost": json.dumps(lost)}])
            self.on_decided(version, bool(gained or lost))
        except Exception as exc:  # noqa: BLE001 - a shadow release may fail in any way; the live answer is sent
            self.on_skipped("failed")
            log.warning("shadow evaluation failed", extra={"release": version, "error": type(exc).__name__})
        finally:
            with self.lock:
                self.waiting -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@dataclass
class ShadowSummary:
    """One shadow release as the releases page shows it."""

    version: str
    calls: int = 0
    disagreements: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)  # "gained patellar-glide:right by R4 v2" -> calls
    by_day: dict[str, tuple[int, int]] = field(default_factory=dict)  # ISO date -> (calls, disagreements)


def shadow_summaries(store: Store) -> list[ShadowSummary]:
    """Each shadow release's calls and disagreements, newest version last."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(shadow_results.c.version, shadow_results.c.decided_at,
                                      shadow_results.c.agreed, shadow_results.c.gained,
                                      shadow_results.c.lost)).all()
    found: dict[str, ShadowSummary] = {}
    for version, decided_at, agreed, gained, lost in rows:
        summary = found.setdefault(version, ShadowSummary(version))
        summary.calls += 1
        summary.disagreements += not agreed
        day = decided_at.date().isoformat()
        calls, disagreements = summary.by_day.get(day, (0, 0))
        summary.by_day[day] = (calls + 1, disagreements + (not agreed))
        for direction, items in (("gained", gained), ("lost", lost)):
            for words in json.loads(items):
                key = f"{direction} {words}"
                summary.by_rule[key] = summary.by_rule.get(key, 0) + 1
    return sorted(found.values(), key=lambda s: version_key(s.version) if is_version(s.version) else ())
