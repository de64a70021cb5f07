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
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import ValidationError
from starlette.datastructures import FormData

from cds.clinical.explanation import Explanation, rule_label
from cds.clinical.fhirvalues import Reject, codings, effective, laterality, to_date, years_between
from cds.clinical.pipeline import Decision
from cds.clinical.validate import bundle_resources
from cds.content.catalog import scenario_coverage
from cds.content.examples import Example, NoSuchExample, load_examples, pick_example
from cds.content.facts import DataIssue, date_words
from cds.content.terminology import Terminology
from cds.errors import HipflexError
from cds.hooks.call import NO_ORDER_SELECTED, HookCalls
from cds.hooks.cardusage import CardUse, card_use, previews, rule_use, wilson
from cds.hooks.discovery import Service, service_id
from cds.hooks.errors import HookError
from cds.hooks.examplerequests import request_for
from cds.hooks.request import HOOKS, HookRequest, first_error
from cds.hooks.store import Store
from cds.jsonlimits import parse_json
from cds.web.guards import BodyTooLarge, CrossSite, read_body, refuse_cross_site
from cds.web.html import HEADERS, templates

INDICATORS = {"info": ("\u2139", "Info"), "warning": ("⚠", "Warning"), "critical": ("⛔", "Critical")}

markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


class ReviewInputError(HipflexError):
    """A pasted or uploaded bundle that cannot be reviewed; the message is shown on the page."""


def read_bundle(text: str) -> dict[str, Any]:
    try:
        data = parse_json(text, "the bundle", characters_only=True)
    except json.JSONDecodeError as exc:
        raise ReviewInputError(f"The bundle is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    except ValueError as exc:
        raise ReviewInputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ReviewInputError("Paste a FHIR R4 Bundle (resourceType 'Bundle') holding the Patient and their data.")
    return data


def hook_request(resources: list[dict[str, Any]], hook: str, prefetch: dict[str, str], terminology: Terminology,
                 user: str = "clinician") -> HookRequest:
    """The request an EHR would send for these resources, checked like one; the user is a practitioner or the
    patient themselves (a patient-facing app)."""
    patient = next((str(r.get("id")) for r in resources if r.get("resourceType") == "Patient"), "unknown")
    user_id = "Practitioner/review" if user == "clinician" else f"Patient/{patient}"
    try:
        return HookRequest.model_validate(request_for(resources, hook, prefetch, user_id, terminology=terminology))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        reason = ": ".join(first_error(exc)) if isinstance(exc, ValidationError) else str(exc)
        raise ReviewInputError(f"The bundle cannot be sent as a request: {reason}.") from None


USERS = {"clinician": "a clinician (Practitioner)", "patient": "the patient (a patient-facing app)"}


def value_words(resource: dict[str, Any], terminology: Terminology) -> str:
    """An Observation's value as a reader writes it: '4/5', '8 °', '5/10', 'yes'."""
    if isinstance(resource.get("valueQuantity"), dict):
        quantity = resource["valueQuantity"]
        return f"{quantity.get('value', '')} {quantity.get('unit') or quantity.get('code') or ''}".strip()
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        graded = [c for s, c in codings(concept) if s == terminology.mrc_grade_system]
        if graded:
            return f"{graded[0]}/5"
        shown = [str(c.get("display") or c.get("code")) for c in concept.get("coding") or [] if isinstance(c, dict)]
        return str(concept.get("text") or ", ".join(shown))
    if "valueInteger" in resource:
        return f"{resource['valueInteger']}/10" if _is_pain(resource, terminology) else str(resource["valueInteger"])
    if isinstance(resource.get("valueBoolean"), bool):
        return "yes" if resource["valueBoolean"] else "no"
    return str(resource.get("valueString", ""))


def _is_pain(resource: dict[str, Any], terminology: Terminology) -> bool:
    """A pain score (0-10) by its binding in the terminology, whatever code the site uses for it."""
    bindings = [terminology.observation_by_code.get(terminology.canonical(*c)) for c in codings(resource.get("code"))]
    return any(b is not None and b.kind == "pain-severity" for b in bindings)


@dataclass(frozen=True)
class RecordRow:
    """One record of the chart as the review page lists it."""

    what: str
    note: str
    value: str
    side: str
    date: str
    status: str
    used: str


def resource_rows(resources: list[dict[str, Any]], decision: Decision | None,
                  terminology: Terminology) -> list[RecordRow]:
    """The record as a clinician reads it: what, value, side, date, status, and whether the rules used it."""
    used = {f.source for f in decision.validated.facts} if decision else set()
    issues: dict[str, str] = {}
    for issue in decision.validated.issues if decision else []:
        issues.setdefault(issue.resource, issue.message)
    rows = []
    for r in resources:
        if r.get("resourceType") == "Patient":
            continue
        ref = f"{r.get('resourceType')}/{r.get('id')}"
        code: dict[str, Any] = r["code"] if isinstance(r.get("code"), dict) else {}
        shown = [str(c.get("display") or c.get("code")) for c in code.get("coding") or [] if isinstance(c, dict)]
        try:
            side: str = laterality(r, terminology)[0] or ""
        except Reject:
            side = "conflicting"
        when = next((d for d in (effective(r, p)[1] for p in ("effective", "onset", "performed")) if d), None)
        notes = [str(n.get("text", "")) for n in r.get("note") or [] if isinstance(n, dict)]
        rows.append(RecordRow(what=str(code.get("text") or ", ".join(shown) or r.get("resourceType")),
                              note=" ".join(notes), value=value_words(r, terminology), side=side,
                              date=date_words(when) if when else "", status=_status(r),
                              used="used" if ref in used else f"not used: {issues[ref]}" if ref in issues
                              else "not used"))
    return rows


def _status(resource: dict[str, Any]) -> str:
    status = resource.get("status")
    if isinstance(status, str):
        return status
    return ", ".join(c for _, c in codings(resource.get("clinicalStatus")))


def patient_header(resources: list[dict[str, Any]], day: dt.date) -> str:
    """'Patient p01 · female · 24 years': who the cards are about, from the bundle's Patient."""
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), {})
    born = to_date(patient.get("birthDate"))
    age = f"{years_between(born, day)} years" if born else "age unknown"
    return " · ".join(str(x) for x in (f"Patient {patient.get('id', '?')}", patient.get("gender") or "sex unknown",
                                        age))


