"""One typed settings object, read from HIPFLEX_* environment variables and checked at start-up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "var"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIPFLEX_", extra="ignore")

    rules_dir: Path = Field(default=PROJECT_ROOT / "rules", description="Folder with the content files")
    rule_file: str = Field(default="knee-hip-v1.yaml", description="Rule file inside rules_dir")
    include_draft_rules: bool = Field(default=False, description="Also run rules with status 'draft'")
    lookback_days: int = Field(default=90, ge=1, le=3650, description="Older observations are not used")
    as_of: dt.date | None = Field(default=None, description="Evaluate as of this date instead of today (replays)")
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                                   description="Externally visible base URL; JWT `aud` is checked against it")
    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Larger request bodies get 413")
    database_url: str = Field(default=f"sqlite:///{DATA_DIR / 'hipflex.sqlite3'}",
                              validation_alias=AliasChoices("DATABASE_URL", "HIPFLEX_DATABASE_URL"),
                              description="sqlite:///path or postgresql://user:pass@host/db")
    patient_hash_key: str | None = Field(default=None, repr=False,
                                         description="HMAC key for patient hashes; else a key file in var/")
    patient_key_file: Path = Field(default=DATA_DIR / "patient-hash.key")
    issuers_file: Path | None = Field(default=None, description="Trusted JWT issuers (YAML); unset = auth off")
    jwt_max_lifetime_seconds: int = Field(default=3600, ge=60, description="Longer-lived JWTs are refused")
    cors_origins: list[str] = Field(default_factory=list, description='Browser origins allowed, e.g. ["*"]')
    fhir_connect_seconds: float = Field(default=2.0, gt=0, le=30)
    fhir_read_seconds: float = Field(default=5.0, gt=0, le=60)
    fhir_max_bytes: int = Field(default=5_000_000, ge=1024)
    fhir_max_pages: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _aud_needs_public_url(self) -> Settings:
        if self.issuers_file is not None and not self.public_url:
            raise ValueError("HIPFLEX_PUBLIC_URL is required with HIPFLEX_ISSUERS_FILE: JWT aud is checked "
                             "against the service's public URL, never against the Host header")
        return self
