"""What one EHR can take, set per trusted issuer: EHRs differ, and the service must say so, not send every EHR
the same thing. Oracle Health, for example, documents patient-view only, drops links to hosts not registered
with it and shows cards about an eighth of the screen wide; others want RS384 keys or particular JWT lifetimes.

A profile is applied where the caller is known: discovery lists only its hooks, a call to another hook is an
unknown service, its cards are fitted to its detail budget and link policy, its errors come in its format, its
tokens are held to its algorithms and lifetime. The stored card and its explanation are not changed.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from cds.clinical.response import Card, CDSResponse

MORE = " (more under “Why this suggestion”)"
CUT = "…"


class EhrProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hooks: list[str] | None = Field(default=None, description="Hooks offered in discovery (default: all)")
    detail_chars: int | None = Field(default=None, ge=80, description="The longest card detail this EHR shows")
    links: Literal["all", "registered", "none"] = Field(default="all", description="Which links cards carry: all, "
                                                        "only to `link_hosts`, or none")
    link_hosts: list[str] = Field(default_factory=list, description="Hosts registered with the EHR for links")
    app_context: bool = Field(default=False, description="Whether it takes SMART app links with appContext (this "
                                                         "service sends none yet)")
    error_format: Literal["json", "operation-outcome"] = Field(
        default="json", description="Error bodies: this service's JSON, or a FHIR OperationOutcome (CDS Hooks 3.0 "
                                    "ballot)")
    algorithms: list[str] | None = Field(default=None, description="JWT algorithms it signs with (default: any "
                                                                   "accepted asymmetric one)")
    max_lifetime_seconds: int | None = Field(default=None, ge=60, description="Its tokens' longest lifetime")

    def offers(self, hook: str) -> bool:
        return self.hooks is None or hook in self.hooks

    def fit(self, response: CDSResponse) -> CDSResponse:
        """The response as this EHR can show it (the default profile changes nothing)."""
        if self.detail_chars is None and self.links == "all":
            return response
        return CDSResponse(cards=[self._card(card) for card in response.cards])

    def _card(self, card: Card) -> Card:
        links = [link for link in card.links or [] if self._may_link(link.url)] or None
        source = card.source
        if source.url is not None and not self._may_link(source.url):
            source = source.model_copy(update={"url": None})
        detail = self._detail(card.detail, bool(links))
        return card.model_copy(update={"links": links, "source": source, "detail": detail})

    def _may_link(self, url: str) -> bool:
        if self.links == "none":
            return False
        return self.links == "all" or (urlsplit(url).hostname or "") in self.link_hosts

    def _detail(self, detail: str | None, linked: bool) -> str | None:
        """Within the budget: whole sentences, paragraph breaks kept, then a pointer to the link if there is one."""
        budget = self.detail_chars
        if detail is None or budget is None or len(detail) <= budget:
            return detail
        tail = MORE if linked else CUT
        room, kept = budget - len(tail), ""
        for paragraph in detail.split("\n\n"):
            for index, sentence in enumerate(_sentences(paragraph)):
                glue = "" if not kept else "\n\n" if index == 0 else " "
                if len(kept) + len(glue) + len(sentence) > room:
                    return (kept or detail[:room].rsplit(" ", 1)[0]) + tail
                kept += glue + sentence
        return kept + tail


def _sentences(paragraph: str) -> list[str]:
    parts, start = [], 0
    for index, char in enumerate(paragraph):
        if char in ".;" and (index + 1 == len(paragraph) or paragraph[index + 1] == " "):
            parts.append(paragraph[start:index + 1].strip())
            start = index + 1
    rest = paragraph[start:].strip()
    return parts + ([rest] if rest else [])


def operation_outcome(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An error body as a FHIR R4 OperationOutcome (the CDS Hooks 3.0 ballot's recommendation)."""
    code = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 412: "not-found", 413: "too-costly",
            415: "not-supported", 503: "transient"}.get(status, "exception")
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": body.get("message", ""),
                             "details": {"text": body.get("error", "")}}
    if body.get("field"):
        issue["expression"] = [body["field"]]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
