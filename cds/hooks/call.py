"""One CDS Hooks call, with no HTTP in it: gather the data, decide, record the issued cards.

The web app, the review page, the CLI's `evaluate` and the Gherkin steps all call `HookCalls.call`,
so every front door gives the same answer for the same data (order-select included). Problems
are raised as domain errors (`cds.hooks.errors`); the web layer alone turns them into statuses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cds.clinical.cards import ExplainedCard
from cds.clinical.context import Context
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.response import CDSResponse
from cds.content.facts import DataIssue
from cds.content.release import ReleaseRef
from cds.hooks.auth import VerifiedClient
from cds.hooks.discovery import Service
from cds.hooks.errors import InvalidRequest, LargeCallsQueued
from cds.hooks.fhirclient import FhirReader
from cds.hooks.groupcommit import CardWriter
from cds.hooks.liverelease import LiveReleases
from cds.hooks.prefetch import gather
from cds.hooks.replay import snapshot_of
from cds.hooks.request import HookRequest, selected_knee_physiotherapy
from cds.hooks.shadow import ShadowRunner
from cds.hooks.store import CardRule, IssuedCard, Snapshot, Store
from cds.hooks.terminologyserver import TerminologyServer

NO_ORDER_SELECTED = "No cards: order-select answers only when a physiotherapy order for the knee is selected."


@dataclass(frozen=True)
class Answer:
    """The response of one call, and the decision behind it (None when the hook had nothing to decide)."""

    response: CDSResponse
    decision: Decision | None
    issued: list[IssuedCard] = field(default_factory=list)


def issued_cards(cards: list[ExplainedCard], service_id: str, hook_instance: str,
                 client: VerifiedClient | None = None, preview: bool = False, *, release: ReleaseRef | None = None,
                 snapshot_id: str | None = None) -> list[IssuedCard]:
    """What the store keeps of each card: ids, kind, side, the rule versions behind it, the release it came from
    and the snapshot it was decided on."""
    out = []
    for card, explanation in ((c.card, c.explanation) for c in cards):
        out.append(IssuedCard(card_uuid=card.uuid, service_id=service_id, hook_instance=hook_instance.lower(),
                              card_kind=explanation.recommendation.card, side=explanation.recommendation.side,
                              rules=[CardRule(id=r.id, version=r.version, recommends=r.recommends)
                                     for r in explanation.rules],
                              suggestions=[s.uuid for s in card.suggestions or []],
                              issuer=client.issuer if client else None, tenant=client.tenant if client else None,
                              preview=preview, release_version=release.version if release else None,
                              release_hash=release.content_hash if release else None, snapshot_id=snapshot_id))
    return out


class OneAtATime:
    """An asyncio lock for each event loop: a lock binds to the loop it is first awaited on, and the CLI and the
    scenarios run one loop per call while the service runs one for its life."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def __call__(self) -> asyncio.Lock:
        return self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


