"""Real servers for the tests: the service under uvicorn, and a FHIR server stub for the EHR side."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from cds.settings import Settings
from tests.support.paths import EXAMPLE_DATE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (in this process, so logs can be captured)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until_up(url: str, seconds: float = 60) -> None:
    """Until a service started as a subprocess answers /health/live (or the time is up)."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health/live", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)


def service_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test service: its own SQLite file, a fixed patient-hash key, the example date."""
    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp / 'hipflex.sqlite3'}", "patient_hash_key": "test-key",
                              "as_of": EXAMPLE_DATE}
    return Settings(**(values | overrides))



@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class FhirStub:
    """A real HTTP FHIR server on localhost serving canned JSON by path (with query), recording requests."""

    base: str
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay_seconds: float = 0.0
    trickle_seconds: float = 0.0  # > 0: send the body one byte at a time, this long apart (a hostile server)

    def serve(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = (status, body)

    def paths(self) -> list[str]:
        return [s.path.split("?")[0] for s in self.seen]



class Backlogged(http.server.ThreadingHTTPServer):
    """A listen backlog of 128, not socketserver's 5: a hook call opens 8 reads at once, and a dropped SYN is
    retried only after a second, which made calls miss their deadline at random."""

    request_queue_size = 128


@contextlib.contextmanager
def fhir_server() -> Iterator[FhirStub]:
    stub = FhirStub(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.seen.append(Seen("GET", self.path.removeprefix("/fhir/"), self.headers.get("Authorization")))
            time.sleep(stub.delay_seconds)
            path = urllib.parse.unquote(self.path.removeprefix("/fhir/"))
            status, body = stub.routes.get(path, stub.routes.get(path.split("?")[0], (404, None)))
            payload = json.dumps(body or {"resourceType": "OperationOutcome"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not stub.trickle_seconds:
                self.wfile.write(payload)
                return
            try:
                for index in range(len(payload)):
                    self.wfile.write(payload[index:index + 1])
                    self.wfile.flush()
                    time.sleep(stub.trickle_seconds)
            except OSError:
                return  # the reader gave up: what a deadline is for

        def log_message(self, *args: Any) -> None:
            pass

    server = Backlogged(("127.0.0.1", 0), Handler)
    stub.base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


@dataclass
class ExportStub:
    """A real HTTP server for Bulk Data `$export`: routes by path to (status, headers, body), recording each
    request's path and Authorization header. `base` is its FHIR base URL."""

    base: str
    origin: str
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def serve(self, path: str, body: bytes | Any = b"", status: int = 200, **headers: str) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[path] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, payload)

    def kick_off(self, status_url: str) -> None:
        self.serve("/fhir/$export", status=202, Content_Location=status_url)

    def auth_for(self, prefix: str) -> set[str | None]:
        return {auth for path, auth in self.seen if path.startswith(prefix)}


@contextlib.contextmanager
def export_server() -> Iterator[ExportStub]:
    stub = ExportStub(base="", origin="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.seen.append((self.path, self.headers.get("Authorization")))
            status, headers, body = stub.routes.get(self.path, (404, {}, b"{}"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may stop reading at a cap
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = Backlogged(("127.0.0.1", 0), Handler)
    stub.origin = f"http://127.0.0.1:{server.server_address[1]}"
    stub.base = f"{stub.origin}/fhir"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield stub
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def served_by_cli(env: dict[str, str], port: int | None = None) -> Iterator[str]:
    """`hipflex-cds serve` as a user runs it, in a subprocess with only `env` (and PATH); its URL until stopped."""
    import subprocess
    import sys

    port = port or free_port()
    server = subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", "--port", str(port)],
                              env={"PATH": "/usr/bin:/bin"} | env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield url
    finally:
        server.terminate()
        server.wait(20)
