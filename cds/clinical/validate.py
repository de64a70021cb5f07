"""Validate FHIR R4 resources and turn them into facts plus data issues: the validation step, in four jobs.

1. structure (`structure.py`): fhir.resources R4B says whether a resource is FHIR at all;
2. profile checks per resource type (`profiles.py`): status, code, subject, date, side;
3. values (`fhirvalues.py`): grades, forces, angles, scores read and normalised, units and ranges checked;
4. assembly across resources (`assemble.py`): latest wins, conflicts, both sides, asymmetry.
Nothing invalid becomes a fact: it becomes a DataIssue, and the rules then see the data as missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds.clinical import structure
from cds.clinical.assemble import assemble
from cds.clinical.context import Context, Validated
from cds.clinical.fhirvalues import CodesOf
from cds.clinical.profiles import Profiles
from cds.content.facts import DataIssue, IssueCode
from cds.content.terminology import Terminology

SUPPORTED = ("Patient", "Observation", "Condition", "Procedure", "ServiceRequest", "MedicationRequest",
             "MedicationStatement")
CLASSIFIED_EVEN_IF_MALFORMED = {"Condition", "Procedure", "MedicationRequest", "MedicationStatement"}


def validate(resources: Iterable[Any], terminology: Terminology, context: Context) -> Validated:
    """Validate FHIR resources (as parsed JSON) into facts and data issues."""
    out, codes_of = Validated(patient_id=context.patient_id), CodesOf()
    parsed = [r for r in (_usable(i, r, terminology, out, codes_of) for i, r in enumerate(resources)) if r]
    profiles = Profiles(terminology, context, out, codes_of)
    for resource in (r for r in parsed if r["resourceType"] == "Patient"):
        profiles.patient(resource)
    if out.patient_id is None:
        out.issues.append(DataIssue(resource="Bundle", path="Bundle.entry", severity="error",
                                    code=IssueCode.no_patient, message="no patient in context and no Patient "
                                                                       "resource: cannot tell whose data this is"))
    for resource in parsed:
        profiles.check(resource)
    assemble(profiles.readings, out)
    profiles.knee_records()
    profiles.audience()
    return out


def _usable(index: int, resource: Any, t: Terminology, out: Validated, codes_of: CodesOf) -> dict[str, Any] | None:
    """The resource if it is a supported, structurally valid FHIR resource; else None, with the issue reported.
    Its name for the issues is written only when there is one to report (most records of a chart have none)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        where = f"entry[{index}]"
        out.issues.append(DataIssue(resource=where, path=f"Bundle.{where}.resource", severity="error",
                                    code=IssueCode.not_fhir, message="not a FHIR resource (no resourceType)"))
        return None
    rtype = resource["resourceType"]
    if rtype in SUPPORTED and not structure.may_be_used(resource, t, codes_of):
        return resource  # its profile check reports it as unrelated; its structure cannot matter
    ref = f"{rtype}/{resource.get('id', f'entry[{index}]')}"
    if rtype == "OperationOutcome":
        out.issues.append(DataIssue(resource=ref, path=rtype, severity="warning", code=IssueCode.source_error,
                                    message="the data source sent an OperationOutcome instead of data"))
        return None
    if rtype not in SUPPORTED:
        out.issues.append(DataIssue(resource=ref, path=rtype, severity="information", code=IssueCode.not_used,
                                    message=f"{rtype} resources are not used by these rules"))
        return None
    errors = structure.structure_errors(resource)
    for path, message in errors:
        out.issues.append(DataIssue(resource=ref, path=path, severity="error", code=IssueCode.structure,
                                    message=f"not valid FHIR R4: {message}"))
    if errors:
        # a malformed record may still hold a red flag: it is classified (the reading is defensive), never dropped
        return resource if rtype in CLASSIFIED_EVEN_IF_MALFORMED else None
    if not resource.get("id"):
        out.issues.append(DataIssue(resource=ref, path=f"{rtype}.id", severity="warning", code=IssueCode.no_id,
                                    message="resource has no id"))
    return resource


def bundle_resources(bundle: dict[str, Any]) -> list[Any]:
    """The resources of a Bundle's entries, in order (entries without a resource are kept as-is)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return [entries] if entries else []  # reported as "not a FHIR resource", not read letter by letter
    return [entry.get("resource", entry) if isinstance(entry, dict) else entry for entry in entries]
