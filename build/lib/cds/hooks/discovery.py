"""The discovery document (https://cds-hooks.hl7.org/2.0/#discovery): one service per supported hook."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cds.content.terminology import Terminology
from cds.hooks.prefetch import prefetch_templates
from cds.hooks.request import HOOKS

USAGE = ("Needs the patient's Patient and Observations (prefetch 'patient' and 'observations', or fhirServer access); "
         "Conditions, Procedures and ServiceRequests are used for red flags and referrals, and the cards say when "
         "they could not be read.")
DESCRIPTION = "Suggests end-range hip-flexor strengthening and inferior patellar glides for anterior knee pain."
TITLES = {"patient-view": "Hip flexion and knee pain (chart open)",
          "encounter-start": "Hip flexion and knee pain (encounter start)",
          "order-select": "Hip flexion and knee pain (physiotherapy order)"}
NOTES = {"order-select": " Answers only when a physiotherapy ServiceRequest for the knee is selected."}


class Service(BaseModel):
    """One entry of the discovery response (S2 #response)."""

    hook: str = Field(description="The hook this service answers")
    id: str = Field(description="The {id} of POST /cds-services/{id}")
    title: str
    description: str
    prefetch: dict[str, str] = Field(description="Prefetch templates; keys the client may satisfy")
    usageRequirements: str  # noqa: N815 - spec name


class Discovery(BaseModel):
    services: list[Service]


def service_id(hook: str) -> str:
    """The one place a hook's service id is spelled."""
    return f"hipflex-{hook}"


def services(terminology: Terminology) -> list[Service]:
    prefetch = prefetch_templates(terminology)
    return [Service(hook=hook, id=service_id(hook), title=TITLES[hook], description=DESCRIPTION + NOTES.get(hook, ""),
                    prefetch=prefetch, usageRequirements=USAGE) for hook in HOOKS]
