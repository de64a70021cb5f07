"""Shared fixtures: the real content files, the real pipeline, and builders for facts."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
import uvicorn
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.clinical.pipeline import Pipeline
from cds.clinical.validate import bundle_resources
from cds.content.facts import (
    AgeFact,
    AudienceFact,
    GaitFact,
    HhdAsymmetryFact,
    HhdFact,
    HyperextensionFact,
    InputFact,
    KneeConditionFact,
    MmtFact,
    PainSiteFact,
    RedFlagFact,
    ReferralFact,
    RejectedInputFact,
)
from cds.content.rules import RuleSet, load_rules
from cds.content.terminology import Terminology, load_terminology
from cds.hooks.call import HookCaller
from cds.hooks.prefetch import FetchLimits, FhirReader, prefetch_from, prefetch_templates
from cds.hooks.store import Store
from cds.hooks.store import metadata as store_tables
from cds.settings import PROJECT_ROOT, Settings

EXAMPLES = PROJECT_ROOT / "fhir_examples"
RULES = PROJECT_ROOT / "rules"
GRADES = ["0", "1", "2", "3-", "3", "3+", "4-", "4", "4+", "5-", "5"]


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    return load_terminology(RULES / "terminology.yaml")


@pytest.fixture(scope="session")
def ruleset(terminology: Terminology) -> RuleSet:
    return load_rules(RULES / "knee-hip-v1.yaml", terminology)


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(Settings())


@pytest.fixture(scope="session")
def hook_caller(pipeline: Pipeline) -> Iterator[HookCaller]:
    """The service's hook call without HTTP or store (scenarios, CLI parity)."""
    reader = FhirReader(FetchLimits())
    yield HookCaller(pipeline, reader)
    reader.close()


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def expected_for(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((bundle.parent / bundle.name.replace(".json", ".expected.yaml")).read_text())
    return data


def load_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


AS_OF = dt.date(2026, 11, 24)


class Facts:
    """Builders for engine facts, so rule tests read like the decision table."""

    @staticmethod
    def adult(age: int = 30, role: str = "practitioner") -> list[InputFact]:
        return [AgeFact(id="age", years=age), AudienceFact(id="audience", role=role)]  # type: ignore[arg-type]

    @staticmethod
    def mmt(side: str, grade: str, standard: bool = False) -> MmtFact:
        kind = "standard-mmt" if standard else "end-range-mmt"
        return MmtFact(id=f"{kind}:{side}", kind=kind, side=side, grade=grade,  # type: ignore[arg-type]
                       grade_rank=GRADES.index(grade))

    @staticmethod
    def hhd(side: str, newtons: float) -> HhdFact:
        return HhdFact(id=f"hhd:{side}", side=side, newtons=newtons)  # type: ignore[arg-type]

    @staticmethod
    def asymmetry(weaker: str, percent: float) -> HhdAsymmetryFact:
        return HhdAsymmetryFact(id="hhd-asymmetry", side=weaker, percent=percent)  # type: ignore[arg-type]

    @staticmethod
    def hyperextension(side: str, degrees: float) -> HyperextensionFact:
        return HyperextensionFact(id=f"hyper:{side}", side=side, degrees=degrees)  # type: ignore[arg-type]

    @staticmethod
    def gait(side: str, seen: bool = True) -> GaitFact:
        return GaitFact(id=f"gait:{side}", side=side, observed="yes" if seen else "no")  # type: ignore[arg-type]

    @staticmethod
    def pain(side: str, site: str = "peripatellar") -> PainSiteFact:
        return PainSiteFact(id=f"pain:{side}:{site}", side=side, site=site)  # type: ignore[arg-type]

    @staticmethod
    def pfp(side: str) -> KneeConditionFact:
        return KneeConditionFact(id=f"pfp:{side}", side=side, condition="patellofemoral-pain")  # type: ignore[arg-type]

    @staticmethod
    def red_flag(flag: str = "knee-effusion") -> RedFlagFact:
        return RedFlagFact(id=f"flag:{flag}", flag=flag, display=flag)

    @staticmethod
    def referral() -> ReferralFact:
        return ReferralFact(id="referral")

    @staticmethod
    def rejected(kind: str = "end-range-mmt") -> RejectedInputFact:
        return RejectedInputFact(id=f"rejected:{kind}", input=kind)


@pytest.fixture
def facts() -> type[Facts]:
    return Facts


# ---- real servers: the service under uvicorn, and a FHIR server stub for the EHR side ------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (in this process, so logs can be captured)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def service_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test service: its own SQLite file, a fixed patient-hash key, the example date."""
    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp / 'hipflex.sqlite3'}", "patient_hash_key": "test-key",
                              "as_of": EXAMPLE_DATE}
    return Settings(**(values | overrides))


