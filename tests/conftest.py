"""Fixtures: the real content files and pipeline, stores on both backends, servers, signed tokens."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from playwright.sync_api import Browser, sync_playwright

from cds.clinical.pipeline import Pipeline
from cds.content.rules import RuleSet, load_rules
from cds.content.terminology import Terminology, load_terminology
from cds.hooks.call import HookCalls
from cds.hooks.fhirclient import FhirReader
from cds.hooks.store import Store, engine_url
from cds.hooks.store import metadata as store_tables
from cds.settings import FhirReads, Settings
from tests.support.builders import Facts
from tests.support.paths import RULES
from tests.support.pgcluster import server_binaries, throwaway_cluster
from tests.support.servers import FhirStub, fhir_server, running, service_settings
from tests.support.signing import ISSUER, Signer

# Every card the tests see, in this process and in the servers they start, is checked against the CDS Hooks
# response models as it is built (production assembles cards from parts validated at start-up).
os.environ.setdefault("HIPFLEX_CHECK_CARDS", "1")


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
def hook_caller(pipeline: Pipeline) -> HookCalls:
    """The service's hook call without HTTP or store (scenarios, CLI parity)."""
    return HookCalls(pipeline, FhirReader(FhirReads()))


@pytest.fixture
def facts() -> type[Facts]:
    return Facts



@pytest.fixture
def fhir_stub() -> Iterator[FhirStub]:
    with fhir_server() as stub:
        yield stub


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store on a fresh SQLite file (the backends themselves are compared in test_store.py)."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}", b"k")
    yield store
    store.close()


# ---- Debian's chromium, driven by Playwright (its own browser download does not work here) ----------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


# ---- the store's two backends: a SQLite file and a PostgreSQL cluster started for the session ------------

@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """HIPFLEX_TEST_DATABASE_URL if set, else a throwaway cluster of this session; with neither, PostgreSQL tests
    skip, unless HIPFLEX_TEST_POSTGRES=required (as `make test` sets): then they fail."""
    url = os.environ.get("HIPFLEX_TEST_DATABASE_URL")
    binaries = server_binaries()
    if url or binaries is None:
        yield url
        return
    with throwaway_cluster(binaries) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url: str | None = request.getfixturevalue("postgres_url")
    if not url:
        if os.environ.get("HIPFLEX_TEST_POSTGRES") == "required":
            pytest.fail("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        pytest.skip("no PostgreSQL: install Debian's postgresql (make test does) or set HIPFLEX_TEST_DATABASE_URL")
    engine = sa.create_engine(engine_url(url))
    store_tables.drop_all(engine)
    engine.dispose()
    return url


# ---- JWTs signed with keys the tests generate ----------------------------------------------------

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


# ---- the service @service scenarios run through (the step vocabulary is the plugin tests/support/steps.py) -----

@pytest.fixture(scope="session")
def feature_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The HTTP service for @service scenarios, as of the scenarios' visit date."""
    from cds.web.app import create_app

    with running(create_app(service_settings(tmp_path_factory.mktemp("features")))) as url:
        yield url
