"""JSON from outside (hook bodies, FHIR answers, export lines, files given to the CLI) parsed with a nesting limit.

It sits below every layer because every front door reads JSON someone else wrote.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic_core import from_json

JSON_DEPTH_LIMIT = 100


def parse_json(body: bytes | str, what: str, *, characters_only: bool = False) -> Any:
    """JSON with a nesting limit: Python's parser and every walk over the result recurse, and a deep enough
    document is a RecursionError (a 500) somewhere. ValueError names the limit.

    pydantic-core's parser reads a document in about 60 % of the json module's time and gives the same values;
    whatever it refuses (malformed JSON, a lone surrogate escape the json module accepts, nesting past its own
    limit) is read again by the json module, so what is accepted and every error message stay the json module's.
    Only keys go to its string cache: values are patient data, which no process-wide cache keeps. The depth is
    read from the text when pydantic-core took it, from the parsed value otherwise (the json module also reads
    UTF-16 and UTF-32, whose bytes are not characters).

    With `characters_only`, a lone surrogate escape ("\\ud800" without its pair) is refused too, naming where
    it is: the json module reads it into a string that no UTF-8 encoder writes, so every later step that writes
    the data (a content key, a card, the store) would fail on it. pydantic-core refuses it itself."""
    try:
        data = from_json(body, cache_strings="keys")
    except ValueError:
        data = _json_module(body, what)
        if depth(data) > JSON_DEPTH_LIMIT:
            raise ValueError(f"{what} is nested deeper than {JSON_DEPTH_LIMIT} levels") from None
        where = _lone_surrogate(data, "") if characters_only else None
        if where is not None:
            raise ValueError(f"{what} holds a lone surrogate escape (such as \\ud800 without its pair) at "
                             f"{where or 'its top'}: that is no character") from None
        return data
    # UTF-8, so every byte below 128 is the character it looks like
    if not nests_within(body, JSON_DEPTH_LIMIT) and depth(data) > JSON_DEPTH_LIMIT:
        raise ValueError(f"{what} is nested deeper than {JSON_DEPTH_LIMIT} levels")
    return data


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) that is not all characters, else None (the value nests at
    most JSON_DEPTH_LIMIT deep, so the recursion is bounded). A key in the path is shown escaped."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else path
    if isinstance(value, list):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    elif isinstance(value, dict):
        children = []
        for key, item in value.items():
            where = f"{path}.{_shown(key)}" if path else _shown(key)
            if not _encodes(key):
                return where
            children.append((where, item))
    else:
        return None
    for where, item in children:
        found = _lone_surrogate(item, where)
        if found is not None:
            return found
    return None


def _shown(key: str) -> str:
    return key if _encodes(key) else key.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_module(body: bytes | str, what: str) -> Any:
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError(f"{what} is nested deeper than {JSON_DEPTH_LIMIT} levels") from None
    return data


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_KEPT = b'"[]{}'
_DROPPED = bytes(c for c in range(256) if c not in _KEPT)
_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")


def nests_within(text: bytes | str, levels: int) -> bool:
    """Whether a valid JSON text nests no deeper than `levels`, read from its brackets: two thirds of the time of
    walking the parsed value (1.4 ms against 2.1 for a 0.5 MB chart), so the walk runs only when this says no
    (a deep value under a key repeated later is in the text but not in the value).

    Every escape's backslash and the character after it are dropped (left to right, so an escaped backslash
    never escapes what follows it); of what is left only quotes and brackets are kept.
    Two adjacent quotes are dropped next: an empty string, or two strings joined into one, so every bracket
    stays on its side of a string's edge, and any quote still left bounds a string that holds brackets. Each
    pass of `replace(b"[]", b"")` then removes every innermost array or object, so the passes needed to empty
    the brackets are the nesting depth."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    marks = raw.translate(_AS_ARRAYS, _DROPPED).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    for _ in range(levels):
        if not marks:
            return True
        marks = marks.replace(b"[]", b"")
    return not marks


def depth(value: Any) -> int:
    """How deeply objects and arrays nest (a scalar is 0), counted level by level without recursion. Only what
    `json.loads` makes is walked (exact dicts and lists), and each level's objects and arrays are gathered apart:
    half the time of one isinstance test per item (1.4 ms against 3.0 ms for a 0.5 MB chart)."""
    levels, level = 0, [value]
    while levels <= JSON_DEPTH_LIMIT:
        objects = [item for item in level if type(item) is dict]
        arrays = [item for item in level if type(item) is list]
        if not objects and not arrays:
            break
        levels += 1
        level = [child for item in objects for child in item.values()]
        for array in arrays:
            level += array
    return levels