@dataclass(frozen=True)
class CardView:
    """One card as the page shows it: the card as the EHR got it (JSON), its explanation, and what the template
    needs ready (the indicator's icon and words, the detail as HTML, the links that are web links)."""

    card: dict[str, Any]
    explanation: Explanation
    service: str
    icon: str
    label: str
    detail: Markup
    links: list[dict[str, Any]]
    source_url: str | None


def card_view(card: dict[str, Any], explanation: Explanation, service: str) -> CardView:
    icon, label = INDICATORS[card["indicator"]]
    links = [link for link in card.get("links", []) if str(link.get("url", "")).startswith(("https://", "http://"))]
    url = card["source"].get("url")
    return CardView(card=card, explanation=explanation, service=service, icon=icon, label=label,
                    detail=Markup(markdown.render(card.get("detail", ""))),  # safe: markdown-it escapes raw HTML
                    links=links, source_url=url if str(url or "").startswith("http") else None)


@dataclass(frozen=True)
class ReviewResult:
    """What one run of the review page shows."""

    cards: list[CardView]
    findings: list[str]
    no_cards: str
    issues: list[DataIssue]
    rows: list[RecordRow]
    patient: str
    hook: str
    user_label: str
    as_of_words: str
    recorded: bool


@dataclass(frozen=True)
class KindRow:
    """One card kind on the rules page: its counts, acceptance rate with 95 % interval, override reasons."""

    kind: str
    name: str
    use: CardUse
    rate: tuple[float, float, float] | None
    reasons: list[tuple[str, int]]


class Review:
    """The two pages; calls take the EHR's path (the same hook calls and store), so feedback joins up."""

    def __init__(self, calls: HookCalls, services_by_id: dict[str, Service], store: Store) -> None:
        self.calls, self.services_by_id, self.store = calls, services_by_id, store
        self.settings = calls.pipeline.settings
        self.examples = load_examples(self.settings.content.examples_dir)

    def page(self, **values: Any) -> str:
        return templates.get_template("review.html").render(examples=self.examples, hooks=HOOKS, users=USERS,
                                                             **({"user": "clinician"} | values))

    async def run(self, bundle: dict[str, Any], hook: str, as_of: dt.date | None, user: str,
                  record: bool) -> ReviewResult:
        if hook not in HOOKS:
            raise ReviewInputError(f"Unknown hook {hook!r}; choose one of {', '.join(HOOKS)}.")
        if user not in USERS:
            raise ReviewInputError(f"Unknown user {user!r}; choose one of {', '.join(USERS)}.")
        service = self.services_by_id[service_id(hook)]
        resources = [r for r in bundle_resources(bundle) if isinstance(r, dict)]
        request = hook_request(resources, hook, service.prefetch, self.calls.pipeline.terminology, user)
        answer = await self.calls.call_async(service, request, today=as_of, record=record, preview=True)
        decision = answer.decision
        pipeline = self.calls.pipeline
        day = as_of or self.calls.today()
        explained = {c.card.uuid: c.explanation for c in decision.cards} if decision else {}
        return ReviewResult(
            cards=[card_view(c, explained[c["uuid"]], service.id) for c in answer.response.dump()["cards"]],
            findings=[pipeline.cards.texts.words(f.name, f.side) for f in decision.evaluation.findings]
            if decision else [],
            no_cards=pipeline.cards.no_cards_reason(decision.evaluation) if decision else NO_ORDER_SELECTED,
            issues=decision.validated.issues if decision else [],
            rows=resource_rows(resources, decision, pipeline.terminology),
            patient=patient_header(resources, day), hook=hook, user_label=USERS[user], as_of_words=date_words(day),
            recorded=record)

    def rules_page(self) -> str:
        coverage = scenario_coverage(self.settings.content.coverage_report)
        use = rule_use(self.store)
        pipeline = self.calls.pipeline
        texts = {r["code"]: r["display"] for r in pipeline.cards.texts.override_reasons}
        rows = []
        for rule in pipeline.ruleset.source.rules:
            key = rule_label(rule.id, rule.version)
            used = use.get(key)
            reasons = [(texts.get(code, code), count) for code, count in used.reasons.most_common()] if used else []
            rows.append({"rule": rule, "key": key, "scenarios": (coverage or {}).get(key, []), "use": used,
                         "reasons": reasons})
        cards = card_use(self.store)
        kinds = [KindRow(kind, pipeline.cards.texts.cards[kind].title, cards[kind],
                         wilson(cards[kind].accepted, cards[kind].accepted + cards[kind].overridden),
                         [(texts.get(code, code), count) for code, count in cards[kind].reasons.most_common()])
                 for kind in pipeline.cards.texts.cards if kind in cards]
        weeks = sorted({week for use in cards.values() for week in use.weekly})
        return templates.get_template("rules.html").render(rows=rows, coverage=coverage is not None, kinds=kinds,
                                                           weeks=weeks, most=max([k.use.issued for k in kinds] or [1]),
                                                           previews=previews(self.store))


