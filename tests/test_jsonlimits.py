"""JSON from outside is refused past the nesting limit, with a message naming it, never a RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.jsonlimits import JSON_DEPTH_LIMIT, depth, parse_json

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=40)


def nesting(value: Any) -> int:
    """The reference: nesting counted recursively (fine for the small values drawn here)."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max((nesting(c) for c in children), default=0)


@settings(max_examples=500)
@given(JSON_VALUES)
def test_depth_counts_what_a_recursive_walk_counts(value: Any) -> None:
    assert depth(value) == nesting(value)


def nested(levels: int, opener: str = "[", closer: str = "]") -> str:
    return opener * levels + closer * levels


@pytest.mark.parametrize(("text", "expected"), [
    ("3", 0), ("[]", 1), ("{}", 1), ('{"a": [1, {"b": [[]]}], "c": 2}', 5), ('[{}, [[[]]], {"x": {"y": 1}}]', 4)])
def test_depth_of_small_documents(text: str, expected: int) -> None:
    assert depth(json.loads(text)) == expected


def test_a_document_at_the_limit_parses_and_one_level_more_is_refused_by_name() -> None:
    assert depth(parse_json(nested(JSON_DEPTH_LIMIT), "the body")) == JSON_DEPTH_LIMIT
    with pytest.raises(ValueError, match=f"the body is nested deeper than {JSON_DEPTH_LIMIT} levels"):
        parse_json(nested(JSON_DEPTH_LIMIT + 1), "the body")
    objects = '{"a":' * (JSON_DEPTH_LIMIT + 1) + "1" + "}" * (JSON_DEPTH_LIMIT + 1)
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json(objects, "the body")


def test_a_document_deeper_than_python_can_parse_is_refused_by_the_same_message() -> None:
    with pytest.raises(ValueError, match=f"nested deeper than {JSON_DEPTH_LIMIT} levels"):
        parse_json(nested(100_000), "the body")


@settings(max_examples=300)
@given(JSON_VALUES)
def test_a_document_reads_as_the_json_module_reads_it(value: Any) -> None:
    text = json.dumps(value)
    assert repr(parse_json(text, "the body")) == repr(json.loads(text))
    assert repr(parse_json(text.encode(), "the body")) == repr(json.loads(text.encode()))


@pytest.mark.parametrize("text", [
    '{"a": 1, "a": 2, "b": 3}', "[-0, -0.0, 1E2, 1e400, 123456789012345678901234567890, 5e-324]",
    "[NaN, Infinity, -Infinity]", '"\\ud800"', '"\\u00e9\\ud83d\\ude00"', ' {"a": 1} '])
def test_edge_cases_read_as_the_json_module_reads_them(text: str) -> None:
    assert repr(parse_json(text, "the body")) == repr(json.loads(text))


def refusal(parse: Any, body: bytes) -> tuple[type[ValueError], str]:
    try:
        parse(body)
    except ValueError as exc:
        return type(exc), str(exc)
    raise AssertionError(f"{body!r} was accepted")


@pytest.mark.parametrize("body", [b"[1,]", b"\xff", b'{"a":1} x', b"", b'"\x01"', b"{'a': 1}"])
def test_malformed_json_is_refused_with_the_json_modules_own_message(body: bytes) -> None:
    assert refusal(lambda b: parse_json(b, "the body"), body) == refusal(json.loads, body)
