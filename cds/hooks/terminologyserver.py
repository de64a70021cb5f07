"""Ask a site's FHIR terminology server which of a chart's codes belong to the shipped ValueSets.

The ValueSets in `rules/valuesets/` list SNOMED CT concepts; their descendants (a more specific effusion, a
lateralised knee structure) are known only to a terminology server that holds SNOMED CT and the site's copy of
the ValueSets (loaded from `rules/valuesets/`, whose `is-a` filters it expands). Where a site has one
(`HIPFLEX_TERMINOLOGY_SERVER`), each distinct code of a server-read system (`server: true` in terminology.yaml)
is checked with `ValueSet/$validate-code` against every ValueSet that classifies a chart, concurrently, within
its own deadline, and the answers are cached. A server that fails or is slow is a data issue ("descendants not
checked"): the shipped sets, and the knee-word safety net, still classify every record.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from cds.clinical.fhirvalues import codings
from cds.content.facts import DataIssue, IssueCode
from cds.content.terminology import Terminology

CACHE_ENTRIES = 50_000  # (system, code, value set) -> bool, about 200 bytes each
MAX_CODES_PER_CALL = 50  # a chart's distinct codes asked about; the rest are classified by the shipped sets
CONCURRENT_ASKS = 8
CODED = ("Condition", "Procedure", "Observation")
Membership = tuple[str, str, str]


@dataclass(frozen=True)
class Answered:
    memberships: frozenset[Membership]
    issue: DataIssue | None


class TerminologyServer:
    """One site terminology server; one instance per process, its answers cached across calls."""

    def __init__(self, base_url: str, terminology: Terminology, deadline_seconds: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.t, self.deadline_seconds, self.transport = terminology, deadline_seconds, transport
        self.cache: OrderedDict[Membership, bool] = OrderedDict()
        self.value_sets = [f.value_set for f in terminology.red_flags] + [
            terminology.value_sets.knee_related, terminology.value_sets.knee_sites,
            terminology.value_sets.compatible]

    def codes_of(self, resources: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
        """The distinct codes worth asking about: codes and body sites of clinical records in server-read systems."""
        systems = {s.system for s in self.t.code_systems if s.server}
        found: dict[tuple[str, str], None] = {}
        for resource in resources:
            if resource.get("resourceType") not in CODED:
                continue
            sites = resource.get("bodySite")
            concepts = [resource.get("code"), *(sites if isinstance(sites, list) else [sites])]
            for concept in concepts:
                for system, code in codings(concept):
                    named = self.t.code_system(system)
                    if named is not None and named.system in systems and code:
                        found[(named.system, code)] = None
        return list(found)[:MAX_CODES_PER_CALL]

    async def memberships(self, resources: Iterable[dict[str, Any]]) -> Answered:
        """Every (system, code, value set) the server says holds, for this call's codes."""
        asks = [(s, c, vs) for s, c in self.codes_of(resources) for vs in self.value_sets]
        known = {ask: self.cache[ask] for ask in asks if ask in self.cache}
        todo = [ask for ask in asks if ask not in known]
        failed = 0
        if todo:
            deadline = time.monotonic() + self.deadline_seconds
            limit = asyncio.Semaphore(CONCURRENT_ASKS)
            timeout = httpx.Timeout(self.deadline_seconds)
            async with httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False,
                                         transport=self.transport) as client:
                answers = await asyncio.gather(*(self._ask(client, limit, deadline, ask) for ask in todo))
            for ask, answer in zip(todo, answers, strict=True):
                if answer is None:
                    failed += 1
                    continue
                known[ask] = answer
                self._remember(ask, answer)
        issue = None if not failed else DataIssue(
            resource="ValueSet (terminology server)", path="ValueSet/$validate-code", severity="warning",
            code=IssueCode.unavailable,
            message=f"the terminology server did not answer for {failed} code look-ups: SNOMED CT descendants of "
                    "the red-flag concepts were not checked (the listed concepts and knee words were)")
        return Answered(frozenset(ask for ask, holds in known.items() if holds), issue)

    async def _ask(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, deadline: float,
                   ask: Membership) -> bool | None:
        system, code, value_set = ask
        async with limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                response = await asyncio.wait_for(client.get(
                    f"{self.base}/ValueSet/$validate-code", params={"url": value_set, "system": system, "code": code},
                    headers={"Accept": "application/fhir+json"}), remaining)
                if response.status_code != 200 or len(response.content) > 100_000:
                    return None
                return _result(response.json())
            except (httpx.HTTPError, TimeoutError, ValueError):
                return None

    def _remember(self, ask: Membership, answer: bool) -> None:
        self.cache[ask] = answer
        while len(self.cache) > CACHE_ENTRIES:
            self.cache.popitem(last=False)


def _result(body: Any) -> bool | None:
    """The `result` of a $validate-code Parameters resource (None when the answer is not one)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return None
    for parameter in body.get("parameter") or []:
        if isinstance(parameter, dict) and parameter.get("name") == "result" \
                and isinstance(parameter.get("valueBoolean"), bool):
            return bool(parameter["valueBoolean"])
    return None
