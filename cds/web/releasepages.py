"""`/review/releases` (each release's status, and for a shadow release the calls seen, the disagreement rate with
its 95 % interval and the disagreements by rule and by day, as charts) and `/review/replay/{card}` (an issued
card decided again under its own release and the active one). They hold no patient data: patients are keyed
hashes, snapshots are de-identified. Served beside the review pages (authentication off).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from cds.hooks.call import HookCalls
from cds.hooks.cardusage import wilson
from cds.hooks.releases import listing
from cds.hooks.replay import CannotReplay, Replay, replay
from cds.hooks.shadow import shadow_summaries
from cds.hooks.store import Store
from cds.web.html import HEADERS, templates


def release_router(calls: HookCalls, store: Store) -> APIRouter:
    router = APIRouter(prefix="/review", tags=["review"])

    @router.get("/releases", response_class=HTMLResponse, summary="Releases, and what a shadow release would change")
    def releases() -> HTMLResponse:
        shadows = [(s, wilson(s.disagreements, s.calls)) for s in shadow_summaries(store)]
        page = templates.get_template("releases.html").render(
            releases=listing(store), shadows=shadows, active=calls.live.version)
        return HTMLResponse(page, headers=HEADERS)

    @router.get("/replay/{card_uuid}", response_class=HTMLResponse, summary="An issued card decided again")
    async def replay_page(card_uuid: str) -> HTMLResponse:
        try:
            uuid.UUID(card_uuid)
            result = await run_in_threadpool(_replay, card_uuid)
        except (ValueError, CannotReplay) as exc:
            message = str(exc) if isinstance(exc, CannotReplay) else f"{card_uuid[:40]!r} is not a card uuid"
            return HTMLResponse(templates.get_template("replay.html").render(error=message), status_code=404,
                                headers=HEADERS)
        return HTMLResponse(templates.get_template("replay.html").render(r=result, active=calls.live.version),
                            headers=HEADERS)

    def _replay(card_uuid: str) -> Replay:
        card = store.issued(card_uuid.lower())
        own = calls.live.pipeline_for(card.release_version if card else None)
        return replay(store, card_uuid, own, calls.live.pipeline)

    return router
