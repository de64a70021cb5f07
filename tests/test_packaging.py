"""The package as a user installs it: a wheel in a fresh venv, run from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.paths import PROJECT_ROOT
from tests.support.servers import free_port, wait_until_up


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the fresh venv's bin folder, the wheel build's output)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(root / "dist"),
                            str(PROJECT_ROOT)], capture_output=True, text=True, timeout=300, check=True)
    wheel = next((root / "dist").glob("hipflex_cds-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    subprocess.run([root / "venv" / "bin" / "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    return root / "venv" / "bin", build.stdout + build.stderr


def outside(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIPFLEX_", "DATABASE_URL", "PYTHON"))}
    return env | {"HOME": str(tmp_path)}


def test_the_wheel_builds_without_warnings_and_carries_the_content(installed: tuple[Path, str]) -> None:
    _, log = installed
    warnings = [line for line in log.splitlines()
                if "warning" in line.lower() and "byte-compiling" not in line and "Location" not in line]
    assert warnings == []
    site = next(installed[0].parent.glob("lib/python*/site-packages"))
    packaged = site / "cds" / "packaged"
    assert {p.name for p in (packaged / "rules").iterdir()} >= {"knee-hip-v1.yaml", "terminology.yaml", "cards.yaml"}
    assert (packaged / "examples" / "P01-classic-right.json").is_file()
    assert not (site / "cds" / "packaged" / "rules").is_symlink()


def test_the_installed_cli_evaluates_the_packaged_p01_from_another_folder(installed: tuple[Path, str],
                                                                         tmp_path: Path) -> None:
    run = subprocess.run([installed[0] / "hipflex-cds", "evaluate", "P01", "--json"], cwd=tmp_path,
                         env=outside(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    topics = [c["source"]["topic"]["code"] for c in json.loads(run.stdout)["cards"]]
    assert topics == ["hip-strengthening", "patellar-glide"]


def test_the_installed_service_answers_p01_with_two_cards(installed: tuple[Path, str], tmp_path: Path) -> None:
    env = outside(tmp_path) | {"HIPFLEX_AS_OF": "2026-11-24"}
    request = subprocess.run([installed[0] / "hipflex-cds", "request", "P01"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
    port = free_port()
    server = subprocess.Popen([installed[0] / "hipflex-cds", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url)
        response = httpx.post(f"{url}/cds-services/hipflex-patient-view", content=request,
                              headers={"Content-Type": "application/json"}, timeout=30)
    finally:
        server.terminate()
        server.wait(10)
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 2
    assert (tmp_path / "var" / "hipflex.sqlite3").is_file()  # the data folder is the working directory's var/
