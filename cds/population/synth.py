"""`hipflex-cds synth`: a synthetic FHIR Bulk Data export (NDJSON per resource type), deterministic for a seed.

The patients have plausible distributions (ages 10 to 80, most without knee pain, each pattern of the
decision table present) and the mess real data has: missing sides, wrong units, stale and preliminary
readings, entered-in-error, red flags coded in ICD-10-CM, SNOMED CT and CPT, and vital signs the rules
ignore. Nothing here is real patient data.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

LOCAL = "urn:hipflex-cds:fhir:CodeSystem:knee-hip"
MRC = "urn:hipflex-cds:fhir:CodeSystem:mrc-grade"
SNOMED, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
ICD, CPT = "http://hl7.org/fhir/sid/icd-10-cm", "http://www.ama-assn.org/go/cpt"
SIDES = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
TYPES = ("Patient", "Observation", "Condition", "Procedure", "ServiceRequest")


class Synth:
    """One patient at a time, from one seeded random generator (so a seed always gives the same export)."""

    def __init__(self, seed: int, as_of: dt.date) -> None:
        self.random, self.as_of = random.Random(seed), as_of

    def patient(self, index: int) -> list[dict[str, Any]]:
        r, pid = self.random, f"syn-{index:07d}"
        age = r.randint(10, 80)
        born = self.as_of - dt.timedelta(days=age * 365 + r.randint(1, 300))
        out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": pid, "gender": r.choice(["female", "male"]),
                                      "birthDate": born.isoformat()}]
        out += [self._vital(pid, k) for k in range(r.randint(0, 3))]
        if r.random() < 0.6:
            return out  # most patients: no knee pain, nothing for these rules
        side = r.choice(["left", "right"])
        days = r.choice([3, 5, 10, 30, 60, 120])  # 120: stale
        pattern = r.choice(["classic", "weak-only", "pain-only", "hyperextension", "dynamometer", "red-flag",
                            "messy"])
        out.append(self._pain(pid, side, r.randint(0, 9), days, sided=r.random() > 0.05))
        if pattern in ("classic", "weak-only", "red-flag", "messy"):
            out.append(self._mmt(pid, side, r.choice(["3", "4-", "4", "4+", "5-", "5"]), days))
        if pattern in ("classic", "hyperextension", "messy"):
            out.append(self._angle(pid, side, r.choice([3, 5, 6, 8, 12]), days))
        if pattern == "dynamometer":
            out += [self._force(pid, s, n, days) for s, n in ((side, r.randint(60, 100)), (_other(side), 100))]
        if pattern == "red-flag":
            out.append(self._red_flag(pid, r.choice(["icd", "snomed", "cpt"])))
        if pattern == "messy":
            mess = r.choice(["kg", "preliminary", "entered-in-error", "no-side"])
            out.append(self._messy(pid, side, mess, days))
        if r.random() < 0.05:
            out.append({"resourceType": "ServiceRequest", "id": f"{pid}-sr", "status": "active", "intent": "order",
                        "subject": {"reference": f"Patient/{pid}"},
                        "code": {"coding": [{"system": SNOMED, "code": "91251008"}]}})
        return out

    def _date(self, days: int) -> str:
        return (self.as_of - dt.timedelta(days=days)).isoformat()

    def _obs(self, pid: str, ident: str, code: tuple[str, str], days: int, site: dict[str, Any] | None,
             value: dict[str, Any], status: str = "final") -> dict[str, Any]:
        resource = {"resourceType": "Observation", "id": f"{pid}-{ident}", "status": status,
                    "code": {"coding": [{"system": code[0], "code": code[1]}]},
                    "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": self._date(days)} | value
        if site is not None:
            resource["bodySite"] = site
        return resource

    @staticmethod
    def _site(system: str, code: str, side: str | None) -> dict[str, Any]:
        site: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
        if side:
            site["extension"] = [{"url": "urn:hipflex-cds:fhir:StructureDefinition:laterality",
                                  "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": SIDES[side][0],
                                                                       "display": SIDES[side][1]}]}}]
        return site

    def _pain(self, pid: str, side: str, score: int, days: int, sided: bool) -> dict[str, Any]:
        site = self._site(LOCAL, self.random.choice(["peripatellar", "anterior-knee", "retropatellar"]),
                          side if sided else None)
        return self._obs(pid, "pain", (LOINC, "72514-3"), days, site, {"valueInteger": score})

    def _mmt(self, pid: str, side: str, grade: str, days: int) -> dict[str, Any]:
        return self._obs(pid, f"mmt-{side}", (LOCAL, "hip-flexion-mmt-seated-endrange"), days,
                         self._site(SNOMED, "24136001", side), {"valueCodeableConcept": {"coding": [
                             {"system": MRC, "code": grade}]}})

    def _angle(self, pid: str, side: str, degrees: int, days: int) -> dict[str, Any]:
        return self._obs(pid, f"hyper-{side}", (LOCAL, "knee-hyperextension-angle"), days,
                         self._site(SNOMED, "49076000", side),
                         {"valueQuantity": {"value": degrees, "unit": "deg", "system": UCUM, "code": "deg"}})

    def _force(self, pid: str, side: str, newtons: int, days: int) -> dict[str, Any]:
        return self._obs(pid, f"hhd-{side}", (LOCAL, "hip-flexion-hhd-seated-endrange"), days,
                         self._site(SNOMED, "24136001", side),
                         {"valueQuantity": {"value": newtons, "unit": "N", "system": UCUM, "code": "N"}})

    def _vital(self, pid: str, k: int) -> dict[str, Any]:
        return self._obs(pid, f"hr-{k}", (LOINC, "8867-4"), k + 1, None,
                         {"valueQuantity": {"value": self.random.randint(55, 95), "unit": "/min", "system": UCUM,
                                            "code": "/min"}})

    def _red_flag(self, pid: str, coded: str) -> dict[str, Any]:
        if coded == "cpt":
            return {"resourceType": "Procedure", "id": f"{pid}-proc", "status": "completed",
                    "subject": {"reference": f"Patient/{pid}"}, "performedDateTime": self._date(60),
                    "code": {"coding": [{"system": CPT, "code": "29881"}]}}
        code = (ICD, "M25.461") if coded == "icd" else (SNOMED, "125601008")
        return {"resourceType": "Condition", "id": f"{pid}-cond", "subject": {"reference": f"Patient/{pid}"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "code": {"coding": [{"system": code[0], "code": code[1]}]}, "onsetDateTime": self._date(5)}

    def _messy(self, pid: str, side: str, mess: str, days: int) -> dict[str, Any]:
        if mess == "kg":
            return self._obs(pid, "hhd-kg", (LOCAL, "hip-flexion-hhd-seated-endrange"), days,
                             self._site(SNOMED, "24136001", side),
                             {"valueQuantity": {"value": 10, "unit": "kg", "system": UCUM, "code": "kg"}})
        if mess == "no-side":
            return self._obs(pid, "mmt-noside", (LOCAL, "hip-flexion-mmt-seated-standard"), days,
                             self._site(SNOMED, "24136001", None),
                             {"valueCodeableConcept": {"coding": [{"system": MRC, "code": "5"}]}})
        return self._obs(pid, f"mmt-{mess}", (LOCAL, "hip-flexion-mmt-seated-standard"), days,
                         self._site(SNOMED, "24136001", side),
                         {"valueCodeableConcept": {"coding": [{"system": MRC, "code": "5"}]}}, status=mess)


def _other(side: str) -> str:
    return "left" if side == "right" else "right"


def synthesise(patients: int, seed: int, out: Path, *, as_of: dt.date, per_file: int = 5000,
               compress: bool = False) -> dict[str, int]:
    """Write the export to `out` (several files per type once a file holds `per_file` lines); counts by type."""
    out.mkdir(parents=True, exist_ok=True)
    synth, writers, counts = Synth(seed, as_of), _Writers(out, per_file, compress), dict.fromkeys(TYPES, 0)
    try:
        for index in range(patients):
            for resource in synth.patient(index):
                writers.write(resource)
                counts[resource["resourceType"]] += 1
    finally:
        writers.close()
    return counts


class _Writers:
    """One open NDJSON file per type, rolled over every `per_file` lines: `Observation.000.ndjson[.gz]`."""

    def __init__(self, out: Path, per_file: int, compress: bool) -> None:
        self.out, self.per_file, self.compress = out, per_file, compress
        self.files: dict[str, Any] = {}
        self.lines: dict[str, int] = {}

    def write(self, resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        count = self.lines.get(rtype, 0)
        if count % self.per_file == 0:
            if rtype in self.files:
                self.files[rtype].close()
            name = f"{rtype}.{count // self.per_file:03d}.ndjson" + (".gz" if self.compress else "")
            path = self.out / name
            # Kept open across writes and closed in close(); gzip with mtime 0 so a seed gives identical bytes.
            raw = gzip.GzipFile(path, "wb", mtime=0) if self.compress else path.open("wb")
            self.files[rtype] = io.TextIOWrapper(raw, encoding="utf-8")
        self.files[rtype].write(json.dumps(resource, separators=(",", ":")) + "\n")
        self.lines[rtype] = count + 1

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
