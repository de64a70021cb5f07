"""JSON from outside (hook bodies, FHIR answers, export lines, files given to the CLI) parsed with a nesting limit.

It sits below every layer because every front door reads JSON someone else wrote.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

JSON_DEPTH_LIMIT = 100


def parse_json(body: bytes | str, what: str) -> Any:
    """JSON with a nesting limit: Python's parser and every walk over the result recurse, and a deep enough
    document is a RecursionError (a 500) somewhere. ValueError names the limit.

    pydantic-core's parser reads a document in about 60 % of the json module's time and gives the same values;
    whatever it refuses (malformed JSON, a lone surrogate escape the json module accepts, nesting past its own
    limit) is read again by the json module, so what is accepted and every error message stay the json module's.
    Only keys go to its string cache: values are patient data, which no process-wide cache keeps."""
    try:
        data = from_json(body, cache_strings="keys")
    except ValueError:
        data = _json_module(body, what)
    if depth(data) > JSON_DEPTH_LIMIT:
        raise ValueError(f"{what} is nested deeper than {JSON_DEPTH_LIMIT} levels")
    return data


def _json_module(body: bytes | str, what: str) -> Any:
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValueError(f"{what} is nested deeper than {JSON_DEPTH_LIMIT} levels") from None
    return data


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
