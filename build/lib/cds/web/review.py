"""The clinician review page: what the service would show, and how clinicians answered it.

`/review` runs an example patient or a pasted/uploaded Bundle through the same call path as an
EHR (so its cards are recorded and its Accept/Override buttons send real feedback), and renders
the cards the way an EHR shows them. `/review/rules` lists the rule catalog with the scenarios
that cover each rule and, from the store, how often it stood behind a card, was accepted and was
overridden. Everything from a bundle is rendered as escaped text; markdown is rendered with raw
HTML off; and a Content-Security-Policy allows only this service's own script and styles.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import ValidationError

from cds.clinical.explanation import Explanation, rule_label
from cds.clinical.validate import bundle_resources
from cds.hooks.call import HookCaller
from cds.hooks.discovery import Service, service_id
from cds.hooks.errors import HookError
from cds.hooks.prefetch import request_for
from cds.hooks.request import HOOKS, HookRequest, first_error
from cds.hooks.store import Store, rule_use
from cds.web.html import HEADERS, templates

INDICATORS = {"info": ("\u2139", "Info"), "warning": ("⚠", "Warning"), "critical": ("⛔", "Critical")}

markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


class ReviewInputError(Exception):
    """A pasted or uploaded bundle that cannot be reviewed; the message is shown on the page."""


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    as_of: dt.date | None


def examples(folder: Path) -> list[Example]:
    found = []
    for path in sorted(folder.glob("*.json")):
        expected = yaml.safe_load(path.with_suffix(".expected.yaml").read_text())
        found.append(Example(path.stem, str(expected.get("description", "")),
                             dt.date.fromisoformat(str(expected["as_of"])) if expected.get("as_of") else None))
    return found


def read_bundle(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReviewInputError(f"The bundle is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ReviewInputError("Paste a FHIR R4 Bundle (resourceType 'Bundle') holding the Patient and their data.")
    return data


def hook_request(resources: list[dict[str, Any]], hook: str, prefetch: dict[str, str]) -> HookRequest:
    """The request an EHR would send for these resources, checked like one."""
    try:
        return HookRequest.model_validate(request_for(resources, hook, prefetch, "Practitioner/review"))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        reason = ": ".join(first_error(exc)) if isinstance(exc, ValidationError) else str(exc)
        raise ReviewInputError(f"The bundle cannot be sent as a request: {reason}.") from None


def resource_rows(resources: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the bundle holds, as plain text for the reviewer: type/id, code, value, note."""
    rows = []
    for r in resources:
        code: dict[str, Any] = r["code"] if isinstance(r.get("code"), dict) else {}
        codings = [c for c in code.get("coding") or [] if isinstance(c, dict)]
        label = code.get("text") or ", ".join(str(c.get("display") or c.get("code")) for c in codings)
        value = next((r[k] for k in r if k.startswith("value")), "")
        notes = [n.get("text", "") for n in r.get("note") or [] if isinstance(n, dict)]
        rows.append({"resource": f"{r.get('resourceType')}/{r.get('id')}", "code": str(label or ""),
                     "value": json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value),
                     "note": " ".join(str(n) for n in notes)})
    return rows


def card_view(card: dict[str, Any], service: str) -> dict[str, Any]:
    icon, label = INDICATORS[card["indicator"]]
    explanation = Explanation.of(card)
    links = [link for link in card.get("links", []) if str(link.get("url", "")).startswith(("https://", "http://"))]
    source = card["source"]
    return {"card": card, "service": service, "icon": icon, "label": label, "explanation": explanation,
            "detail": Markup(markdown.render(card.get("detail", ""))),  # safe: markdown-it escapes raw HTML here
            "links": links, "source_url": source.get("url") if str(source.get("url", "")).startswith("http") else None}


