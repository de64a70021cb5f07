"""Structure checks: is a resource valid FHIR R4 at all? (fhir.resources R4B, identical to R4 for these types.)

Only resources that carry a code the rules read are checked: the check costs about 0.5 ms a
resource, and a chart's vital signs and labs are recognised and skipped instead.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds.clinical.fhirvalues import codings
from cds.content.terminology import Terminology


@functools.lru_cache(maxsize=4096)
def structure_errors(canonical: str) -> tuple[tuple[str, str], ...]:
    """fhir.resources' verdict on one resource (canonical JSON), as (element path, message) pairs.

    Cached by content: the same patient's resources come back with every hook of a visit (patient-view,
    encounter-start, order-select, re-opened charts), and this check is most of a call's cost. The cache
    lives in process memory only and is bounded; a changed resource is a different key.
    """
    resource = json.loads(canonical)
    rtype = resource["resourceType"]
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        return tuple((".".join(str(p) for p in (rtype, *e["loc"]) if not str(p).startswith("function")), e["msg"])
                     for e in exc.errors()[:3])
    return ()


def check(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The structure errors of one resource (none for a valid one)."""
    return structure_errors(json.dumps(resource, sort_keys=True, separators=(",", ":")))


def may_be_used(resource: dict[str, Any], t: Terminology) -> bool:
    """Whether a resource carries a code the rules read (only those are worth a structure check)."""
    rtype = resource["resourceType"]
    if rtype == "Observation":
        codes = codings(resource.get("code"))
        return not codes or any(k in t.observation_by_code or k in t.unsupported_by_code for k in codes)
    if rtype == "Condition":
        return any(k in t.red_flag_by_code or k in t.patellofemoral_by_code for k in codings(resource.get("code")))
    if rtype == "ServiceRequest":
        return bool(set(codings(resource.get("code"))) & t.physiotherapy_codes)
    return True
