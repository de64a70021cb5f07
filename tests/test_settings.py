"""Settings: grouped models read from the flat HIPFLEX_* variables deployments already use, every default once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cds.settings import GROUPS, ConfigurationError, Settings, load_settings
from tests.support.configreference import settings_by_flat_name


def test_flat_variables_fill_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPFLEX_FHIR_READ_SECONDS", "3.5")
    monkeypatch.setenv("HIPFLEX_FHIR_SERVERS", '["https://ehr.example/fhir"]')
    monkeypatch.setenv("HIPFLEX_MAX_BODY_BYTES", "200000")
    monkeypatch.setenv("HIPFLEX_TERMINOLOGY_SERVER", "https://tx.example/fhir")
    monkeypatch.setenv("HIPFLEX_LOOKBACK_DAYS", "30")
    settings = load_settings()
    assert settings.fhir.read_seconds == 3.5
    assert settings.fhir.servers == ["https://ehr.example/fhir"]
    assert settings.limits.max_body_bytes == 200_000
    assert settings.terminology.server == "https://tx.example/fhir"
    assert settings.lookback_days == 30
    assert settings.fhir.connect_seconds == 2.0  # untouched: its one default


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPFLEX_FHIR_READ_SECONDS", "3.5")
    monkeypatch.setenv("HIPFLEX_FHIR_MAX_PAGES", "7")
    settings = Settings(fhir_read_seconds=1)
    assert (settings.fhir.read_seconds, settings.fhir.max_pages) == (1, 7)


def test_the_old_second_names_still_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    monkeypatch.setenv("HIPFLEX_RULE_FILE", "other.yaml")
    settings = load_settings()
    assert settings.store.url == f"sqlite:///{tmp_path / 'x.sqlite3'}"
    assert settings.content.rule_file == settings.content.rules_dir / "other.yaml"


def test_an_absolute_rule_path_stands_on_its_own(tmp_path: Path) -> None:
    assert Settings(rule_path=tmp_path / "r.yaml").content.rule_file == tmp_path / "r.yaml"
    assert Settings().content.rule_file.name == "knee-hip-v1.yaml"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("HIPFLEX_FHIR_READ_SECONDS", "0", "HIPFLEX_FHIR_READ_SECONDS='0': input should be greater than 0"),
    ("HIPFLEX_FHIR_SERVERS", "https://a.example", "HIPFLEX_FHIR_SERVERS: not valid JSON"),
    ("HIPFLEX_TERMINOLOGY_SERVER", "ftp://x", "HIPFLEX_TERMINOLOGY_SERVER='ftp://x': not an http(s) URL"),
    ("HIPFLEX_MAX_RESOURCES", "many", "HIPFLEX_MAX_RESOURCES='many': input should be a valid integer"),
])
def test_a_bad_grouped_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_copy_with_changed_settings_is_checked_again() -> None:
    settings = Settings(fhir_max_pages=3)
    changed = settings.with_flat(decision_cache_size=0, lookback_days=10)
    assert (changed.limits.decision_cache_size, changed.lookback_days, changed.fhir.max_pages) == (0, 10, 3)
    assert settings.limits.decision_cache_size == 256
    with pytest.raises(ValidationError):
        settings.with_flat(fhir_read_seconds=0)


def test_no_default_points_into_a_test_folder() -> None:
    defaults = [str(info.get_default(call_default_factory=True)) for info in settings_by_flat_name().values()]
    assert not [d for d in defaults if "test" in d]


def test_every_flat_name_is_unique_across_groups() -> None:
    names = [model.PREFIX + name for model in GROUPS.values() for name in model.model_fields]
    assert len(names) == len(set(names))
    assert not set(names) & set(Settings.model_fields)
