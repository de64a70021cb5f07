"""CDS Hooks 2.0 response models (https://cds-hooks.hl7.org/2.0/#cds-service-response).

The spec's closed vocabularies are enums and its cross-field rules (cds-resp-1…6, summary
length) are validators, so a card that breaks the spec cannot even be built, and `/openapi.json`
documents the contract. Serialise with `dump()` or `json()`: the spec forbids nulls and empty optionals, so
the models never hold an empty list (validators turn them into None) and nulls are left out when serialising;
no walk over the finished response is needed.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

SUMMARY_LIMIT = 140  # "<140 characters" (S2 #card-attributes)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict without nulls (S2 #use-of-json)."""
        body: dict[str, Any] = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        return body

    def json(self) -> bytes:  # type: ignore[override]
        """The JSON body, encoded once by pydantic-core (no intermediate dict)."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True, by_alias=True)


class Indicator(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class SelectionBehavior(StrEnum):
    at_most_one = "at-most-one"
    any = "any"


class ActionType(StrEnum):
    create = "create"
    update = "update"
    delete = "delete"


class LinkType(StrEnum):
    absolute = "absolute"
    smart = "smart"


class Coding(_Model):
    system: str
    code: str
    display: str | None = None


class OverrideReason(Coding):
    display: str = Field(description="Required on override reasons (cds-resp-4)")


class Source(_Model):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Model):
    type: ActionType
    description: str = Field(min_length=1, description="Required on suggestion actions (cds-resp-5)")
    resource: dict[str, Any] | None = None
    resourceId: str | None = None  # noqa: N815 - spec name

    @model_validator(mode="after")
    def _shape(self) -> Action:
        if self.type == ActionType.create and self.resource is None:
            raise ValueError("a create action carries the new resource")
        if self.type == ActionType.delete and (self.resourceId is None or self.resource is not None):
            raise ValueError("a delete action names resourceId and carries no resource (cds-resp-2)")
        return self


class Suggestion(_Model):
    label: str = Field(min_length=1)
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    isRecommended: bool | None = None  # noqa: N815 - spec name
    actions: list[Action] | None = None


class Link(_Model):
    label: str
    url: str
    type: LinkType
    appContext: str | None = None  # noqa: N815 - spec name

    @model_validator(mode="after")
    def _app_context(self) -> Link:
        if self.appContext is not None and self.type != LinkType.smart:
            raise ValueError("appContext is only allowed on smart links (cds-resp-3)")
        return self


class Card(_Model):
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    summary: str = Field(min_length=1, max_length=SUMMARY_LIMIT - 1)
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: SelectionBehavior | None = None  # noqa: N815 - spec name
    overrideReasons: list[OverrideReason] | None = None  # noqa: N815 - spec name
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _spec_rules(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required with suggestions (cds-resp-6)")
        recommended = sum(bool(s.isRecommended) for s in self.suggestions or [])
        if self.selectionBehavior == SelectionBehavior.at_most_one and recommended > 1:
            raise ValueError("at-most-one allows at most one recommended suggestion (cds-resp-1)")
        for name in ("suggestions", "overrideReasons", "links"):
            if getattr(self, name) == []:
                setattr(self, name, None)
        return self


class CDSResponse(_Model):
    cards: list[Card] = Field(description="Always present, may be empty (S2 #http-response)")
    systemActions: list[Action] | None = None  # noqa: N815 - spec name

    @model_validator(mode="after")
    def _no_empty_actions(self) -> CDSResponse:
        if self.systemActions == []:
            self.systemActions = None
        return self
