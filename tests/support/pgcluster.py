"""A throwaway PostgreSQL cluster for one test session: Debian's server binaries, a temporary data folder, a free
loopback port, its own role and random password; stopped and removed at the end. No system cluster, port or
password is assumed, so two checkouts can test side by side."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port

ROLE, DATABASE = "hipflex", "hipflex_test"


def server_binaries() -> Path | None:
    """The newest Debian PostgreSQL bin folder (postgresql-NN), or None when the server is not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _as_owner(command: list[str], folder: Path) -> list[str]:
    """initdb and postgres refuse to run as root: under root they run as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return command
    shutil.chown(folder, "postgres")
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def throwaway_cluster(binaries: Path) -> Iterator[str]:
    """Start a cluster and yield its URL (database hipflex_test owned by role hipflex)."""
    folder = Path(tempfile.mkdtemp(prefix="hipflex-pg-"))
    password, port = secrets.token_hex(16), free_port()
    (folder / "pw").write_text(password)
    data = folder / "data"

    def run(*command: object) -> None:
        subprocess.run(_as_owner([str(c) for c in command], folder), check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        if os.geteuid() == 0:
            shutil.chown(folder / "pw", "postgres")
        run(binaries / "initdb", "-D", data, "-U", ROLE, "--pwfile", folder / "pw", "--auth", "scram-sha-256",
            "-E", "UTF8", "--no-locale", "--no-sync")
        run(binaries / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
        try:
            url = f"postgresql://{ROLE}:{password}@127.0.0.1:{port}"
            _create_database(url)
            yield f"{url}/{DATABASE}"
        finally:
            run(binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(url: str) -> None:
    import psycopg

    with psycopg.connect(f"{url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")
