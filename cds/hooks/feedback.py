"""Feedback on issued cards (https://cds-hooks.hl7.org/2.0/#feedback), checked against what was issued.

The spec's invariants (cds-fb-1…3) are validators; beyond them a feedback item must name a card
this service issued on this service id, and accepted suggestions must belong to that card, so
that every stored outcome joins to the rules behind it. The sandbox drops `display` from the
echoed override reason, so it is not required here.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cds.hooks.auth import VerifiedClient
from cds.hooks.errors import InvalidRequest, UnknownCard
from cds.hooks.request import first_error, parse_body
from cds.hooks.store import FeedbackRecord, Store

UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", str_max_length=2000)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """PostgreSQL text cannot hold NUL; refuse it here so both stores answer the same 400."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


class AcceptedSuggestion(_Model):
    id: str = Field(pattern=UUID)


class ReasonCoding(_Model):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class OverrideReason(_Model):
    reason: ReasonCoding | None = None
    userComment: str | None = Field(default=None, max_length=2000)  # noqa: N815 - spec name

    @model_validator(mode="after")
    def _something(self) -> OverrideReason:
        if self.reason is None and not self.userComment:
            raise ValueError("overrideReason needs a reason or a userComment (cds-fb-3)")
        return self


class Feedback(_Model):
    card: str = Field(pattern=UUID)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None  # noqa: N815 - spec name
    overrideReason: OverrideReason | None = None  # noqa: N815 - spec name
    outcomeTimestamp: str = Field(max_length=40)  # noqa: N815 - spec name

    @field_validator("outcomeTimestamp")
    @classmethod
    def _instant(cls, value: str) -> str:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("outcomeTimestamp must be an RFC 3339 date-time, e.g. 2026-11-24T10:00:00Z") from None
        if parsed.tzinfo is None:
            raise ValueError("outcomeTimestamp must carry a time zone (UTC 'Z')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Feedback:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when the outcome is 'accepted' (cds-fb-2)")
        if self.outcome == "overridden" and self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is only allowed when the outcome is 'accepted'")
        if self.outcome == "accepted" and self.overrideReason is not None:
            raise ValueError("overrideReason is only allowed when the outcome is 'overridden'")
        return self


class FeedbackRequest(_Model):
    feedback: list[Feedback] = Field(min_length=1)


class FeedbackStored(BaseModel):
    """This service's answer to a feedback call (the spec leaves the body open)."""

    stored: int = Field(description="Items stored now")
    duplicates: int = Field(description="Items identical to ones stored before (clients may resend)")


def parse_feedback(raw: bytes, max_items: int = 100) -> FeedbackRequest:
    """The feedback body, at most `max_items` items (a client sends one per card acted on)."""
    data = parse_body(raw)
    items = data.get("feedback") if isinstance(data, dict) else None
    if isinstance(items, list) and len(items) > max_items:
        raise InvalidRequest(f"feedback has {len(items)} items; at most {max_items} are taken in one call", "feedback",
                             error="invalid-feedback")
    try:
        return FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise InvalidRequest(f"{field}: {message}", field, error="invalid-feedback") from None


def store_feedback(request: FeedbackRequest, service_id: str, store: Store,
                   client: VerifiedClient | None = None) -> list[bool]:
    """Check every item against the issued cards, then store them; True per item newly stored. A card takes
    feedback only on its own service and from the issuer (and tenant) whose call it answered."""
    records = [_record(index, item, service_id, store, client) for index, item in enumerate(request.feedback)]
    return [store.record_feedback(r) for r in records]


def _record(index: int, item: Feedback, service_id: str, store: Store, client: VerifiedClient | None) -> FeedbackRecord:
    issued = store.issued(item.card.lower())
    issuer, tenant = (client.issuer, client.tenant) if client else (None, None)
    if issued is None or issued.service_id != service_id or (issued.issuer, issued.tenant) != (issuer, tenant):
        raise UnknownCard(f"card {item.card} was not issued by service {service_id}",
                           f"feedback.{index}.card")
    accepted = [s.id.lower() for s in item.acceptedSuggestions or []]
    for position, suggestion in enumerate(accepted):
        if suggestion not in issued.suggestions:
            raise InvalidRequest(f"suggestion {suggestion} is not a suggestion of card "
                               f"{item.card}", f"feedback.{index}.acceptedSuggestions.{position}.id",
                                 error="invalid-feedback")
    reason = item.overrideReason.reason if item.overrideReason else None
    return FeedbackRecord(card_uuid=issued.card_uuid, outcome=item.outcome, accepted_suggestions=accepted,
                          override_system=reason.system if reason else None,
                          override_code=reason.code if reason else None,
                          override_comment=item.overrideReason.userComment if item.overrideReason else None,
                          outcome_timestamp=item.outcomeTimestamp)