def review_router(calls: HookCalls, services_by_id: dict[str, Service], store: Store) -> APIRouter:
    review = Review(calls, services_by_id, store)
    router = APIRouter(prefix="/review", tags=["review"])
    headers = HEADERS

    @router.get("", response_class=HTMLResponse, summary="Review page: choose a patient")
    async def choose(example: str | None = None, hook: str | None = None, user: str | None = None) -> HTMLResponse:
        """A link to an example; the hook and user default to the example's own (P15b is opened by the patient)."""
        if example is None:
            return HTMLResponse(review.page(), headers=headers)
        try:
            found = _example(review, example)
        except ReviewInputError as exc:
            return HTMLResponse(review.page(error=str(exc), example=example), status_code=400, headers=headers)
        own_user = "patient" if (found.user or "").startswith("Patient/") else "clinician"
        return await respond(lambda: (example_bundle(review, found.name), found.as_of), hook or found.hook or
                             "patient-view", None, found.name, user or own_user, record=False)

    @router.post("", response_class=HTMLResponse, summary="Review page: run a pasted or uploaded bundle")
    async def run(request: Request) -> HTMLResponse:
        try:
            form = await capped_form(request, review.settings.limits.max_body_bytes)
        except (BodyTooLarge, CrossSite) as exc:
            return HTMLResponse(review.page(error=str(exc)), status_code=413 if isinstance(exc, BodyTooLarge) else 403,
                                headers=headers)
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
        return await respond(source, str(form.get("hook") or "patient-view"), text, example,
                             str(form.get("user") or "clinician"), record=True)

    async def respond(source: Any, hook: str, pasted: str | None, example: str | None, user: str, *,
                      record: bool) -> HTMLResponse:
        """The page for one run; only a run sent from the page's own form (POST) records its cards, so a link
        (GET ?example=) changes nothing, whoever makes the browser open it."""
        try:
            bundle, as_of = source()
            result = await review.run(bundle, hook, as_of, user, record)
        except (ReviewInputError, HookError) as exc:
            message = exc.message if isinstance(exc, HookError) else str(exc)
            return HTMLResponse(review.page(error=message, pasted=pasted, example=example, hook=hook, user=user),
                                status_code=400, headers=headers)
        return HTMLResponse(review.page(result=result, pasted=pasted, example=example, hook=hook, user=user),
                            headers=headers)

    @router.get("/rules", response_class=HTMLResponse, summary="Rule catalog with coverage and feedback")
    def rules() -> HTMLResponse:
        return HTMLResponse(review.rules_page(), headers=headers)

    return router


async def capped_form(request: Request, limit: int) -> FormData:
    """The form, from the service's own page only, read within the body limit (a form upload needs no CORS
    preflight, so without these checks any web page could push a large body at a clinician's local service)."""
    refuse_cross_site(request)
    body = await read_body(request, limit)
    replayed = False

    async def receive() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, receive).form()


def example_bundle(review: Review, name: str) -> dict[str, Any]:
    return read_bundle(_example(review, name).path.read_text(encoding="utf-8"))


def example_date(review: Review, name: str) -> dt.date | None:
    return _example(review, name).as_of


def _example(review: Review, name: str) -> Example:
    """The example by its name or a unique prefix of it (`P01`)."""
    if not name:
        raise ReviewInputError("Choose an example patient, or paste or upload a bundle.")
    try:
        return pick_example(review.examples, name)
    except NoSuchExample as exc:
        raise ReviewInputError(f"Example {exc}.") from None


def parse_date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        raise ReviewInputError(f"'{text}' is not a date (YYYY-MM-DD).") from None
