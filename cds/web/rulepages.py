"""The rule pages: `/rules` (the catalog), `/rules/{id}` and the clinician's `/why/{card}`, for people (HTML) and
machines (JSON).

A card's `source.url` and its "Why this suggestion" link point here, so the pages are served with
authentication on and off; they hold only the content of `rules/`, never patient data. JSON is
answered to `Accept: application/json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cds.clinical.pipeline import Pipeline
from cds.content.catalog import RulePage, rule_pages, scenario_coverage
from cds.content.whypage import why_page
from cds.hooks.errors import UnknownRule
from cds.web.html import HEADERS, templates


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def rule_router(current: Callable[[], Pipeline], coverage_report: Path | None, *, review_pages: bool) -> APIRouter:
    """`current` gives the active release's pipeline: the pages follow a release switch."""
    router = APIRouter(tags=["rules"])

    def pages() -> tuple[list[RulePage], dict[str, str]]:
        pipeline = current()
        ruleset = {"id": pipeline.ruleset.source.ruleset, "version": pipeline.ruleset.source.version}
        return rule_pages(pipeline.ruleset, pipeline.terminology, scenario_coverage(coverage_report)), ruleset

    @router.get("/rules", summary="The rule catalog (HTML, or JSON on Accept)")
    def catalog(request: Request) -> Response:
        found, ruleset = pages()
        if wants_json(request):
            return JSONResponse({"ruleset": ruleset, "rules": [p.model_dump() for p in found]})
        html = templates.get_template("rule_catalog.html").render(pages=found, ruleset=ruleset,
                                                                 review_pages=review_pages)
        return HTMLResponse(html, headers=HEADERS)

    @router.get("/rules/{rule_id}", summary="One rule (HTML, or JSON on Accept)")
    def rule(rule_id: str, request: Request) -> Response:
        found, ruleset = pages()
        page = next((p for p in found if p.id == rule_id), None)
        if page is None:
            raise UnknownRule(f"no rule with id {rule_id!r}; the catalog is at /rules")
        if wants_json(request):
            return JSONResponse(page.model_dump() | {"ruleset": ruleset})
        html = templates.get_template("rule.html").render(page=page, ruleset=ruleset, review_pages=review_pages)
        return HTMLResponse(html, headers=HEADERS)

    @router.get("/why/{card}", summary="Why this suggestion: a card kind in clinical words (HTML, or JSON on Accept)")
    def why(card: str, request: Request) -> Response:
        pipeline = current()
        if card not in pipeline.cards.texts.cards:
            raise UnknownRule(f"no card kind {card!r}; the cards are {', '.join(pipeline.cards.texts.cards)}")
        page = why_page(card, pipeline.cards.texts, pipeline.ruleset, pipeline.terminology)
        if wants_json(request):
            return JSONResponse(page.model_dump())
        return HTMLResponse(templates.get_template("why.html").render(page=page), headers=HEADERS)

    return router
