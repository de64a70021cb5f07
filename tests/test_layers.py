"""The package's shape: no import cycles, and imports only point down the layers (content < clinical < hooks < web)."""

from __future__ import annotations

import ast
from pathlib import Path

import cds

PACKAGE = Path(cds.__file__).parent
LAYERS = ["content", "clinical", "hooks", "population", "web"]  # bottom to top; settings below, cli above


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every cds module -> the cds modules it imports, at the top or lazily inside a function."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cds"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("cds")}
        graph[module_name(path)] = found
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    if module in ("cds", "cds.settings", "cds.errors", "cds.jsonlimits"):
        return -1
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)  # cds.cli: the command line sits on top


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph.get(module, set()):
            if target == path[0]:
                cycles.append(" -> ".join([*path, target]))
            elif target not in path and len(path) < 12:
                visit(target, [*path, target])

    for start in graph:
        visit(start, [start])
    assert cycles == []


def test_imports_point_down_the_layers_only() -> None:
    upward = [f"{module} imports {target}" for module, targets in imports().items() for target in targets
              if layer(target) > layer(module)]
    assert upward == []


def test_the_layer_folders_exist_and_cds_holds_no_loose_step_modules() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "cli.py", "errors.py", "jsonlimits.py", "releasecommands.py", "settings.py"]
    assert all((PACKAGE / name / "__init__.py").exists() for name in LAYERS)


def content_names() -> dict[str, str]:
    """Every finding, rule id, parameter and code the content files define (read here from the files), less the
    fact kinds, which are the Python fact vocabulary the content is written in."""
    import json

    import yaml

    from cds.content.facts import fact_properties
    from tests.support.paths import RULES

    source = yaml.safe_load((RULES / "knee-hip-v1.yaml").read_text())
    names = {r["id"]: "rule" for r in source["rules"]}
    names |= {a["derive"]: "finding" for r in source["rules"] for a in r["then"] if "derive" in a}
    names |= dict.fromkeys(source["parameters"], "parameter")
    codes: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            codes.update(str(v) for k, v in value.items() if k == "code" and isinstance(v, str | int))
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(yaml.safe_load((RULES / "terminology.yaml").read_text()))
    for path in (RULES / "valuesets").glob("*.json"):
        walk(json.loads(path.read_text()))
    names |= {code: "code" for code in codes if len(code) >= 4 and code not in names}
    return {name: what for name, what in names.items() if name not in fact_properties()}


# synth.py writes synthetic patients in the codes real EHRs send: it is test data, not logic that reads them.
WRITES_DATA = {"cds/population/synth.py"}


def test_no_module_names_a_finding_rule_parameter_or_code_the_content_defines() -> None:
    import re

    names = content_names()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE.parent).as_posix()
        if module in WRITES_DATA:
            continue
        for match in re.finditer(r'"([^"\n]{2,60})"', path.read_text()):
            if match.group(1) in names:
                found.append(f"{module}: {names[match.group(1)]} {match.group(1)!r}")
    assert found == []


def test_every_error_the_package_defines_derives_from_the_one_root() -> None:
    import importlib
    import inspect

    from cds.errors import HipflexError

    strays = []
    for module in imports():
        for name, value in vars(importlib.import_module(module)).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module
                    and not issubclass(value, HipflexError)):
                strays.append(f"{module}.{name}")
    assert strays == []


PROJECT_CHECKS = {"test_docs", "test_readme", "test_packaging", "test_layers", "test_features"}  # the project's
WHOLE_SERVICE = {"test_cds_client"}  # a browser CDS client against the real service: no one module


def test_the_tests_mirror_the_package() -> None:
    """tests/<layer>/test_<module>[_<aspect>].py for cds/<layer>/<module>.py; tests/test_<module>.py for the
    modules beside the layers; support code in tests/support/."""
    tests = PACKAGE.parent / "tests"
    strays = []
    for path in sorted(tests.rglob("test_*.py")):
        folder = path.parent.relative_to(tests).as_posix()
        modules = {p.stem for p in (PACKAGE if folder == "." else PACKAGE / folder).glob("*.py")}
        if path.stem in PROJECT_CHECKS | WHOLE_SERVICE:
            continue
        named = path.stem.removeprefix("test_")
        if folder not in (".", *LAYERS) or not any(named == m or named.startswith(f"{m}_") for m in modules):
            strays.append(path.relative_to(tests).as_posix())
    assert strays == []
