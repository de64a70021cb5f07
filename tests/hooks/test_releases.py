"""Releases in the store, on SQLite and PostgreSQL: published once, switched from a moment on, listed by status."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from cds.content.release import read_release
from cds.hooks.liverelease import LiveReleases
from cds.hooks.releases import ReleaseRefused, current, listing, load, publish, switch
from cds.hooks.store import Store
from cds.settings import ConfigurationError, Settings
from tests.support.paths import RULES


def candidate(tmp_path: Path, version: str = "1.1.0") -> Path:
    folder = tmp_path / f"candidate-{version}"
    shutil.copytree(RULES, folder)
    manifest = folder / "release.yaml"
    manifest.write_text(manifest.read_text().replace("changelog:\n", f'changelog:\n  - version: {version}\n    '
                                                     'date: "2026-12-02"\n    approved_by: "Q"\n    changes: [x]\n'))
    return folder


def test_a_release_is_published_once_and_comes_back_whole(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url, b"k")
    release = read_release(candidate(tmp_path))
    assert publish(store, release) is True
    assert publish(store, release) is False  # the same again: nothing new
    assert load(store, "1.1.0").content_hash == release.content_hash
    assert load(store, "1.1.0").files == release.files
    store.close()


def test_a_version_or_content_published_before_is_refused(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url, b"k")
    first = candidate(tmp_path)
    publish(store, read_release(first))
    (first / "cards.yaml").write_text((first / "cards.yaml").read_text() + "\n# edited\n")
    with pytest.raises(ReleaseRefused, match=r"1\.1\.0 is already published with other content"):
        publish(store, read_release(first))
    again = candidate(tmp_path / "x", "1.2.0")
    shutil.copy(first / "cards.yaml", again / "cards.yaml")
    publish(store, read_release(again))
    store.close()


def test_a_switch_takes_effect_at_its_moment_and_a_rollback_is_one_more(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url, b"k")
    publish(store, read_release(RULES))
    publish(store, read_release(candidate(tmp_path)))
    switch(store, "active", "1.0.0")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    switch(store, "active", "1.1.0", later)
    assert current(store, "active") == "1.0.0"
    assert current(store, "active", later + dt.timedelta(seconds=1)) == "1.1.0"
    switch(store, "shadow", "1.1.0")
    assert {r.version: r.status for r in listing(store)} == {"1.0.0": "active", "1.1.0": "shadow"}
    switch(store, "active", "1.1.0")  # now: the shadow ends, 1.0.0 is retired
    assert current(store, "shadow") is None
    assert {r.version: r.status for r in listing(store)} == {"1.0.0": "retired", "1.1.0": "active"}
    with pytest.raises(ReleaseRefused, match=r"no published release 9\.9\.9"):
        switch(store, "active", "9.9.9")
    store.close()


def test_the_packaged_content_becomes_release_1_0_0_on_first_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, patient_hash_key="k")
    store = Store(settings.store.url, b"k")
    live = LiveReleases(settings, store)
    assert live.version == "1.0.0"
    assert current(store, "active") == "1.0.0"
    assert live.pipeline.release is not None
    assert live.pipeline.release.content_hash == read_release(RULES).content_hash
    store.close()


def test_own_content_beside_an_active_release_is_refused_at_start_up(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, patient_hash_key="k")
    store = Store(settings.store.url, b"k")
    LiveReleases(settings, store)
    with pytest.raises(ConfigurationError, match=r"release 1\.0\.0 is active in the store"):
        LiveReleases(settings.with_flat(rules_dir=candidate(tmp_path)), store)
    store.close()
