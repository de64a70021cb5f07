"""JSON from outside is refused past the nesting limit, with a message naming it, never a RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.jsonlimits import JSON_DEPTH_LIMIT, depth, nests_within, parse_json

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


BRACKETY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\/ aé\n\u2028\ud83d\ude00'), max_size=8)
BRACKETY_VALUES = st.recursive(st.none() | st.integers() | BRACKETY_TEXT,
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(BRACKETY_TEXT, inner,
                                                                                          max_size=4),
                               max_leaves=40)


@settings(max_examples=500)
@given(st.one_of(JSON_VALUES, BRACKETY_VALUES), st.booleans())
def test_the_text_nests_within_a_limit_exactly_when_the_value_does(value: Any, ascii_only: bool) -> None:
    """Brackets, quotes and backslashes inside strings, escaped or not, never count as nesting."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    levels = depth(value)
    for limit in range(levels + 2):
        assert nests_within(text.encode("utf-8", "surrogatepass"), limit) is (levels <= limit), (text, limit)
        assert nests_within(text, limit) is (levels <= limit), (text, limit)


@pytest.mark.parametrize(("text", "levels"), [
    (r'["\\", ["\"[", "]"]]', 2), (r'{"a\\\"[[": [], "": ""}', 2), ('"[[[["', 0), ('[""]', 1),
    (r'["\"", "\\", [[]], "{"]', 3)])
def test_the_text_depth_of_strings_made_to_mislead(text: str, levels: int) -> None:
    assert depth(json.loads(text)) == levels
    assert nests_within(text, levels) and not nests_within(text, levels - 1) if levels else nests_within(text, 0)


def test_a_deep_value_under_a_key_given_again_later_is_judged_by_the_value() -> None:
    """The text nests past the limit, the value the parser keeps does not: the value decides."""
    text = '{"a": ' + nested(JSON_DEPTH_LIMIT + 5) + ', "a": 1}'
    assert not nests_within(text, JSON_DEPTH_LIMIT)
    assert parse_json(text, "the body") == {"a": 1}


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


@pytest.mark.parametrize(("text", "where"), [
    ('"\\ud800"', "its top"), ('{"a": [1, {"b": "x\\udc00y"}]}', "a[1].b"),
    ('{"ok": "\\ud83d\\ude00", "k\\ud800": 1}', "k\\ud800")])
def test_with_characters_only_a_lone_surrogate_is_refused_by_its_place(text: str, where: str) -> None:
    with pytest.raises(ValueError, match="lone surrogate") as refused:
        parse_json(text.encode(), "the body", characters_only=True)
    assert f" at {where}:" in str(refused.value)
    str(refused.value).encode("utf-8")  # the message itself can be sent
    assert repr(parse_json(text, "the body")) == repr(json.loads(text))


def test_with_characters_only_a_surrogate_pair_and_every_other_character_is_read() -> None:
    text = '{"name": "\\ud83d\\ude00 \\u00e9 \\u2028", "n": [NaN]}'
    assert repr(parse_json(text, "the body", characters_only=True)) == repr(json.loads(text))
