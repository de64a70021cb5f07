"""Reading a Bulk FHIR export's NDJSON files trusting nothing in them: which files, line by line as bytes with a
size cap, and each line either a resource or the reason it is not one (for the counts in `summary.json`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cds.jsonlimits import JSON_DEPTH_LIMIT, parse_json

MAX_LINE_BYTES = 5_000_000  # one resource; the service refuses hook bodies over the same size


def export_files(folder: Path) -> Iterator[Path]:
    """The export's NDJSON files (plain or gzipped), in a stable order."""
    yield from sorted(p for p in folder.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz")))


def ndjson_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line's bytes) of an NDJSON file, gzipped or not; None for a line over MAX_LINE_BYTES
    (the rest of it is skipped without being held)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as file:
        number = 0
        while line := file.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
            else:
                yield number, line


def parse_line(line: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the resource, None) or (None, what is wrong with the line)."""
    if line is None:
        return None, f"a line over {MAX_LINE_BYTES:,} bytes"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 (a compressed file without .gz?)"
    try:
        resource = parse_json(text, "the line")
    except json.JSONDecodeError:
        return None, "not JSON"
    except ValueError:
        return None, f"JSON nested deeper than {JSON_DEPTH_LIMIT} levels"
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None, "not a FHIR resource (no resourceType)"
    if "\\u" in text and not _encodable(resource):
        return None, "a lone surrogate escape (\\ud800...) that is no character"
    return resource, None


def _encodable(resource: dict[str, Any]) -> bool:
    try:
        json.dumps(resource, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
