"""The README's service tour, run as written against `hipflex-cds serve` in a subprocess, restart included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.paths import PROJECT_ROOT
from tests.support.servers import free_port

BIN = Path(sys.executable).parent


TOUR_FOLDER: list[Path] = [Path(".")]  # the folder the tour writes to (the test's own), for both runs


def tour(tmp: Path) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("<!-- service-tour -->", 1)[1].split("<!-- /service-tour -->", 1)[0]
    script = block.strip().removeprefix("```sh").removesuffix("```")
    TOUR_FOLDER[0] = tmp
    return script.replace(".venv/bin/", f"{BIN}/")


@contextmanager
def serving(tmp: Path, port: int) -> Iterator[None]:
    env = os.environ | {"DATABASE_URL": f"sqlite:///{tmp / 'tour.sqlite3'}", "HIPFLEX_AS_OF": "2026-11-24",
                        "HIPFLEX_PATIENT_KEY_FILE": str(tmp / "key")}
    process = subprocess.Popen([BIN / "hipflex-cds", "serve", "--port", str(port)], env=env, cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "AUTHENTICATION IS OFF" in output


def run(script: str, port: int) -> list[str]:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=os.environ | {"CDS": f"http://127.0.0.1:{port}",
                                                                                        "T": str(TOUR_FOLDER[0])},
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()


def test_the_readme_tour_returns_two_cards_and_keeps_feedback_across_a_restart(tmp_path: Path) -> None:
    port, script = free_port(), tour(tmp_path)
    with serving(tmp_path, port):
        lines = run(script, port)
    assert '"services"' in lines[0]
    summaries = lines[1:-1]
    assert len(summaries) == 2
    assert "hip" in summaries[0].lower()
    assert "patell" in summaries[1].lower() or "kneecap" in summaries[1].lower()
    assert lines[-1] == '{"stored":1,"duplicates":0}'
    last_curl = script.strip().splitlines()[-1]
    with serving(tmp_path, port):
        assert run(last_curl, port) == ['{"stored":0,"duplicates":1}']
