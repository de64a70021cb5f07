"""Download a FHIR server's Bulk Data export (https://hl7.org/fhir/uv/bulkdata/export.html) for `impact`.

The asynchronous pattern: kick-off (`GET {base}/$export`, `Prefer: respond-async`) answers 202 with a
status URL in Content-Location; polling it answers 202 (with `Retry-After`) until the manifest arrives
(200); each output file is then streamed to disk.

The server is trusted with nothing: the token goes only to the kick-off's origin (a status URL elsewhere is
refused; a file elsewhere only when the manifest says it needs no token, then fetched without it and only
from a public address or a host the analyst listed); file names are made here from a checked resource type
and a counter, never from the manifest's strings; bytes on the wire, bytes written per file and bytes in all
are capped; polls are spaced at least `min_poll_seconds` apart and counted. A manifest entry that cannot be
used is a named problem (written to `download-problems.json` beside the files, then into `summary.json`),
not the end of the run.
"""

from __future__ import annotations

import email.utils
import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from cds.errors import HipflexError
from cds.hooks.fhirclient import is_public_address, same_origin
from cds.jsonlimits import parse_json

PROBLEMS_FILE = "download-problems.json"
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
GZIP_MAGIC = b"\x1f\x8b"


class ExportFailed(HipflexError):
    """Why the export could not be had, in words for the analyst (never the token)."""


@dataclass(frozen=True)
class ExportLimits:
    connect_seconds: float = 5.0
    read_seconds: float = 60.0
    max_file_bytes: int = 2_000_000_000  # one file as sent (compressed, when the server compresses it)
    max_expanded_bytes: int = 8_000_000_000  # one file as written, after any Content-Encoding is undone
    max_total_bytes: int = 50_000_000_000  # every file together, as written
    deadline_seconds: float = 3600.0
    min_poll_seconds: float = 1.0  # a `Retry-After: 0` must not become a busy loop
    max_wait_seconds: float = 120.0  # the longest Retry-After honoured between polls
    max_polls: int = 2000
    allowed_hosts: tuple[str, ...] = ()  # other hosts (host or host:port) files may come from, private or not


@dataclass
class Download:
    """What the download wrote and what it could not use."""

    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
    return parts.scheme.lower(), (parts.hostname or "").lower() or None, port


def _http(url: str) -> bool:
    scheme, host, _ = _origin(url)
    return scheme in ("http", "https") and host is not None


def download(base: str, token: str | None, dest: Path, limits: ExportLimits = ExportLimits()) -> Download:
    """Kick off, poll and download the export of the server at `base` into `dest`."""
    if not _http(base):
        raise ExportFailed(f"{base}: not an http(s) URL")
    deadline = time.monotonic() + limits.deadline_seconds
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(limits.read_seconds, connect=limits.connect_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        status_url = _kick_off(client, base, auth)
        if not same_origin(status_url, base):
            raise ExportFailed(f"the export's status URL is on another server ({_netloc(status_url)}); refused: "
                               "the token goes only to the server the export was started on")
        manifest = _poll(client, status_url, auth, deadline, limits)
        dest.mkdir(parents=True, exist_ok=True)
        result = Download()
        outputs = manifest.get("output")
        if not isinstance(outputs, list):
            raise ExportFailed("the export's manifest has no output list")
        total = 0
        for index, output in enumerate(outputs):
            try:
                url, path, send_token = _plan(output, index, base, manifest, dest, limits)
                path, size = _stream(client, url, auth if send_token else {}, path, deadline, limits,
                                     limits.max_total_bytes - total)
                total += size
                result.files.append(path)
            except _Skipped as skipped:
                result.problems.append(f"manifest output {index}: {skipped}")
        (dest / PROBLEMS_FILE).write_text(json.dumps(result.problems, indent=2) + "\n")
    return result


class _Skipped(HipflexError):
    """One manifest entry that is not fetched; the rest of the export still is."""


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2][:100]


def _kick_off(client: httpx.Client, base: str, auth: dict[str, str]) -> str:
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    try:
        kick = client.get(f"{base.rstrip('/')}/$export", headers=headers | auth)
    except httpx.HTTPError:
        raise ExportFailed(f"{base}: the FHIR server could not be reached") from None
    location = kick.headers.get("content-location")
    if kick.status_code != 202 or not location:
        raise ExportFailed(f"{base}: the export kick-off answered HTTP {kick.status_code}, not 202 with a "
                           "status URL")
    return str(httpx.URL(base).join(location))


