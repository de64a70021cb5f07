"""Connections with limits, on the real `serve`: idle, slow-header and slow-body connections are closed in time,
the connection limit answers 503, and the service answers normally once they are gone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.builders import hook_request
from tests.support.servers import served_by_cli

PATIENT_VIEW = "/cds-services/hipflex-patient-view"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"HIPFLEX_DATA_DIR": str(tmp_path_factory.mktemp("served")), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_REQUEST_HEAD_SECONDS": "1", "HIPFLEX_REQUEST_BODY_SECONDS": "2",
           "HIPFLEX_KEEP_ALIVE_SECONDS": "1", "HIPFLEX_MAX_CONNECTIONS": "100"}
    with served_by_cli(env) as url:
        yield url


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within `within` s, what it sent first)."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_a_connection_that_sends_nothing_is_closed_after_the_head_time(served: str) -> None:
    with connect(served) as sock:
        started = time.monotonic()
        closed, _ = closed_by_server(sock, within=6)
    assert closed
    assert 0.8 < time.monotonic() - started < 6


def test_headers_sent_a_line_at_a_time_are_cut_off(served: str) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 8 and not closed:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, _ = closed_by_server(sock, within=0.3)
    assert closed
    assert time.monotonic() - started < 8


def test_a_body_that_trickles_gets_408_and_the_connection_is_closed(served: str) -> None:
    with connect(served) as sock:
        sock.sendall(f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n{".encode())
        started, answer = time.monotonic(), b""
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            closed, received = closed_by_server(sock, within=0.3)
            answer += received
            if closed:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"did not arrive within 2 s" in answer
    assert time.monotonic() - started < 10


def test_beyond_the_connection_limit_calls_get_503_and_once_idle_ones_close_they_answer(served: str) -> None:
    idle = [connect(served) for _ in range(150)]
    try:
        time.sleep(0.3)
        with httpx.Client() as client:
            crowded = client.post(f"{served}{PATIENT_VIEW}", json=hook_request())
        time.sleep(2.5)  # the head time (1 s) has closed every idle connection
        with httpx.Client() as client:
            after = client.post(f"{served}{PATIENT_VIEW}", json=hook_request())
    finally:
        for sock in idle:
            sock.close()
    assert crowded.status_code == 503
    assert after.status_code == 200
    assert after.json()["cards"]


def test_keep_alive_connections_are_closed_when_idle(served: str) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        closed, received = closed_by_server(sock, within=6)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert closed
    assert time.monotonic() - started < 6
