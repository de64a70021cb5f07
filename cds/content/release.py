"""A release: the content the service decides with (rule file, terminology, card texts, ValueSets) as one
versioned, hashed, approved unit, described by `release.yaml` in its folder.

It follows the CRMI idea of a knowledge artifact named `url|version` whose status goes draft -> active ->
retired, with two differences: the manifest is YAML beside the content, not a FHIR Library resource (`manifest()`
gives the FHIR-shaped JSON), and which release is active is a fact of a deployment, kept in its data store
(`cds.hooks.releases`), not a field an author edits in the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from cds.content.files import ContentError, ContentModel, load_model

MANIFEST = "release.yaml"
SEMVER = r"^\d+\.\d+\.\d+$"
URL = "urn:hipflex-cds:release:knee-hip"


class ReleaseNote(ContentModel):
    version: str = Field(pattern=SEMVER)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    approved_by: str = Field(min_length=1, description="Who signed this release off")
    changes: list[str] = Field(min_length=1, description="What changed, in words a clinician can check")


class ReleaseManifest(ContentModel):
    """`release.yaml`: which rule file, and the changelog, newest first; the first entry is this release."""

    rules: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.yaml$", description="The rule file in this folder")
    changelog: list[ReleaseNote] = Field(min_length=1)

    @property
    def version(self) -> str:
        return self.changelog[0].version

    @property
    def note(self) -> ReleaseNote:
        return self.changelog[0]


@dataclass(frozen=True)
class ReleaseRef:
    """Which release some content is: what every card records."""

    version: str
    content_hash: str


def release_of(folder: Path, rule_path: Path | None) -> ReleaseRef | None:
    """The release a content folder is, when it has a release.yaml and the rule file is the one it names; None
    for content outside any release (a rule file elsewhere, or a folder without a manifest)."""
    if not (folder / MANIFEST).is_file():
        return None
    release = read_release(folder)
    if rule_path is not None and (folder / rule_path).resolve() != (folder / release.manifest.rules).resolve():
        return None
    return ReleaseRef(release.version, release.content_hash)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class Release:
    """A release read from a folder or from the store: its manifest and every content file's bytes."""

    def __init__(self, manifest: ReleaseManifest, files: dict[str, bytes]) -> None:
        self.manifest, self.files = manifest, dict(sorted(files.items()))

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def content_hash(self) -> str:
        """SHA-256 over every content file's name and bytes (release.yaml included): what a card records."""
        digest = hashlib.sha256()
        for name, data in self.files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def write(self, folder: Path) -> Path:
        """The files under `folder` (created); the folder, ready to be a HIPFLEX_RULES_DIR."""
        for name, data in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return folder

    def manifest_resource(self, status: str) -> dict[str, Any]:
        """The release as a FHIR Library-shaped document (CRMI: url, version, status, relatedArtifact); `status`
        (draft, active, retired) comes from the deployment's store."""
        note = self.manifest.note
        return {"resourceType": "Library", "url": URL, "version": self.version, "name": "KneeHipRules",
                "status": status, "date": note.date, "approver": [{"name": note.approved_by}],
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type",
                                     "code": "asset-collection"}]},
                "relatedArtifact": [{"type": "composed-of", "display": name,
                                     "document": {"url": name, "hash": hashlib.sha256(data).hexdigest()}}
                                    for name, data in self.files.items()],
                "extension": [{"url": "urn:hipflex-cds:content-hash", "valueString": self.content_hash},
                              {"url": "urn:hipflex-cds:changes", "valueString": "; ".join(note.changes)}]}


def content_files(folder: Path, rule_file: str) -> dict[str, bytes]:
    """What a release holds: its manifest, the rule file, terminology, card texts and the ValueSets."""
    names = [MANIFEST, rule_file, "terminology.yaml", "cards.yaml"]
    files = {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    files |= {f"valuesets/{p.name}": p.read_bytes() for p in sorted((folder / "valuesets").glob("*.json"))}
    missing = [name for name in names if name not in files]
    if missing:
        raise ContentError(folder, None, f"a release folder holds {', '.join(names)}; missing: {', '.join(missing)}")
    return files


def read_release(folder: Path) -> Release:
    """The release in `folder` (its release.yaml names the rule file); ContentError with file and line."""
    manifest, lines = load_model(folder / MANIFEST, ReleaseManifest)
    versions = [note.version for note in manifest.changelog]
    if versions != sorted(versions, key=version_key, reverse=True) or len(set(versions)) != len(versions):
        raise ContentError(folder / MANIFEST, lines.get(("changelog",)),
                           f"changelog versions must be newest first and distinct: {', '.join(versions)}")
    return Release(manifest, content_files(folder, manifest.rules))


def release_from_json(manifest: str, files: str) -> Release:
    """A release as the store keeps it (the manifest as JSON, the files as a JSON object of text)."""
    return Release(ReleaseManifest.model_validate_json(manifest),
                   {name: text.encode("utf-8") for name, text in json.loads(files).items()})


def files_json(release: Release) -> str:
    return json.dumps({name: data.decode("utf-8") for name, data in release.files.items()})


def is_version(text: str) -> bool:
    return re.fullmatch(SEMVER, text) is not None