def _poll(client: httpx.Client, status_url: str, auth: dict[str, str], deadline: float,
          limits: ExportLimits) -> dict[str, Any]:
    for _ in range(limits.max_polls):
        if time.monotonic() >= deadline:
            break
        try:
            status = client.get(status_url, headers={"Accept": "application/json"} | auth)
        except httpx.HTTPError:
            raise ExportFailed("the export status could not be read") from None
        if status.status_code == 200:
            return _manifest(status.content)
        if status.status_code != 202:
            raise ExportFailed(f"the export failed: its status answered HTTP {status.status_code}")
        time.sleep(min(max(_retry_after(status.headers.get("retry-after")), limits.min_poll_seconds),
                       limits.max_wait_seconds, max(0.0, deadline - time.monotonic())))
    else:
        raise ExportFailed(f"the export was not ready after {limits.max_polls} polls")
    raise ExportFailed(f"the export was not ready within {limits.deadline_seconds:g} s")


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); 2 s when absent or unreadable."""
    if value is None:
        return 2.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 2.0
    return max(0.0, when.timestamp() - time.time())


def _manifest(body: bytes) -> dict[str, Any]:
    try:
        manifest = parse_json(body, "the export's manifest")
    except (ValueError, UnicodeDecodeError):
        raise ExportFailed("the export's manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise ExportFailed(f"the export's manifest is a JSON {type(manifest).__name__}, not an object")
    return manifest


def _plan(output: Any, index: int, base: str, manifest: dict[str, Any], dest: Path,
          limits: ExportLimits) -> tuple[str, Path, bool]:
    """(URL, the file to write, whether the token goes with it) for one manifest entry, or _Skipped."""
    if not isinstance(output, dict) or not isinstance(output.get("url"), str):
        raise _Skipped("not an object with a url")
    url, rtype = output["url"], output.get("type")
    if not isinstance(rtype, str) or not RESOURCE_TYPE.fullmatch(rtype):
        raise _Skipped(f"type {str(rtype)[:40]!r} is not a FHIR resource type; not fetched")
    if not _http(url):
        raise _Skipped("the url is not an http(s) URL; not fetched")
    path = dest / f"{rtype}.{index:04d}.ndjson"
    if same_origin(url, base):
        return url, path, True
    if manifest.get("requiresAccessToken", True) is not False:
        raise _Skipped(f"a file on another server ({_netloc(url)}) that needs the access token; not fetched (the "
                       "token goes only to the server the export was started on)")
    if not _may_fetch(url, limits.allowed_hosts):
        raise _Skipped(f"a file on {_netloc(url)}, which is not a public address and not in --allow-host; "
                       "not fetched")
    return url, path, False


def _may_fetch(url: str, allowed: tuple[str, ...]) -> bool:
    """A file on another origin: a listed host (or host:port), else only one that resolves to public addresses.
    (The name is resolved again when connecting; an analyst who needs more lists the host.)"""
    _, host, port = _origin(url)
    assert host is not None
    if host in allowed or f"{host}:{port}" in allowed:
        return True
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(is_public_address(a) for a in addresses)


def _stream(client: httpx.Client, url: str, auth: dict[str, str], path: Path, deadline: float,
            limits: ExportLimits, total_left: int) -> tuple[Path, int]:
    """Write one file, capped as sent, as written and by what the export may still take; (the file written,
    its size)."""
    written, file = 0, None
    try:
        with client.stream("GET", url, headers={"Accept": "application/fhir+ndjson"} | auth) as response:
            if response.status_code != 200:
                raise _Skipped(f"{_netloc(url)} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                if file is None:  # gzip sent as it is is kept as .gz, which impact reads
                    path = path.with_name(path.name + ".gz") if chunk.startswith(GZIP_MAGIC) else path
                    file = path.open("wb")
                written += len(chunk)
                why = _over(response.num_bytes_downloaded, written, total_left, deadline, limits)
                if why:
                    raise _Skipped(f"{why}; the part written was deleted")
                file.write(chunk)
    except httpx.HTTPError:
        _discard(file, path)
        raise _Skipped(f"could not be downloaded from {_netloc(url)}") from None
    except _Skipped:
        _discard(file, path)
        raise
    if file is None:
        path.touch()  # an empty file is still the file the manifest named
    else:
        file.close()
    return path, written


def _discard(file: BinaryIO | None, path: Path) -> None:
    if file is not None:
        file.close()
    path.unlink(missing_ok=True)


def _over(sent: int, written: int, total_left: int, deadline: float, limits: ExportLimits) -> str | None:
    if sent > limits.max_file_bytes:
        return f"over {limits.max_file_bytes:,} bytes as sent (--max-file-bytes)"
    if written > limits.max_expanded_bytes:
        return f"over {limits.max_expanded_bytes:,} bytes once decompressed (--max-expanded-bytes)"
    if written > total_left:
        return f"the export went over {limits.max_total_bytes:,} bytes in all (--max-total-bytes)"
    if time.monotonic() > deadline:
        return f"past the export's deadline of {limits.deadline_seconds:g} s"
    return None

