"""The step reference for analysts, features/README.md, generated from the step vocabulary.

Run `.venv/bin/python -m tests.support.stepreference` after changing a step; a test fails when the file is stale.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import PROJECT_ROOT
from tests.support.steps import VOCABULARY


def reference() -> str:
    """features/README.md, generated from VOCABULARY."""
    parts = [Path(__file__).with_name("steps_intro.md").read_text().rstrip(), ""]
    for keyword in ("Given", "When", "Then"):
        parts += [f"## {keyword}", ""]
        for doc in (d for d in VOCABULARY if d.keyword == keyword):
            numbers = re.findall(r"\{(\w+):([dg])\}", doc.pattern)
            wording = re.sub(r"\{(\w+):[dg]\}", r"{\1}", doc.pattern)
            parts += [f"### {keyword} {wording}", "", doc.doc, "", f"Example: `{doc.example}`", ""]
            params = [f"- `{{{name}}}`: {'a whole number' if kind == 'd' else 'a number'}" for name, kind in numbers]
            params += [f"- `{{{name}}}`: one of {', '.join(f'`{w}`' for w in words)}" for name, words in
                       doc.choices.items()]
            parts += [*params, ""] if params else []
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    (PROJECT_ROOT / "features" / "README.md").write_text(reference())
