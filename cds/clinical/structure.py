"""Structure checks: is a resource valid FHIR R4 at all? (fhir.resources R4B, identical to R4 for these types.)

Observations are checked only when they carry a code the bindings read as a measurement: the check costs about
0.5 ms a resource, and a chart's other observations are classified for red flags without it. Every Condition,
Procedure and medicine is checked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds.clinical.fhirvalues import codings
from cds.content.terminology import Terminology

CACHE_ENTRIES = 4096
CACHE_MAX_RESOURCE_BYTES = 64_000  # larger resources are checked every time, never kept
_verdicts: OrderedDict[bytes, tuple[tuple[str, str], ...]] = OrderedDict()
_lock = threading.Lock()


def structure_errors(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """fhir.resources' verdict on one resource, as (element path, message) pairs.

    Cached by a digest of its content: the same patient's resources come back with every hook of a visit
    (patient-view, encounter-start, order-select, re-opened charts), and this check is most of a call's
    cost. The cache keeps digests and verdicts only (about 100 bytes an entry, 4,096 entries), so unique
    multi-megabyte resources cannot grow it; a changed resource is a different key.
    """
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    if len(canonical) > CACHE_MAX_RESOURCE_BYTES:
        return _check(resource)
    key = hashlib.sha256(canonical).digest()
    with _lock:
        if key in _verdicts:
            _verdicts.move_to_end(key)
            return _verdicts[key]
    verdict = _check(resource)
    with _lock:
        _verdicts[key] = verdict
        while len(_verdicts) > CACHE_ENTRIES:
            _verdicts.popitem(last=False)
    return verdict


def _check(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    rtype = resource["resourceType"]
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        return tuple((".".join(str(p) for p in (rtype, *e["loc"]) if not str(p).startswith("function")), e["msg"])
                     for e in exc.errors()[:3])
    return ()


def may_be_used(resource: dict[str, Any], t: Terminology) -> bool:
    """Whether a resource carries a code the rules read (only those are worth a structure check)."""
    rtype = resource["resourceType"]
    if rtype == "Observation":
        codes = codings(resource.get("code"))
        return not codes or any(k in t.observation_by_code or k in t.unsupported_by_code for k in codes)
    if rtype == "ServiceRequest":
        return bool(set(codings(resource.get("code"))) & t.physiotherapy_codes)
    return True