EXAMPLE_DATE = dt.date(2026, 11, 24)  # the example bundles' timestamp: their observations are 5 days old


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class FhirStub:
    """A real HTTP FHIR server on localhost serving canned JSON by path (with query), recording requests."""

    base: str
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay_seconds: float = 0.0

    def serve(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = (status, body)

    def paths(self) -> list[str]:
        return [s.path.split("?")[0] for s in self.seen]


@pytest.fixture
def fhir_stub() -> Iterator[FhirStub]:
    stub = FhirStub(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.seen.append(Seen("GET", self.path.removeprefix("/fhir/"), self.headers.get("Authorization")))
            time.sleep(stub.delay_seconds)
            path = urllib.parse.unquote(self.path.removeprefix("/fhir/"))
            status, body = stub.routes.get(path, stub.routes.get(path.split("?")[0], (404, None)))
            payload = json.dumps(body or {"resourceType": "OperationOutcome"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


# ---- CDS Hooks bodies built from the example patients ----------------------------------------------

def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def example_prefetch(name: str = "P01-classic-right.json") -> dict[str, Any]:
    """An example bundle split into the discovery's prefetch keys, as an EHR would send it."""
    templates = prefetch_templates(load_terminology(RULES / "terminology.yaml"))
    return prefetch_from(bundle_resources(load_json(EXAMPLES / name)), templates)


def hook_request(hook: str = "patient-view", name: str = "P01-classic-right.json", **overrides: Any) -> dict[str, Any]:
    prefetch = example_prefetch(name)
    context: dict[str, Any] = {"userId": "Practitioner/COREPRACTITIONER1", "patientId": prefetch["patient"]["id"]}
    if hook == "encounter-start":
        context["encounterId"] = "enc-1"
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}
    return body | overrides


# ---- the CDS Hooks 2.0 response rules, checked on plain JSON (independent of cds.clinical.response) ---

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assert_cds_response(body: dict[str, Any]) -> None:
    """S2 #cds-service-response and the LM invariants cds-resp-1…6, plus no nulls or empties (S2 #use-of-json)."""
    assert isinstance(body.get("cards"), list), "cards must always be present"
    assert set(body) <= {"cards", "systemActions", "extension"}
    assert_no_empties(body, "response")
    ids: list[str] = []
    for card in body["cards"]:
        assert isinstance(card["summary"], str)
        assert 0 < len(card["summary"]) < 140, card["summary"]
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        ids.append(card["uuid"])
        if card.get("suggestions"):
            assert card.get("selectionBehavior") in ("at-most-one", "any"), "cds-resp-6"
            if card["selectionBehavior"] == "at-most-one":
                assert sum(bool(s.get("isRecommended")) for s in card["suggestions"]) <= 1, "cds-resp-1"
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"]
            ids.append(suggestion["uuid"])
            for action in suggestion.get("actions", []):
                assert action["type"] in ("create", "update", "delete")
                assert action["description"], "cds-resp-5"
                if action["type"] == "create":
                    assert isinstance(action["resource"], dict)
                    assert action["resource"]["resourceType"]
                if action["type"] == "delete":
                    assert action.get("resourceId"), "cds-resp-2"
                    assert "resource" not in action, "cds-resp-2"
        for reason in card.get("overrideReasons", []):
            assert all(reason.get(k) for k in ("system", "code", "display")), "cds-resp-4"
        for link in card.get("links", []):
            assert all(link.get(k) for k in ("label", "url")), link
            assert link["type"] in ("absolute", "smart")
            assert link["type"] == "smart" or "appContext" not in link, "cds-resp-3"
    assert all(UUID_RE.match(i) for i in ids), ids
    assert len(ids) == len(set(ids)), "card and suggestion uuids must be unique"


def assert_no_empties(value: Any, where: str) -> None:
    assert value not in (None, "", {}), f"{where} is null or empty"
    if isinstance(value, dict):
        for key, item in value.items():
            if not (where == "response" and key == "cards"):
                assert item != [], f"{where}.{key} is an empty list"
            assert_no_empties(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_empties(item, f"{where}[{index}]")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store on a fresh SQLite file (the backends themselves are compared in test_store.py)."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"k")
    yield store
    store.close()


# ---- the store's two backends: a SQLite file and the PostgreSQL server `make test` starts -----------

@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url = os.environ.get("HIPFLEX_TEST_DATABASE_URL")
    if not url:
        pytest.skip("HIPFLEX_TEST_DATABASE_URL is not set; `make test` starts PostgreSQL and sets it")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    store_tables.drop_all(engine)
    engine.dispose()
    return url


# ---- JWTs signed with keys the tests generate ----------------------------------------------------

ISSUER = "https://ehr.example.org"


@dataclass
class Signer:
    """A CDS client's keys (EC P-384 and RSA) and its JWK Set; signs tokens like the sandbox or Epic."""

    ec: Any
    rsa: Any

    def jwks(self) -> dict[str, Any]:
        keys = [jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True) | {"kid": "ec-1"},
                jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True) | {"kid": "rsa-1"}]
        return {"keys": keys}

    def token(self, aud: str, *, alg: str = "ES384", lifetime: int = 300, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())} | claims
        key = self.ec if alg.startswith("ES") else self.rsa
        head = {"kid": "ec-1" if alg.startswith("ES") else "rsa-1", "typ": "JWT"} | (headers or {})
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=head)


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer(ec=ec.generate_private_key(ec.SECP384R1()), rsa=rsa.generate_private_key(65537, 2048))


