"""The loaded service behind the HTTP routes: pipeline, store, authenticator, FHIR reader, hook call, metrics.

Built once per process by `create_app` (content files, issuers and the store load now, so a mistake stops
start-up); the routers only read and call it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cds.clinical.pipeline import Pipeline
from cds.hooks.auth import Authenticator, VerifiedClient, load_issuers
from cds.hooks.call import HookCalls, OneAtATime
from cds.hooks.discovery import Service, services
from cds.hooks.errors import UnknownService
from cds.hooks.feedback import FeedbackStored, parse_feedback, store_feedback
from cds.hooks.fhirclient import FhirReader
from cds.hooks.liverelease import LiveReleases
from cds.hooks.request import HookRequest, parse_request
from cds.hooks.store import Store, patient_key
from cds.settings import Settings
from cds.web.errors import Busy
from cds.web.observability import Metrics

INLINE_PARSE_BYTES = 64_000


class CdsService:
    """The loaded pipeline, store, authenticator and hook calls behind the HTTP routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.store.url, patient_key(settings.store.patient_hash_key, settings.store.key_file))
        live = LiveReleases(settings, self.store)
        live.follow()
        self.services_by_id = {s.id: s for s in services(live.pipeline.terminology)}
        issuers = load_issuers(settings.auth.issuers_file) if settings.auth.issuers_file else []
        self.auth = Authenticator(issuers, self.store.first_use_of_token,
                                  max_lifetime_seconds=settings.auth.jwt_max_lifetime_seconds) if issuers else None
        self.reader = FhirReader(settings.fhir)
        self.in_flight = 0  # hook calls being answered; only touched on the event loop
        self.health_pool = ThreadPoolExecutor(1, thread_name_prefix="health")  # never queues behind hook calls
        self.calls = HookCalls(live.pipeline, self.reader, self.store, live=live)
        self._parsing = OneAtATime()
        self.metrics = Metrics(engine=live.pipeline.engine, cache=live.pipeline.cache)
        if self.calls.shadows is not None:
            self.calls.shadows.on_decided = self.metrics.shadow_decided
            self.calls.shadows.on_skipped = lambda reason: self.metrics.shadow_skipped.labels(reason).inc()

    def service(self, service_id: str) -> Service:
        service = self.services_by_id.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        return service

    def authenticate(self, request: Request, path: str) -> VerifiedClient | None:
        """The verified client, or None when authentication is off (loopback development only)."""
        if self.auth is None:
            return None
        audience = (self.settings.auth.public_url or "").rstrip("/") + path
        return self.auth.verify(request.headers.get("authorization"), audience)

    async def answer(self, service: Service, raw: bytes, client: VerifiedClient | None) -> Response:
        """One hook call from its raw body: the response, encoded once; counts the cards by rule. Beyond
        max_calls_in_flight the call is refused (503) before any work, so a flood cannot queue without end."""
        if self.in_flight >= self.settings.limits.max_calls_in_flight:
            raise Busy(f"more than {self.settings.limits.max_calls_in_flight} hook calls in flight; try again")
        self.in_flight += 1
        try:
            answer = await self.calls.call_async(service, await self._parsed(raw, service.hook), client=client)
        finally:
            self.in_flight -= 1
        for card in answer.issued:
            self.metrics.cards.labels(card.card_kind).inc()
            for rule in card.rules:
                self.metrics.card_rules.labels(card.card_kind, rule.label).inc()
        return Response(answer.response.json(), media_type="application/json")

    async def _parsed(self, raw: bytes, hook: str) -> HookRequest:
        """A typical visit's body parses in ~0.1 ms, on the event loop (not worth a thread hop). A larger one parses
        in a thread, one at a time: a burst of large bodies parsing together would take the GIL from the event
        loop, and every ordinary call would wait behind all of them instead of behind one."""
        if len(raw) <= INLINE_PARSE_BYTES:
            return parse_request(raw, hook)
        async with self._parsing():
            return await run_in_threadpool(parse_request, raw, hook)

    async def feedback(self, service: Service, raw: bytes, client: VerifiedClient | None) -> dict[str, Any]:
        return await run_in_threadpool(self._feedback, service, raw, client)

    def _feedback(self, service: Service, raw: bytes, client: VerifiedClient | None) -> dict[str, Any]:
        request = parse_feedback(raw, self.settings.limits.max_feedback_items)
        stored = store_feedback(request, service.id, self.store, client)
        for item, new in zip(request.feedback, stored, strict=True):
            if new:
                issued = self.store.issued(item.card.lower())
                self.metrics.feedback.labels(issued.card_kind if issued else "unknown", item.outcome).inc()
        return FeedbackStored(stored=sum(stored), duplicates=len(stored) - sum(stored)).model_dump()

    @property
    def pipeline(self) -> Pipeline:
        """The active release's pipeline, as the hook calls use it."""
        return self.calls.pipeline

    def health(self) -> tuple[int, dict[str, Any]]:
        """Ready (200) while the store answers; 'degraded' (still 200: other EHRs are served) while some FHIR
        server fills its pool or keeps running out of time; 503 without the store."""
        store_ok = self.store.reachable()
        fhir = self.reader.health()
        status = "unavailable" if not store_ok else fhir["status"]
        body = {"status": status, "rules": len(self.pipeline.ruleset.source.rules),
                "compiled_rules": len(self.pipeline.ruleset.compiled), "ruleset": self.pipeline.ruleset.source.version,
                "release": self.calls.live.version,
                "store": "ok" if store_ok else "unreachable", "fhir_client": fhir,
                "authentication": "on" if self.auth else "off"}
        return (200 if store_ok else 503), body
