"""Gather the FHIR data a hook call needs: prefetch first, the EHR's FHIR server for the rest.

S2 #prefetch-template makes this the service's job: a key the client did not satisfy is omitted,
a key whose query found nothing is `null`, and a key that failed may carry an OperationOutcome.
Missing keys are fetched from `fhirServer` with the call's bearer token, bounded in time, size
and pages. When the patient or the observations still cannot be had, the answer is 412 naming
the key and the reason; when a key that only refines the advice (conditions, procedures,
referrals) cannot be had, the cards say so instead of staying silent.

The access token is used for this request only and never appears in a log or an error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cds.content.facts import DataIssue, IssueCode
from cds.content.terminology import Terminology
from cds.hooks.errors import DataUnavailable
from cds.hooks.fhirclient import FetchFailed, FhirReader, ReadBudget, same_origin
from cds.hooks.request import HookRequest, entry_resources

REQUIRED_KEYS = ("patient", "observations")
TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
USER_TOKENS = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
               "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}


def prefetch_templates(terminology: Terminology) -> dict[str, str]:
    """Prefetch templates; the Observation codes come from rules/terminology.yaml, not a copy."""
    codes = ",".join(f"{system}|{code}" for system, code in terminology.observation_by_code)
    return {
        "patient": "Patient/{{context.patientId}}",
        "observations": f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count=100",
        "conditions": "Condition?patient={{context.patientId}}",
        "procedures": "Procedure?patient={{context.patientId}}",
        "serviceRequests": "ServiceRequest?patient={{context.patientId}}&status=active",
        # read for red flags: examination findings and vital signs, and the medicines (anticoagulants)
        "findings": "Observation?patient={{context.patientId}}&category=exam,vital-signs&_sort=-date&_count=100",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
        "medicationStatements": "MedicationStatement?patient={{context.patientId}}&status=active",
    }


@dataclass
class Gathered:
    resources: list[dict[str, Any]] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # key -> prefetch | fetched | empty | unavailable


def render(template: str, request: HookRequest) -> str | None:
    """Fill `{{context.x}}` and the user tokens (S2 #prefetch-tokens); None when a token has no value."""
    kind, _, user_id = request.user_id.partition("/")
    values = {f"context.{k}": str(v) for k, v in request.context.items() if isinstance(v, str | int)}
    values |= {token: user_id for token, rtype in USER_TOKENS.items() if rtype == kind}
    missing = [m for m in TOKEN.findall(template) if m not in values]
    return None if missing else TOKEN.sub(lambda m: values[m.group(1)], template)


async def gather(request: HookRequest, templates: dict[str, str], reader: FhirReader,
                 allowed: Sequence[str] = ()) -> Gathered:
    """Every template key resolved from prefetch or the FHIR server (only from `allowed` servers, all keys
    concurrently, within one deadline), or reported as unavailable."""
    out = Gathered()
    prefetch = request.prefetch or {}
    deadline = time.monotonic() + reader.limits.deadline_seconds
    budget = ReadBudget(reader.limits.call_bytes)  # every read of this call together
    jobs: dict[str, Any] = {}
    local: dict[str, list[dict[str, Any]]] = {}
    for key, template in templates.items():
        value = prefetch.get(key, ...)
        if value is None:
            out.origin[key] = "empty"
        elif isinstance(value, dict) and value.get("resourceType") not in (None, "OperationOutcome"):
            out.origin[key] = "prefetch"
            if value.get("resourceType") != "Bundle" or _next_link(value) is None:
                local[key] = _page_resources(value)  # all here: no task, no deadline to wait on
            else:
                jobs[key] = _resources(value, request, reader, allowed, deadline, budget)
        else:
            why = "the client reported an error for it" if isinstance(value, dict) else "it was not prefetched"
            jobs[key] = _fetch(key, template, request, reader, why, allowed, deadline, budget)
            out.origin[key] = "fetched"
    fetched = await _all_within(jobs, deadline, reader.limits.deadline_seconds) if jobs else {}
    for key in templates:  # in the templates' order, whichever finished first
        result = local[key] if key in local else fetched.get(key)
        if result is None:
            continue
        if isinstance(result, FetchFailed):
            out.origin[key] = "unavailable"
            _unavailable(out, key, templates[key], result)
        else:
            out.resources += result
    out.resources = _distinct(out.resources)
    return out


def _distinct(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each resource once: two templates (observations and findings) may both return the same Observation. Only
    identical copies are merged; two different resources with one id both stay, for validation to judge."""
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out = []
    for resource in resources:
        copies = seen.setdefault((str(resource.get("resourceType")), str(resource.get("id"))), [])
        if resource not in copies:  # by equality, in C (a generator of == was 2 % of a served call)
            copies.append(resource)
            out.append(resource)
    return out


async def _all_within(jobs: dict[str, Any], deadline: float, seconds: float) -> dict[str, Any]:
    """Run the jobs side by side; a job still running at the deadline is cancelled and counts as failed."""
    tasks = {key: asyncio.ensure_future(job) for key, job in jobs.items()}
    if tasks:
        await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - time.monotonic()))
    results: dict[str, Any] = {}
    late = [task for task in tasks.values() if not task.done()]
    for task in late:
        task.cancel()
    # a cancelled read is awaited, so its connection is closed and its pool slot given back, not leaked
    await asyncio.gather(*late, return_exceptions=True)
    for key, task in tasks.items():
        if task.cancelled():
            results[key] = FetchFailed(f"the FHIR server did not answer within {seconds:g} s", "timeout")
        elif isinstance(task.exception(), FetchFailed):
            results[key] = task.exception()
        else:
            results[key] = task.result()
    return results


async def _fetch(key: str, template: str, request: HookRequest, reader: FhirReader, why: str,
                 allowed: Sequence[str], deadline: float, budget: ReadBudget) -> list[dict[str, Any]]:
    if not request.fhirServer:
        raise FetchFailed(f"{why} and the request has no fhirServer to fetch it from", "no-server")
    path = render(template, request)
    if path is None:
        raise FetchFailed(f"{why} and its template needs a context value the request does not carry", "no-context")
    found = await reader.get(f"{request.fhirServer.rstrip('/')}/{path}", request.access_token, allowed, deadline,
                             budget)
    if found is None and key in REQUIRED_KEYS:
        raise FetchFailed(f"the FHIR server has no {path.split('?')[0].split('/')[0]} for it", "not-found")
    return [] if found is None else await _resources(found, request, reader, allowed, deadline, budget)


async def _resources(value: dict[str, Any], request: HookRequest, reader: FhirReader, allowed: Sequence[str],
                     deadline: float, budget: ReadBudget) -> list[dict[str, Any]]:
    """A resource, or a searchset's resources with its `next` pages (same server only, up to the limit)."""
    if value.get("resourceType") != "Bundle":
        return [value]
    resources, page, pages = [], value, 1
    while True:
        resources += _page_resources(page)
        next_url = _next_link(page)
        if next_url is None:
            return resources
        if not request.fhirServer or not same_origin(next_url, request.fhirServer):
            raise FetchFailed("a search result has more pages but they are not on the request's fhirServer",
                              "not-allowed")
        if pages >= reader.limits.max_pages:
            raise FetchFailed(f"a search result has more than {reader.limits.max_pages} pages", "pages")
        fetched = await reader.get(next_url, request.access_token, allowed, deadline, budget)
        if fetched is None:
            raise FetchFailed("a next page of a search result is gone", "not-found")
        page, pages = fetched, pages + 1


def _page_resources(value: dict[str, Any]) -> list[dict[str, Any]]:
    """A resource itself, or the resources of one searchset page (an OperationOutcome entry is not data)."""
    if value.get("resourceType") != "Bundle":
        return [value]
    return [r for r in entry_resources(value) if r.get("resourceType") != "OperationOutcome"]


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _unavailable(out: Gathered, key: str, template: str, failed: FetchFailed) -> None:
    reason = str(failed)
    if key in REQUIRED_KEYS:
        raise DataUnavailable(f"prefetch '{key}' could not be obtained: {reason}", f"prefetch.{key}",
                              log={"prefetch_key": key, "check": failed.check})
    rtype = template.split("?", 1)[0].split("/", 1)[0]
    out.issues.append(DataIssue(resource=f"{rtype} (prefetch '{key}')", path=rtype, severity="warning",
                                code=IssueCode.unavailable,
                                message=f"could not be read ({reason}), so it was not checked"))
