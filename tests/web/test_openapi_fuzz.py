"""Schema-driven fuzzing: schemathesis generates requests from /openapi.json against a real server; no 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cds.web.app import create_app
from tests.support.servers import running, service_settings


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    with running(create_app(service_settings(tmp_path))) as url:
        run = subprocess.run([Path(sys.executable).with_name("schemathesis"), "run", f"{url}/openapi.json",
                              "--checks", "not_a_server_error", "--max-examples", "60",
                              "--generation-deterministic", "--request-timeout", "20"],
                             capture_output=True, text=True, timeout=300, check=False)
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary
    assert "generated" in summary
