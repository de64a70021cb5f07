"""The hook request an EHR would send for a set of resources, carried as prefetch: for trying the service with a
file (`hipflex-cds request`, `evaluate`), the review page, the scenarios and the population tests. Nothing on the
path of a real call uses it.
"""

from __future__ import annotations

import uuid
from typing import Any

from cds.content.terminology import Terminology


def prefetch_from(resources: list[dict[str, Any]], templates: dict[str, str]) -> dict[str, Any]:
    """The prefetch an EHR would send holding these resources: a read as the resource or null, a search as
    a searchset. For trying the service with an example file; it does not apply the templates' filters."""
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        rtype = template.split("?", 1)[0].split("/", 1)[0]
        found = [r for r in resources if r.get("resourceType") == rtype]
        if "?" in template:
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}
        else:
            prefetch[key] = found[0] if found else None
    return prefetch


def request_for(resources: list[dict[str, Any]], hook: str, templates: dict[str, str], user_id: str,
                encounter_id: str = "encounter-1", patient_id: str | None = None, *,
                terminology: Terminology | None = None) -> dict[str, Any]:
    """The hook request an EHR would send holding these resources as prefetch (for the CLI, the review page and
    the scenarios); order-select selects a draft physiotherapy order for the knee, coded with the terminology's
    physiotherapy code. The patient is `patient_id`, else the one Patient among the resources (ValueError when
    there is not exactly one)."""
    if patient_id is None:
        patients = [r for r in resources if r.get("resourceType") == "Patient"]
        if len(patients) != 1:
            raise ValueError(f"exactly one Patient is needed to make a request; found {len(patients)}")
        patient_id = str(patients[0].get("id"))
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    if hook in ("encounter-start", "order-select"):
        context["encounterId"] = encounter_id
    if hook == "order-select":
        if terminology is None:
            raise ValueError("an order-select request needs the terminology's physiotherapy code")
        system, code = min(terminology.physiotherapy_codes)
        draft = {"resourceType": "ServiceRequest", "id": "draft-referral", "status": "draft", "intent": "order",
                 "subject": {"reference": f"Patient/{patient_id}"},
                 "code": {"coding": [{"system": system, "code": code}]}}
        context |= {"selections": ["ServiceRequest/draft-referral"],
                    "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}}
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": prefetch_from(resources, templates)}