@pytest.fixture
def issuers_file(tmp_path: Path, signer: Signer) -> Path:
    """A trusted-issuers file naming the test client with its JWK Set as a file."""
    (tmp_path / "client-jwks.json").write_text(json.dumps(signer.jwks()))
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [{"iss": ISSUER, "jwks_file": str(tmp_path / "client-jwks.json")}]}))
    return path


# ---- the service @service scenarios run through (the step vocabulary is the plugin tests/steps.py) -----

@pytest.fixture(scope="session")
def feature_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The HTTP service for @service scenarios, as of the scenarios' visit date."""
    from cds.web.app import create_app

    with running(create_app(service_settings(tmp_path_factory.mktemp("features")))) as url:
        yield url


def threshold_rules(folder: Path, count: int, op: str = "equals") -> Path:
    """A rule file of `count` one-condition rules on knee hyperextension, each with its own value (engine limits)."""
    content = {"ruleset": "thresholds", "version": "0.0.1",
               "parameters": {f"t{i}": {"value": i / 10, "unit": "deg", "description": "x"} for i in range(count)},
               "rules": [{"id": f"T{i}", "version": 1, "status": "active", "title": "threshold",
                          "evidence": {"grade": "E", "source": "test"},
                          "when": [{"fact": "knee-hyperextension", "side": "same", "degrees": {op: f"t{i}"}}],
                          "then": [{"derive": f"over-{i}"}]} for i in range(count)]}
    path = folder / f"thresholds-{count}-{op}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path
