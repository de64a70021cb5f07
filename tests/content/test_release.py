"""A release folder: its manifest checked with file and line, its content hash over every file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds.content.files import ContentError
from cds.content.release import read_release, release_of
from tests.support.paths import RULES


def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    shutil.copytree(RULES, folder)
    return folder


def test_the_hash_covers_every_content_file(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    first = read_release(folder).content_hash
    assert read_release(folder).content_hash == first
    for name in ("cards.yaml", "terminology.yaml", "knee-hip-v1.yaml", "valuesets/knee-related.json"):
        path = folder / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert read_release(folder).content_hash != first, name
        path.write_bytes(original)
    assert read_release(folder).content_hash == first


def test_a_changelog_out_of_order_names_its_line(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    manifest = folder / "release.yaml"
    manifest.write_text(manifest.read_text() + '  - version: 2.0.0\n    date: "2026-12-03"\n    approved_by: Q\n'
                                               "    changes: [later, yet listed last]\n")
    with pytest.raises(ContentError, match="newest first") as caught:
        read_release(folder)
    assert caught.value.line == next(n for n, line in enumerate(manifest.read_text().splitlines(), 1)
                                     if line.startswith("changelog:"))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    (folder / "cards.yaml").unlink()
    with pytest.raises(ContentError, match=r"missing: cards\.yaml"):
        read_release(folder)


def test_content_is_a_release_only_with_the_rule_file_its_manifest_names(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    assert release_of(folder, None) is not None
    assert release_of(folder, Path("knee-hip-v1.yaml")) is not None
    assert release_of(folder, tmp_path / "elsewhere.yaml") is None
    (folder / "release.yaml").unlink()
    assert release_of(folder, None) is None
