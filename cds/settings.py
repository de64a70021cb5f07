"""One typed settings object in groups (content, FHIR reads, terminology, authentication, store, limits), read
from HIPFLEX_* environment variables and checked at start-up; every default is written once, here."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from cds.errors import HipflexError

# Content shipped inside the package (the wheel holds copies of rules/ and fhir_examples/; a source
# checkout links them), so an installed service runs from any working directory.
PACKAGED = Path(str(files("cds") / "packaged"))


URL = r"^https?://[^\s/]+(/[^\s]*)?$"
DEFAULT_RULE_FILE = "knee-hip-v1.yaml"


class _Group(BaseModel):
    """Settings about one thing. Each field is read from `HIPFLEX_` + PREFIX + its name in capitals (the names
    the flat settings had, so no deployment changes); `Settings(fhir_read_seconds=1)` works the same way."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    PREFIX: ClassVar[str] = ""


class ContentFiles(_Group):
    """Where the content comes from."""

    rules_dir: Path = Field(default=PACKAGED / "rules", description="Folder with the content files (default: packaged)")
    rule_path: Path | None = Field(default=None, description=f"The rule file: a path anywhere, or a name inside "
                                                             f"rules_dir (default: {DEFAULT_RULE_FILE}); the "
                                                             "terminology and card texts stay rules_dir's")
    include_draft_rules: bool = Field(default=False, description="Also run rules with status 'draft'")
    check_cards: bool = Field(default=False, description="Validate every card against the CDS Hooks response "
                                                         "models as it is built (the tests do; about 0.3 ms a card)")
    concept_maps_dir: Path | None = Field(default=None, description="Folder of FHIR ConceptMaps from a site's codes "
                                                                  "to the project's")
    examples_dir: Path = Field(default=PACKAGED / "examples", description="Example bundles for the review page")
    coverage_report: Path | None = Field(default=None, description="Scenario coverage per rule, shown on the rule "
                                                                   "pages (`make test` writes test-artifacts/"
                                                                   "features/rule-coverage.json; `make run` uses it)")

    @property
    def rule_file(self) -> Path:
        return self.rules_dir / (self.rule_path or DEFAULT_RULE_FILE)  # an absolute rule_path stands on its own


class FhirReads(_Group):
    """How the service reads an EHR's FHIR server, and which ones it may read."""

    PREFIX = "fhir_"
    connect_seconds: float = Field(default=2.0, gt=0, le=30, description="Connecting to the EHR's FHIR server")
    read_seconds: float = Field(default=5.0, gt=0, le=60, description="Between bytes of one FHIR answer")
    max_bytes: int = Field(default=5_000_000, ge=1024, description="One FHIR answer (larger: unavailable)")
    max_pages: int = Field(default=5, ge=1, le=100, description="`next` pages of one search, same server only")
    deadline_seconds: float = Field(default=5.0, gt=0, le=60, description="All reads of one hook call together end "
                                                                          "by then")
    call_bytes: int = Field(default=8_000_000, ge=1024, description="All reads of one hook call together may take "
                                                                    "this many bytes")
    servers: list[str] = Field(default_factory=list, description="fhirServer base URLs the service may read from: "
                                                                 "while authentication is off, and for a trusted "
                                                                 "issuer that lists no fhir_servers")


class TerminologyReads(_Group):
    """An optional terminology server for SNOMED CT descendants."""

    PREFIX = "terminology_"
    server: str | None = Field(default=None, pattern=URL,
                               description="A FHIR terminology server holding SNOMED CT and the ValueSets of "
                                           "rules/valuesets/ ($validate-code answers descendants); unset = the "
                                           "shipped sets only")
    deadline_seconds: float = Field(default=2.0, gt=0, le=30, description="All terminology look-ups of one call end "
                                                                          "by then")


class Authentication(_Group):
    """Who may call: trusted JWT issuers, and the URL their tokens' `aud` must name."""

    issuers_file: Path | None = Field(default=None, description="Trusted JWT issuers (YAML); unset = auth off")
    jwt_max_lifetime_seconds: int = Field(default=3600, ge=60, description="Longer-lived JWTs are refused")
    public_url: str | None = Field(default=None, pattern=URL,
                                   description="Externally visible base URL; JWT `aud` is checked against it")
    cors_origins: list[str] = Field(default_factory=list, description='Browser origins allowed, e.g. ["*"]')
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description='Host names answered besides loopback, the bind address and the '
                                                 'public URL\'s host, e.g. ["cds.internal"] (["*"]: any)')


class StoreSettings(_Group):
    """Where issued cards, feedback and seen JWT ids are kept, and the key patient ids are hashed with."""

    data_dir: Path = Field(default=Path("var"), description="Where the SQLite file and the patient-hash key live "
                                                             "(relative to the working directory)")
    database_url: str = Field(default="", description="sqlite:///path or postgresql://user:pass@host/db; default: "
                                                      "a SQLite file in data_dir")
    patient_hash_key: str | None = Field(default=None, repr=False,
                                         description="HMAC key for patient hashes; else a key file in data_dir")
    patient_key_file: Path | None = Field(default=None, description="default: data_dir/patient-hash.key")
    snapshot_retention_days: int = Field(default=400, ge=0, le=3650,
                                         description="De-identified facts kept with issued cards for replay, then "
                                                     "deleted (0: none kept)")

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hipflex.sqlite3'}"

    @property
    def key_file(self) -> Path:
        return self.patient_key_file or self.data_dir / "patient-hash.key"


class Releases(_Group):
    """How the service follows the releases in its store (`hipflex-cds release`)."""

    PREFIX = "release_"
    check_seconds: float = Field(default=10.0, gt=0, le=3600, description="How often a worker looks for a new "
                                                                          "active or shadow release")
    shadow_max_waiting: int = Field(default=32, ge=1, description="Calls waiting for their shadow decision; beyond "
                                                                  "them a call is not shadowed (counted)")


