"""One typed settings object, read from HIPFLEX_* environment variables and checked at start-up."""

from __future__ import annotations

import datetime as dt
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from cds.errors import HipflexError

# Content shipped inside the package (the wheel holds copies of rules/ and fhir_examples/; a source
# checkout links them), so an installed service runs from any working directory.
PACKAGED = Path(str(files("cds") / "packaged"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIPFLEX_", extra="ignore")

    rules_dir: Path = Field(default=PACKAGED / "rules", description="Folder with the content files (default: packaged)")
    examples_dir: Path = Field(default=PACKAGED / "examples", description="Example bundles for the review page")
    data_dir: Path = Field(default=Path("var"), description="Where the SQLite file and the patient-hash key live "
                                                             "(relative to the working directory)")
    coverage_report: Path = Field(default=Path("test-artifacts/features/rule-coverage.json"),
                                  description="Scenario coverage per rule (from `make test`), on the rule page")
    concept_maps_dir: Path | None = Field(default=None, description="Folder of FHIR ConceptMaps from a site's codes "
                                                                  "to the project's")
    rule_path: Path | None = Field(default=None, description="A rule file anywhere (else rules_dir/rule_file); "
                                                             "the terminology and card texts stay rules_dir's")
    rule_file: str = Field(default="knee-hip-v1.yaml", description="Rule file inside rules_dir")
    include_draft_rules: bool = Field(default=False, description="Also run rules with status 'draft'")
    lookback_days: int = Field(default=90, ge=1, le=3650, description="Older observations are not used")
    as_of: dt.date | None = Field(default=None, description="Evaluate as of this date instead of today (replays)")
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                                   description="Externally visible base URL; JWT `aud` is checked against it")
    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Larger request bodies get 413")
    database_url: str = Field(default="",
                              validation_alias=AliasChoices("DATABASE_URL", "HIPFLEX_DATABASE_URL"),
                              description="sqlite:///path or postgresql://user:pass@host/db; "
                                          "default: a SQLite file in data_dir")
    patient_hash_key: str | None = Field(default=None, repr=False,
                                         description="HMAC key for patient hashes; else a key file in data_dir")
    patient_key_file: Path | None = Field(default=None, description="default: data_dir/patient-hash.key")
    issuers_file: Path | None = Field(default=None, description="Trusted JWT issuers (YAML); unset = auth off")
    jwt_max_lifetime_seconds: int = Field(default=3600, ge=60, description="Longer-lived JWTs are refused")
    cors_origins: list[str] = Field(default_factory=list, description='Browser origins allowed, e.g. ["*"]')
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description='Host names answered besides loopback, the bind address and the '
                                                 'public URL\'s host, e.g. ["cds.internal"] (["*"]: any)')
    fhir_connect_seconds: float = Field(default=2.0, gt=0, le=30, description="Connecting to the EHR's FHIR server")
    fhir_read_seconds: float = Field(default=5.0, gt=0, le=60, description="Between bytes of one FHIR answer")
    fhir_max_bytes: int = Field(default=5_000_000, ge=1024, description="One FHIR answer (larger: unavailable)")
    fhir_max_pages: int = Field(default=5, ge=1, le=100, description="`next` pages of one search, same server only")
    fhir_deadline_seconds: float = Field(default=5.0, gt=0, le=60,
                                         description="All reads of one hook call together end by then")
    fhir_call_bytes: int = Field(default=8_000_000, ge=1024,
                                 description="All reads of one hook call together may take this many bytes")
    fhir_servers: list[str] = Field(default_factory=list,
                                    description="fhirServer base URLs the service may read from: while authentication "
                                                "is off, and for a trusted issuer that lists no fhir_servers")
    max_connections: int = Field(default=1000, ge=10, description="Open connections (and tasks) per worker; beyond "
                                                                  "them new requests get 503")
    keep_alive_seconds: float = Field(default=5.0, gt=0, le=300, description="An idle keep-alive connection is "
                                                                              "closed after this")
    request_head_seconds: float = Field(default=10.0, gt=0, le=300,
                                        description="A connection's request line and headers must arrive within this")
    request_body_seconds: float = Field(default=30.0, gt=0, le=3600,
                                        description="A request body must arrive within this of its headers (408)")
    max_calls_in_flight: int = Field(default=64, ge=1, description="More hook calls at once get 503 + Retry-After")
    max_feedback_items: int = Field(default=100, ge=1, description="Feedback items in one call")
    decision_cache_size: int = Field(default=256, ge=0, description="Evaluations kept by content (0: off)")
    decision_cache_bytes: int = Field(default=64_000_000, ge=0,
                                      description="The decision cache's memory bound (estimated); one evaluation "
                                                  "over a quarter of it is not kept")
    max_resources: int = Field(default=2000, ge=10, description="FHIR resources one hook call may carry or fetch")
    large_call_resources: int = Field(default=300, ge=1,
                                      description="A call with more resources is large: large calls are decided "
                                                  "one at a time, beside the ordinary ones")
    max_large_calls_waiting: int = Field(default=4, ge=0,
                                         description="Large calls waiting their turn; more get 503 + Retry-After")
    terminology_server: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                                           description="A FHIR terminology server holding SNOMED CT and the "
                                                       "ValueSets of rules/valuesets/ ($validate-code answers "
                                                       "descendants); unset = the shipped sets only")
    terminology_deadline_seconds: float = Field(default=2.0, gt=0, le=30,
                                                description="All terminology look-ups of one call end by then")

    @model_validator(mode="after")
    def _data_dir_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'hipflex.sqlite3'}"
        if self.patient_key_file is None:
            self.patient_key_file = self.data_dir / "patient-hash.key"
        return self

    @property
    def key_file(self) -> Path:
        return self.patient_key_file or self.data_dir / "patient-hash.key"

    @model_validator(mode="after")
    def _aud_needs_public_url(self) -> Settings:
        if self.issuers_file is not None and not self.public_url:
            raise ValueError("HIPFLEX_PUBLIC_URL is required with HIPFLEX_ISSUERS_FILE: JWT aud is checked "
                             "against the service's public URL, never against the Host header")
        return self


class ConfigurationError(HipflexError):
    """A setting that cannot be used; the message is one line naming the environment variable."""


def variable(field: str) -> str:
    """The environment variable a settings field is read from."""
    return "DATABASE_URL" if field == "database_url" else f"HIPFLEX_{field.upper()}"


def masked(url: str) -> str:
    """A URL with its password replaced, fit for an error message."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", url)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, or ConfigurationError saying which variable is wrong and why."""
    try:
        return Settings(**overrides)
    except PydanticSettingsError as exc:
        found = re.search(r'field "(\w+)"', str(exc))
        name = variable(found.group(1)) if found else "a HIPFLEX_* variable"
        raise ConfigurationError(f"{name}: not valid JSON (a list is written like [\"https://a.example\"])") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            message = "not an http(s) URL such as https://cds.example.org"
        if not error["loc"]:
            raise ConfigurationError(message) from None
        field = str(error["loc"][0])
        shown = str(error.get("input", ""))[:80]
        shown = masked(shown) if field == "database_url" else shown
        raise ConfigurationError(f"{variable(field)}={shown!r}: {message[:1].lower()}{message[1:]}") from None