class Review:
    """The two pages; calls take the EHR's path (the same hook caller and store), so feedback joins up."""

    def __init__(self, caller: HookCaller, catalog: dict[str, Service], store: Store) -> None:
        self.caller, self.catalog, self.store = caller, catalog, store
        self.settings = caller.pipeline.settings
        self.examples = examples(self.settings.examples_dir)

    def page(self, **values: Any) -> str:
        return templates.get_template("review.html").render(examples=self.examples, hooks=HOOKS, **values)

    async def run(self, bundle: dict[str, Any], hook: str, as_of: dt.date | None) -> dict[str, Any]:
        if hook not in HOOKS:
            raise ReviewInputError(f"Unknown hook {hook!r}; choose one of {', '.join(HOOKS)}.")
        service = self.catalog[service_id(hook)]
        resources = [r for r in bundle_resources(bundle) if isinstance(r, dict)]
        answer = await self.caller.call_async(service, hook_request(resources, hook, service.prefetch), today=as_of)
        decision = answer.decision
        return {"cards": [card_view(c, service.id) for c in answer.response.dump()["cards"]],
                "findings": sorted(f"{f.name.replace('-', ' ')}" + (f" ({f.side})" if f.side else "")
                                   for f in decision.evaluation.findings) if decision else [],
                "issues": decision.validated.issues if decision else [], "rows": resource_rows(resources),
                "hook": hook, "as_of": as_of}

    def rules_page(self) -> str:
        report = self.settings.coverage_report
        coverage = json.loads(report.read_text()) if report.exists() else None
        use = rule_use(self.store)
        pipeline = self.caller.pipeline
        texts = {r["code"]: r["display"] for r in pipeline.cards.texts.override_reasons}
        rows = []
        for rule in pipeline.ruleset.source.rules:
            key = rule_label(rule.id, rule.version)
            used = use.get(key)
            reasons = [(texts.get(code, code), count) for code, count in used.reasons.most_common()] if used else []
            rows.append({"rule": rule, "key": key, "scenarios": (coverage or {}).get(key, []), "use": used,
                         "reasons": reasons})
        return templates.get_template("rules.html").render(rows=rows, coverage=coverage is not None)


def review_router(caller: HookCaller, catalog: dict[str, Service], store: Store) -> APIRouter:
    review = Review(caller, catalog, store)
    router = APIRouter(prefix="/review", tags=["review"])
    headers = HEADERS

    @router.get("", response_class=HTMLResponse, summary="Review page: choose a patient")
    async def choose(example: str | None = None, hook: str = "patient-view") -> HTMLResponse:
        if example is None:
            return HTMLResponse(review.page(), headers=headers)
        return await respond(lambda: (example_bundle(review, example), example_date(review, example)), hook, None,
                             example)

    @router.post("", response_class=HTMLResponse, summary="Review page: run a pasted or uploaded bundle")
    async def run(request: Request) -> HTMLResponse:
        form = await request.form()
        upload = form.get("upload")
        text = (await upload.read()).decode("utf-8", "replace") if upload is not None and not isinstance(
            upload, str) and upload.filename else str(form.get("bundle") or "")
        example = str(form.get("example") or "")
        as_of = str(form.get("as_of") or "")
        if text.strip():
            def source() -> tuple[dict[str, Any], dt.date | None]:
                return read_bundle(text), parse_date(as_of)
        else:
            def source() -> tuple[dict[str, Any], dt.date | None]:
                return example_bundle(review, example), parse_date(as_of) or example_date(review, example)
        return await respond(source, str(form.get("hook") or "patient-view"), text, example)

    async def respond(source: Any, hook: str, pasted: str | None, example: str | None) -> HTMLResponse:
        try:
            bundle, as_of = source()
            result = await review.run(bundle, hook, as_of)
        except (ReviewInputError, HookError) as exc:
            message = exc.message if isinstance(exc, HookError) else str(exc)
            return HTMLResponse(review.page(error=message, pasted=pasted, example=example, hook=hook),
                                status_code=400, headers=headers)
        return HTMLResponse(review.page(result=result, pasted=pasted, example=example, hook=hook), headers=headers)

    @router.get("/rules", response_class=HTMLResponse, summary="Rule catalog with coverage and feedback")
    def rules() -> HTMLResponse:
        return HTMLResponse(review.rules_page(), headers=headers)

    return router


def example_bundle(review: Review, name: str) -> dict[str, Any]:
    if name not in {e.name for e in review.examples}:
        raise ReviewInputError("Choose an example patient, or paste or upload a bundle.")
    return read_bundle((review.settings.examples_dir / f"{name}.json").read_text())


def example_date(review: Review, name: str) -> dt.date | None:
    return next((e.as_of for e in review.examples if e.name == name), None)


def parse_date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        raise ReviewInputError(f"'{text}' is not a date (YYYY-MM-DD).") from None
