"""The README and docs/: short enough to read, every link resolves, every setting and module documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cds
from cds.content.facts import ISSUE_MEANINGS, IssueCode
from cds.settings import variable
from tests.support import configreference
from tests.support.paths import PROJECT_ROOT

DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_reads_in_five_minutes() -> None:
    assert (PROJECT_ROOT / "README.md").stat().st_size <= 10_240


@pytest.mark.parametrize("page", [PROJECT_ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        if not (page.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert [p.name for p in DOCS if f"docs/{p.name}" not in readme] == []


def test_the_configuration_page_is_generated_and_names_every_setting() -> None:
    written = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    stale = "docs/configuration.md is stale: python -m tests.support.configreference"
    assert written == configreference.reference(), stale
    assert [name for name in configreference.settings_by_flat_name() if f"`{variable(name)}`" not in written] == []


def test_every_module_is_in_the_architecture_page() -> None:
    page = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    package = Path(cds.__file__).parent
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        module = path.relative_to(package.parent).as_posix()
        folder = module.rsplit("/", 1)[0] + "/"
        rows = [line for line in page.splitlines() if f"`{path.name}`" in line or module in line]
        if module not in page and not any(folder in row for row in rows):
            missing.append(module)
    assert missing == []


def test_a_bare_make_lists_the_targets() -> None:
    import subprocess

    done = subprocess.run(["make", "-s", "-C", str(PROJECT_ROOT)], capture_output=True, text=True, timeout=60,
                          check=True)
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("  make ")}
    assert {"help", "run", "test", "bench", "lint"} <= listed


def test_every_data_issue_code_is_explained_for_ehr_teams() -> None:
    page = (PROJECT_ROOT / "docs" / "ehr-integration.md").read_text()
    listed = dict(re.findall(r"^\| `([a-z-]+)` \| (.*) \|$", page, flags=re.MULTILINE))
    assert listed == {code.value: ISSUE_MEANINGS[code] for code in IssueCode}
