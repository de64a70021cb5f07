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
