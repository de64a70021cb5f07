"""One typed settings object, read from HIPFLEX_* environment variables and checked at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIPFLEX_", extra="ignore")

    rules_dir: Path = Field(default=PROJECT_ROOT / "rules", description="Folder with the content files")
    rule_file: str = Field(default="knee-hip-v1.yaml", description="Rule file inside rules_dir")
    include_draft_rules: bool = Field(default=False, description="Also run rules with status 'draft'")
    lookback_days: int = Field(default=90, ge=1, le=3650, description="Older observations are not used")
    public_url: str | None = Field(default=None, description="Externally visible base URL of the service")
    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Larger request bodies get 413")
