"""Download a FHIR server's Bulk Data export (https://hl7.org/fhir/uv/bulkdata/export.html) for `impact`.

The asynchronous pattern: kick-off (`GET {base}/$export`, `Prefer: respond-async`) answers 202 with a
status URL in Content-Location; polling it answers 202 (with `Retry-After`) until the manifest arrives
(200); each output file is then streamed to disk. The limits are the service's: no redirects, no proxies
from the environment, connect and read timeouts, a size cap per file, an overall deadline; the token goes
only to the server's own origin (a file elsewhere is fetched without it, and only when the manifest says
it needs none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


class ExportFailed(Exception):
    """Why the export could not be had, in words for the analyst (never the token)."""


@dataclass(frozen=True)
class ExportLimits:
    connect_seconds: float = 5.0
    read_seconds: float = 60.0
    max_file_bytes: int = 20_000_000_000
    deadline_seconds: float = 3600.0
    max_wait_seconds: float = 120.0  # the longest Retry-After honoured between polls


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def download(base: str, token: str | None, dest: Path, limits: ExportLimits = ExportLimits()) -> list[Path]:
    """Kick off, poll and download the export of the server at `base` into `dest`; the files written."""
    deadline = time.monotonic() + limits.deadline_seconds
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(limits.read_seconds, connect=limits.connect_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        try:
            kick = client.get(f"{base.rstrip('/')}/$export", headers=headers | auth)
        except httpx.HTTPError:
            raise ExportFailed(f"{base}: the FHIR server could not be reached") from None
        if kick.status_code != 202 or "content-location" not in kick.headers:
            raise ExportFailed(f"{base}: the export kick-off answered HTTP {kick.status_code}, not 202 with a "
                               "status URL")
        manifest = _poll(client, kick.headers["content-location"], auth, deadline, limits)
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for index, output in enumerate(manifest.get("output") or []):
            url, rtype = str(output.get("url", "")), str(output.get("type", "Resource"))
            same = _origin(url) == _origin(base)
            if not same and manifest.get("requiresAccessToken", True):
                raise ExportFailed(f"{url}: a file on another server that needs the access token; not fetched")
            path = dest / f"{rtype}.{index:03d}.ndjson"
            _stream(client, url, auth if same else {}, path, deadline, limits)
            written.append(path)
    return written


def _poll(client: httpx.Client, status_url: str, auth: dict[str, str], deadline: float,
          limits: ExportLimits) -> dict[str, Any]:
    while time.monotonic() < deadline:
        try:
            status = client.get(status_url, headers={"Accept": "application/json"} | auth)
        except httpx.HTTPError:
            raise ExportFailed("the export status could not be read") from None
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            return manifest
        if status.status_code != 202:
            raise ExportFailed(f"the export failed: its status answered HTTP {status.status_code}")
        wait = status.headers.get("retry-after", "2")
        time.sleep(min(float(wait) if wait.replace(".", "", 1).isdigit() else 2.0, limits.max_wait_seconds,
                       max(0.0, deadline - time.monotonic())))
    raise ExportFailed(f"the export was not ready within {limits.deadline_seconds:g} s")


def _stream(client: httpx.Client, url: str, auth: dict[str, str], path: Path, deadline: float,
            limits: ExportLimits) -> None:
    size = 0
    try:
        with client.stream("GET", url, headers={"Accept": "application/fhir+ndjson"} | auth) as response:
            if response.status_code != 200:
                raise ExportFailed(f"{url}: answered HTTP {response.status_code}")
            with path.open("wb") as file:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limits.max_file_bytes or time.monotonic() > deadline:
                        raise ExportFailed(f"{url}: over {limits.max_file_bytes} bytes or past the deadline")
                    file.write(chunk)
    except httpx.HTTPError:
        raise ExportFailed(f"{url}: could not be downloaded") from None