class HookCalls:
    """Runs the hook calls of this process: the loaded pipeline with its data source and store (one instance per
    process; `VerifiedClient` is who made a call)."""

    def __init__(self, pipeline: Pipeline, reader: FhirReader, store: Store | None = None,
                 *, today: Callable[[], dt.date] | None = None, live: LiveReleases | None = None) -> None:
        self.reader, self.store = reader, store
        self.live = live or LiveReleases(pipeline.settings, store, pipeline)
        self.shadows = ShadowRunner(store, pipeline.settings.releases.shadow_max_waiting) if store else None
        settings = pipeline.settings
        self.terminology = TerminologyServer(settings.terminology.server, pipeline.terminology,
                                             settings.terminology.deadline_seconds) \
            if settings.terminology.server else None
        self.today = today or (lambda: pipeline.settings.as_of or dt.datetime.now(dt.UTC).date())
        self.writer = CardWriter(store, inline=True) if store is not None else None  # inline: see groupcommit
        # An ordinary call is decided on the event loop itself: it is pure CPU under the GIL (about 2 ms for a
        # visit's data), and a worker thread only added the hop and the GIL hand-overs of every call (measured
        # with 8 connections: 172 req/s and a p99 of 1 s in a thread, 229 req/s and 65 ms inline). Large calls
        # (by resources) go to a thread, one at a time on this lock, and take turns before it, so at most one of
        # them is ever being decided while ordinary calls go on; a few waiting is fine, more are refused (503).
        self.deciding = threading.Lock()
        self._large_turns = OneAtATime()
        self.large_waiting = 0

    @property
    def pipeline(self) -> Pipeline:
        """The active release's pipeline (it may change between calls, never within one)."""
        return self.live.pipeline

    def call(self, service: Service, request: HookRequest, today: dt.date | None = None) -> Answer:
        """One call from synchronous code (CLI, review page, scenarios): prefetch, or servers listed in settings."""
        return asyncio.run(self.call_async(service, request, today))

    async def call_async(self, service: Service, request: HookRequest, today: dt.date | None = None,
                         client: VerifiedClient | None = None, record: bool = True, preview: bool = False) -> Answer:
        """Gather (concurrently, within one deadline, only from the FHIR servers the caller's issuer lists, else
        HIPFLEX_FHIR_SERVERS), decide (a large call in a worker thread), remember the cards with who asked, committed
        before the answer is returned (unless `record` is false: a preview nobody can give feedback on; `preview`:
        kept, for feedback, but counted nowhere). `today` replays a date (review page, CLI, scenarios)."""
        allowed = (client.fhir_servers if client is not None else ()) or tuple(self.pipeline.settings.fhir.servers)
        drafts = []
        if service.hook == "order-select":
            drafts = selected_knee_physiotherapy(request, self.pipeline.terminology)
            if not drafts:
                return Answer(CDSResponse(cards=[]), None)
        gathered = await gather(request, service.prefetch, self.reader, allowed)
        limit = self.pipeline.settings.limits.max_resources
        if len(gathered.resources) > limit:
            raise InvalidRequest(f"the call carries {len(gathered.resources)} FHIR resources; at most {limit} are "
                                 "evaluated (HIPFLEX_MAX_RESOURCES)", "prefetch", error="too-many-resources")
        memberships: frozenset[tuple[str, str, str]] = frozenset()
        if self.terminology is not None:
            answered = await self.terminology.memberships(gathered.resources)
            memberships = answered.memberships
            gathered.issues.extend([answered.issue] if answered.issue else [])
        context = Context(today=today or self.today(), patient_id=request.patient_id, user_id=request.user_id,
                          lookback_days=self.pipeline.settings.lookback_days,
                          selected_orders=frozenset(str(d.get("id")) for d in drafts), memberships=memberships)
        def decide() -> _Decided:
            return self._decide(service, request, gathered.resources + drafts, context, gathered.issues, client,
                                preview)

        def decide_large() -> _Decided:
            with self.deciding:
                return decide()

        if len(gathered.resources) <= self.pipeline.settings.limits.large_call_resources:
            answer, snapshot = decide()
        else:
            answer, snapshot = await self._in_turn(lambda: asyncio.to_thread(decide_large))
        if self.writer is not None and record and answer.issued:
            await self.writer.record(answer.issued, request.patient_id, snapshot)
        return answer

    async def _in_turn(self, decide: Callable[[], Awaitable[_Decided]]) -> _Decided:
        if self.large_waiting >= self.pipeline.settings.limits.max_large_calls_waiting + 1:
            raise LargeCallsQueued(f"{self.large_waiting} calls carrying more than "
                                   f"{self.pipeline.settings.limits.large_call_resources} resources are already being "
                                   "answered; try again (HIPFLEX_MAX_LARGE_CALLS_WAITING)")
        self.large_waiting += 1
        try:
            async with self._large_turns():
                return await decide()
        finally:
            self.large_waiting -= 1

    def _decide(self, service: Service, request: HookRequest, resources: list[dict[str, Any]], context: Context,
                unavailable: list[DataIssue], client: VerifiedClient | None, preview: bool) -> _Decided:
        """The answer, and the snapshot to keep with its cards (None when nothing is kept)."""
        pipeline, shadow = self.live.pipeline, self.live.shadow
        decision = pipeline.decide(resources, context, unavailable)
        keep = bool(self.store is not None and decision.cards
                    and pipeline.settings.store.snapshot_retention_days > 0)  # something to replay, and kept
        snapshot = snapshot_of(decision.validated.facts, context.today) if keep else None
        issued = issued_cards(decision.cards, service.id, request.hookInstance, client, preview,
                              release=pipeline.release, snapshot_id=snapshot.snapshot_id if snapshot else None)
        if shadow is not None and self.shadows is not None and not preview:
            self.shadows.submit(shadow, resources, context, list(unavailable), decision.cards, request.patient_id)
        response = decision.response()
        return Answer(client.profile.fit(response) if client else response, decision, issued), snapshot

    def close(self) -> None:
        """Write the cards still waiting for their commit."""
        if self.writer is not None:
            self.writer.close()


_Decided = tuple[Answer, Snapshot | None]