class Limits(_Group):
    """What one request, connection or call may cost, so one caller cannot take the service from the others."""

    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Larger request bodies get 413")
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
    max_resources: int = Field(default=2000, ge=10, description="FHIR resources one hook call may carry or fetch")
    large_call_resources: int = Field(default=300, ge=1,
                                      description="A call with more resources is large: large calls are decided "
                                                  "one at a time, beside the ordinary ones")
    max_large_calls_waiting: int = Field(default=4, ge=0,
                                         description="Large calls waiting their turn; more get 503 + Retry-After")
    decision_cache_size: int = Field(default=256, ge=0, description="Evaluations kept by content (0: off)")
    decision_cache_bytes: int = Field(default=64_000_000, ge=0,
                                      description="The decision cache's memory bound (estimated); one evaluation "
                                                  "over a quarter of it is not kept")


GROUPS: dict[str, type[_Group]] = {"content": ContentFiles, "fhir": FhirReads, "terminology": TerminologyReads,
                                   "auth": Authentication, "store": StoreSettings, "releases": Releases,
                                   "limits": Limits}
ALIASES = {"database_url": ("DATABASE_URL", "HIPFLEX_DATABASE_URL"), "rule_path": ("HIPFLEX_RULE_PATH",
                                                                                    "HIPFLEX_RULE_FILE")}


def flat_names() -> dict[str, tuple[str, str]]:
    """Every grouped setting's flat name (as in the environment, less HIPFLEX_) -> (group, field)."""
    return {model.PREFIX + name: (group, name) for group, model in GROUPS.items() for name in model.model_fields}


class Settings(BaseSettings):
    """Every setting, grouped (`settings.fhir.read_seconds`), each with its one default, read from the environment
    at start-up; `lookback_days` and `as_of` shape every decision, so they stay at the top."""

    model_config = SettingsConfigDict(env_prefix="HIPFLEX_", extra="ignore")

    content: ContentFiles = Field(default_factory=ContentFiles)
    fhir: FhirReads = Field(default_factory=FhirReads)
    terminology: TerminologyReads = Field(default_factory=TerminologyReads)
    auth: Authentication = Field(default_factory=Authentication)
    store: StoreSettings = Field(default_factory=StoreSettings)
    releases: Releases = Field(default_factory=Releases)
    limits: Limits = Field(default_factory=Limits)
    lookback_days: int = Field(default=90, ge=1, le=3650, description="Older observations are not used")
    as_of: dt.date | None = Field(default=None, description="Evaluate as of this date instead of today (replays)")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
                                   file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - nor secrets
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, FlatEnvironment(settings_cls), env_settings

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: Any) -> Any:
        """`fhir_read_seconds=1` (from the environment or a caller) becomes `fhir={"read_seconds": 1}`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for flat, (group, name) in flat_names().items():
            if flat in data:
                value = data.pop(flat)
                current = data.get(group)
                merged = current.model_dump(exclude_unset=True) if isinstance(current, BaseModel) else dict(
                    current or {})
                data[group] = {name: value} | merged if group in data else {name: value}
        return data

    @model_validator(mode="after")
    def _aud_needs_public_url(self) -> Settings:
        if self.auth.issuers_file is not None and not self.auth.public_url:
            raise ValueError("HIPFLEX_PUBLIC_URL is required with HIPFLEX_ISSUERS_FILE: JWT aud is checked "
                             "against the service's public URL, never against the Host header")
        return self

    def with_flat(self, **values: Any) -> Settings:
        """A copy with some settings changed by flat name (`rule_path=...`, `decision_cache_size=0`), each changed
        group checked again."""
        groups: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for flat, value in values.items():
            if flat in type(self).model_fields:
                top[flat] = value
                continue
            group, name = flat_names()[flat]
            groups[group] = groups.get(group, getattr(self, group).model_dump()) | {name: value}
        return self.model_copy(update=top | {g: GROUPS[g].model_validate(v) for g, v in groups.items()})


class FlatEnvironment(PydanticBaseSettingsSource):
    """The grouped settings from their flat variables (HIPFLEX_FHIR_READ_SECONDS), lists as JSON."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002
        return None, field_name, False  # unused: __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        environment = {k.upper(): v for k, v in os.environ.items()}
        found: dict[str, Any] = {}
        for flat, (group, name) in flat_names().items():
            names = ALIASES.get(flat, (variable(flat),))
            value = next((environment[n] for n in names if n in environment), None)
            if value is None:
                continue
            if get_origin(GROUPS[group].model_fields[name].annotation) is list:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise ConfigurationError(f"{variable(flat)}: not valid JSON (a list is written like "
                                             "[\"https://a.example\"])") from None
            found[flat] = value
        return found


class ConfigurationError(HipflexError):
    """A setting that cannot be used; the message is one line naming the environment variable."""


def variable(field: str) -> str:
    """The environment variable a setting is read from, by its flat name (`fhir_read_seconds`)."""
    return "DATABASE_URL" if field == "database_url" else f"HIPFLEX_{field.upper()}"


def flat_name(loc: tuple[int | str, ...]) -> str:
    """The flat name of the setting at a validation error's location (('fhir', 'read_seconds'))."""
    if len(loc) >= 2 and str(loc[0]) in GROUPS:
        return GROUPS[str(loc[0])].PREFIX + str(loc[1])
    return str(loc[0])


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
        field = flat_name(error["loc"])
        shown = str(error.get("input", ""))[:80]
        shown = masked(shown) if field == "database_url" else shown
        raise ConfigurationError(f"{variable(field)}={shown!r}: {message[:1].lower()}{message[1:]}") from None
