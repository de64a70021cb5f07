"""The structure check validates each distinct element once, yet must judge every resource exactly as one whole
fhir.resources validation does: every example resource, and thousands of broken variants of them, are
checked both ways (twice, so the second pass runs on cached elements)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.clinical import structure
from cds.clinical.structure import ContentCache, ElementCache, content, full_check, structure_errors
from cds.clinical.validate import bundle_resources
from tests.support.paths import example_paths, load_json

BROKEN_VALUES: list[Any] = [None, "x", "", 12, 1.5, True, [], [None], {}, {"bogus": 1}, [{"bogus": 1}]]


def example_resources() -> list[dict[str, Any]]:
    """One resource per distinct (type, set of elements) over every example bundle."""
    seen: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
    for path in example_paths():
        for resource in bundle_resources(load_json(path)):
            if isinstance(resource, dict) and "resourceType" in resource:
                seen.setdefault((resource["resourceType"], frozenset(resource)), resource)
    return list(seen.values())


def variants(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The resource with one thing broken: an element removed, an element or one of its parts (two levels
    down, list items included) replaced by each of BROKEN_VALUES, or an unknown element added."""
    yield resource | {"unknownElement": 1}
    for key in (k for k in resource if k != "resourceType"):
        yield {k: v for k, v in resource.items() if k != key}
        for broken in BROKEN_VALUES:
            yield resource | {key: broken}
        for path in _inner_paths(resource[key]):
            for broken in BROKEN_VALUES:
                changed = copy.deepcopy(resource)
                _set(changed[key], path, broken)
                yield changed


def _inner_paths(value: Any, depth: int = 2) -> Iterator[tuple[Any, ...]]:
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (key,)
        if depth > 1:
            yield from ((key, *rest) for rest in _inner_paths(child, depth - 1))


def _set(target: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structure, "_elements", ElementCache())
    monkeypatch.setattr(structure, "_verdicts", ContentCache(structure.RESOURCE_ENTRIES))


def test_every_example_resource_is_valid_both_ways() -> None:
    for resource in example_resources():
        assert structure_errors(resource) == full_check(resource) == (), resource


def test_every_broken_variant_is_judged_as_one_whole_validation_judges_it() -> None:
    checked = rejected = 0
    for resource in example_resources():
        for variant in variants(resource):
            expected = full_check(variant)
            assert structure_errors(variant) == expected, variant
            assert structure_errors(copy.deepcopy(variant)) == expected, variant  # the verdict, remembered
            structure._verdicts.clear()
            assert structure_errors(copy.deepcopy(variant)) == expected, variant  # from cached elements
            checked, rejected = checked + 1, rejected + bool(expected)
    assert checked > 2000
    assert rejected > checked // 2


def test_an_element_is_validated_once_per_distinct_content() -> None:
    resource = next(r for r in example_resources() if r["resourceType"] == "Observation" and "code" in r)
    cache = structure._elements
    structure_errors(resource)
    stored = len(cache._models)
    structure_errors(resource | {"id": "another-id"})
    assert len(cache._models) == stored  # same elements, new id: nothing validated again
    assert len(structure._verdicts) == 2  # but a verdict of its own: the resource's content differs
    changed = copy.deepcopy(resource)
    changed["code"]["coding"][0]["display"] = "a different display"
    structure_errors(changed)
    assert len(cache._models) == stored + 1  # only the changed element is new


def test_the_cache_is_bounded_and_keeps_no_large_element(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ElementCache(entries=3)
    monkeypatch.setattr(structure, "_elements", cache)
    resource = next(r for r in example_resources() if r["resourceType"] == "Observation" and "code" in r)
    for i in range(10):
        changed = copy.deepcopy(resource)
        changed["code"]["text"] = f"text {i}"
        assert structure_errors(changed) == ()
    assert len(cache._models) == 3
    large = copy.deepcopy(resource)
    large["code"]["text"] = "x" * (structure.ELEMENT_MAX_CHARS + 1)
    assert structure_errors(large) == ()
    assert len(cache._models) == 3


def test_a_null_in_any_list_of_any_model_is_judged_as_fhir_resources_judges_it() -> None:
    """The null-item check runs in a cheaper form of its own (`_quick_model`): every list element of every
    resource type the examples hold, not only those the examples fill, gets a null item, alone and after a
    valid one, and also under the element's Python name."""
    checked = refused = 0
    for resource in {r["resourceType"]: r for r in example_resources()}.values():
        model = get_fhir_model_class(resource["resourceType"])
        for name, field in model.model_fields.items():
            if "List" not in str(field.annotation) and "list" not in str(field.annotation):
                continue
            for key in {field.alias or name, name}:
                for broken in ([None], [resource.get(key, [None])[0] if isinstance(resource.get(key), list)
                                        else None, None]):
                    variant = {k: v for k, v in resource.items() if k not in (name, field.alias)} | {key: broken}
                    expected = full_check(variant)
                    assert structure_errors(variant) == expected, (resource["resourceType"], key)
                    checked, refused = checked + 1, refused + bool(expected)
    assert checked > 200
    assert refused > checked // 2


CHOICE_SAMPLES: dict[str, Any] = {
    "Boolean": True, "String": "x", "Integer": 1, "DateTime": "2026-01-01", "Date": "2026-01-01", "Time": "10:00:00",
    "Instant": "2026-01-01T00:00:00Z", "CodeableConcept": {"text": "x"}, "Reference": {"reference": "Patient/1"},
    "Quantity": {"value": 1}, "Period": {"start": "2026-01-01"}, "Age": {"value": 1}, "Range": {"low": {"value": 1}}}


def test_choice_types_are_judged_as_fhir_resources_judges_them() -> None:
    """The choice-type check runs in a cheaper form of its own (`_quick_model`): every choice element (`value[x]`,
    `effective[x]`, ...) of every resource type the examples hold, given twice, once, or not at all."""
    checked = refused = 0
    for resource in {r["resourceType"]: r for r in example_resources()}.values():
        model = get_fhir_model_class(resource["resourceType"])
        groups: dict[str, list[str]] = {}
        for name, field in model.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and extra.get("one_of_many"):
                groups.setdefault(str(extra["one_of_many"]), []).append(field.alias or name)
        for prefix, members in groups.items():
            samples = [(m, CHOICE_SAMPLES[m[len(prefix):]]) for m in members if m[len(prefix):] in CHOICE_SAMPLES]
            bare = {k: v for k, v in resource.items() if k not in members}
            for variant in [bare, bare | dict(samples[:1]), bare | dict(samples[:2]), bare | dict(samples[-2:])]:
                expected = full_check(variant)
                assert structure_errors(variant) == expected, (resource["resourceType"], prefix, variant.keys())
                checked, refused = checked + 1, refused + bool(expected)
    assert checked > 20
    assert refused > checked // 3


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                                        max_size=3), max_leaves=12)


@settings(max_examples=1000)
@given(JSON_VALUES, JSON_VALUES)
def test_two_json_values_share_a_cache_key_only_when_they_are_the_same(first: Any, second: Any) -> None:
    """The caches' key (`content`) tells apart whatever `repr` tells apart in parsed JSON: types (1, 1.0, true),
    key order, NaN from null."""
    assert (content(first) == content(second)) == (repr(first) == repr(second))
    assert content(json.loads(json.dumps(first))) == content(first)
