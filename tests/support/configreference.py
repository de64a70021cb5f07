"""docs/configuration.md, generated from the `Settings` model (its fields, defaults, limits and descriptions).

Run `.venv/bin/python -m tests.support.configreference` after changing a setting; a test fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo

from cds.settings import GROUPS, PACKAGED, Settings, variable
from tests.support.paths import PROJECT_ROOT

INTRO = """# Configuration

Every setting is an environment variable, read and checked at start-up: a value that cannot be used stops the
command with one line naming the variable (exit 3). Lists are JSON (`["https://a.example"]`). This page is
generated from `cds/settings.py` (`python -m tests.support.configreference`); the trusted-issuers file is described in
[security.md](security.md).

| variable | default | limits | meaning |
|---|---|---|---|"""


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    text = str(value).replace(str(PACKAGED), "(packaged)")
    return f"`{text}`"


def _limits(info: FieldInfo) -> str:
    words = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = [f"{words[name]} {getattr(m, name)}" for m in info.metadata for name in words if hasattr(m, name)]
    return ", ".join(found)


def settings_by_flat_name() -> dict[str, FieldInfo]:
    """Every setting by its flat name (the variable less HIPFLEX_), group by group, then the top-level ones."""
    found = {model.PREFIX + name: info for model in GROUPS.values() for name, info in model.model_fields.items()}
    return found | {name: info for name, info in Settings.model_fields.items() if name not in GROUPS}


def reference() -> str:
    rows = [f"| `{variable(name)}` | {_default(info)} | {_limits(info)} | {info.description or ''} |"
            for name, info in settings_by_flat_name().items()]
    extra = ("\n`DATABASE_URL` may also be given as `HIPFLEX_DATABASE_URL`, and `HIPFLEX_RULE_PATH` as "
             "`HIPFLEX_RULE_FILE`. The default store is SQLite in "
             "`HIPFLEX_DATA_DIR`; `postgresql://user:password@host/db` uses the same code. Without "
             "`HIPFLEX_PATIENT_HASH_KEY` a random key is kept in `HIPFLEX_DATA_DIR/patient-hash.key`.\n")
    return INTRO + "\n" + "\n".join(rows) + "\n" + extra


if __name__ == "__main__":
    (PROJECT_ROOT / "docs" / "configuration.md").write_text(reference())
