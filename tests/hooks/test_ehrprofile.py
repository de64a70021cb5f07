"""Per-EHR profiles on a real server: two issuers of one service get different discovery documents, card lengths,
links, error bodies and token rules; the registration sheet comes from the same configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from cds.clinical.response import CDSResponse
from cds.hooks.ehrprofile import EhrProfile
from cds.web.app import create_app
from tests.support.builders import hook_request
from tests.support.servers import running, service_settings
from tests.support.signing import ISSUER, Signer

PUBLIC = "https://cds.example.org"
NARROW = "https://narrow-ehr.example"
PATIENT_VIEW = "/cds-services/hipflex-patient-view"
NARROW_PROFILE = {"hooks": ["patient-view"], "detail_chars": 200, "links": "none", "error_format": "operation-outcome",
                  "algorithms": ["RS384"], "max_lifetime_seconds": 300}


@pytest.fixture
def issuers(tmp_path: Path, signer: Signer) -> Path:
    (tmp_path / "wide.json").write_text(json.dumps(signer.jwks()))
    (tmp_path / "narrow.json").write_text(json.dumps({"keys": [signer.jwks()["keys"][1] | {"kid": "n-1"}]}))
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [
        {"iss": ISSUER, "jwks_file": "wide.json"},
        {"iss": NARROW, "jwks_file": "narrow.json", "profile": NARROW_PROFILE}]}))
    return path


@pytest.fixture
def service(tmp_path: Path, issuers: Path) -> Iterator[str]:
    with running(create_app(service_settings(tmp_path, issuers_file=issuers, public_url=PUBLIC))) as url:
        yield url


def wide(signer: Signer, path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(PUBLIC + path)}"}


def narrow(signer: Signer, path: str, **options: object) -> dict[str, str]:
    token = signer.token(PUBLIC + path, alg=str(options.pop("alg", "RS384")), iss=NARROW, headers={"kid": "n-1"},
                         **options)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def test_two_ehrs_get_their_own_discovery_cards_and_links(service: str, signer: Signer) -> None:
    wide_discovery = httpx.get(f"{service}/cds-services", headers=wide(signer, "/cds-services")).json()
    narrow_discovery = httpx.get(f"{service}/cds-services", headers=narrow(signer, "/cds-services")).json()
    assert [s["hook"] for s in wide_discovery["services"]] == ["patient-view", "encounter-start", "order-select"]
    assert [s["hook"] for s in narrow_discovery["services"]] == ["patient-view"]
    wide_cards = httpx.post(f"{service}{PATIENT_VIEW}", json=hook_request(), headers=wide(signer, PATIENT_VIEW))
    narrow_cards = httpx.post(f"{service}{PATIENT_VIEW}", json=hook_request(), headers=narrow(signer, PATIENT_VIEW))
    assert wide_cards.status_code == narrow_cards.status_code == 200
    long, short = wide_cards.json()["cards"], narrow_cards.json()["cards"]
    assert all(len(c["detail"]) > 200 for c in long)
    assert all(len(c["detail"]) <= 200 for c in short)
    assert all(c["detail"].endswith("…") for c in short)  # no link to point at: the cut is marked
    assert all(c["links"][0]["url"].startswith(PUBLIC) for c in long)
    assert all("links" not in c and "url" not in c["source"] for c in short)
    CDSResponse.model_validate(narrow_cards.json())  # still a valid CDS Hooks response


def test_a_hook_the_profile_does_not_offer_is_an_unknown_service_in_its_error_format(service: str,
                                                                                    signer: Signer) -> None:
    path = "/cds-services/hipflex-order-select"
    refused = httpx.post(f"{service}{path}", json=hook_request("order-select"), headers=narrow(signer, path))
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("application/fhir+json")
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert "for this EHR" in outcome["issue"][0]["diagnostics"]
    wide_error = httpx.post(f"{service}{PATIENT_VIEW}", content=b"{", headers={
        "Content-Type": "application/json"} | wide(signer, PATIENT_VIEW))
    assert wide_error.json()["error"] == "invalid-json"  # the other EHR keeps this service's JSON


@pytest.mark.parametrize(("options", "says"), [({"alg": "ES384"}, "this issuer signs with RS384, not ES384"),
                                               ({"lifetime": 600}, "the token lives longer than 300 s")])
def test_an_ehrs_token_rules_hold_for_its_issuer_alone(service: str, signer: Signer, options: dict[str, object],
                                                       says: str) -> None:
    headers = narrow(signer, PATIENT_VIEW, **options) if "alg" not in options else {
        "Authorization": "Bearer " + signer.token(PUBLIC + PATIENT_VIEW, alg="ES384", iss=NARROW,
                                                  headers={"kid": "n-1"})}
    refused = httpx.post(f"{service}{PATIENT_VIEW}", json=hook_request(), headers=headers)
    assert refused.status_code == 401
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert says in refused.json()["issue"][0]["diagnostics"]
    allowed = httpx.post(f"{service}{PATIENT_VIEW}", json=hook_request(),
                         headers=wide(signer, PATIENT_VIEW))
    assert allowed.status_code == 200


def test_a_detail_is_cut_at_a_sentence_and_points_at_the_link_when_there_is_one() -> None:
    profile = EhrProfile(detail_chars=100)
    detail = ("First sentence is here. Second one follows; third part.\n\n"
              "A new paragraph that is long enough to be cut off here.")
    assert len(detail) > 100
    cut = profile._detail(detail, linked=True)
    assert cut == "First sentence is here. Second one follows; third part. (more under “Why this suggestion”)"
    assert len(cut or "") <= 100
    assert EhrProfile(detail_chars=100)._detail(detail, linked=False) == (
        "First sentence is here. Second one follows; third part.…")


def test_the_registration_sheet_comes_from_the_running_configuration(issuers: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cds.cli", "issuers", "sheet", NARROW], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HIPFLEX_ISSUERS_FILE": str(issuers),
                               "HIPFLEX_PUBLIC_URL": PUBLIC, "HIPFLEX_FHIR_SERVERS": '["https://fhir.example/r4"]'})
    assert done.returncode == 0, done.stderr
    sheet = done.stdout
    assert f"  patient-view     {PUBLIC}{PATIENT_VIEW}" in sheet
    assert "order-select" not in sheet
    assert "    patient: Patient/{{context.patientId}}" in sheet
    assert "  algorithms       RS384" in sheet
    assert "  token lifetime   at most 300 s" in sheet
    assert "FHIR servers read  https://fhir.example/r4" in sheet  # inherited: the issuer lists none
    assert "  detail           200 characters at most" in sheet
    assert "  error bodies     FHIR OperationOutcome" in sheet
    unknown = subprocess.run([sys.executable, "-m", "cds.cli", "issuers", "sheet", "https://nobody.example"],
                             capture_output=True, text=True, timeout=60, check=False,
                             env={"PATH": "/usr/bin:/bin", "HIPFLEX_ISSUERS_FILE": str(issuers),
                                  "HIPFLEX_PUBLIC_URL": PUBLIC})
    assert unknown.returncode == 2
    assert "'https://nobody.example' is not a trusted issuer" in unknown.stderr
