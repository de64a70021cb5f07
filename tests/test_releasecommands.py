"""The release commands, run as docs/releases.md's worked example says, against `hipflex-cds serve` in a
subprocess: check, publish, shadow (with the disagreements on /review/releases in a real browser), activate,
replay a card issued before the switch under both releases, and roll back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser

from cds.hooks.releases import current
from cds.hooks.store import Store
from tests.support.builders import hook_request
from tests.support.paths import PROJECT_ROOT
from tests.support.servers import served_by_cli

BIN = Path(sys.executable).parent
SHOTS = PROJECT_ROOT / "test-artifacts" / "releases"
PATIENT_VIEW = "/cds-services/hipflex-patient-view"


def worked_example() -> str:
    text = (PROJECT_ROOT / "docs" / "releases.md").read_text()
    block = text.split("<!-- release-example -->", 1)[1].split("<!-- /release-example -->", 1)[0]
    return block.strip().removeprefix("```sh").removesuffix("```").replace(".venv/bin/", f"{BIN}/")


def cards_of(url: str, example: str) -> list[str]:
    body = hook_request(name=example)
    response = httpx.post(f"{url}{PATIENT_VIEW}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return [str(c["source"]["topic"]["code"]) for c in cards]


def eventually(check: Any, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_the_worked_example_runs_as_written(tmp_path: Path, browser: Browser) -> None:
    env = {"HIPFLEX_DATA_DIR": str(tmp_path / "var"), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_PATIENT_HASH_KEY": "release-test", "HIPFLEX_RELEASE_CHECK_SECONDS": "0.3"}
    with served_by_cli(env) as url:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", worked_example()], cwd=PROJECT_ROOT,
                              env=os.environ | env | {"CDS": url, "T": str(tmp_path)}, capture_output=True,
                              text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        check = out.split("Release 1.1.0 against the active release 1.0.0", 1)[1].split("READY to publish", 1)[0]
        assert "✓ content and decision-table checks" in check
        assert "✓ versions and changelog" in check
        assert "✓ scenarios" in check
        assert "- hyperextension present threshold 5° → 8°" in check
        assert "- D3-angle v1 → v2: hyperextension present 5° → 8°" in check
        assert "lost patellar-glide" in check  # the population comparison, by card, side and rule
        summary = json.loads((tmp_path / "check" / "impact" / "summary.json").read_text())
        assert "hyperextension present threshold 5° → 8°" in summary["rule_changes"]

        releases = (tmp_path / "releases.html").read_text()
        assert '<span class="calls">3</span> calls seen, <span class="disagreements">2</span>' in releases
        assert "lost hip-test:right by R5 v1" in releases
        metrics = httpx.get(f"{url}/metrics").text
        assert 'hipflex_shadow_disagreements_total{release="1.1.0"} 2.0' in metrics

        replayed = out.split("Card ", 1)[1]
        assert "hip-test:right, made by R5 v1 under release 1.0.0" in replayed
        assert "the same card again" in replayed
        assert "would differ: loses hip-test:right" in replayed

        listed = out.splitlines()[-2:]
        assert any(line.startswith("1.0.0") and " active " in line for line in listed), listed
        assert any(line.startswith("1.1.0") and " retired " in line for line in listed), listed

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/review/releases")
        assert page.locator("#shadow-1\\.1\\.0 .disagreements").inner_text() == "2"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "releases.png"), full_page=True)
        page.close()

        store = Store(f"sqlite:///{tmp_path / 'var' / 'hipflex.sqlite3'}", b"release-test")
        assert current(store, "active") == "1.0.0"
        store.close()
        assert eventually(lambda: cards_of(url, "P12a-hyperextension-5deg.json") == ["hip-test"])


def test_the_active_release_decides_the_calls_and_a_rollback_restores_it(tmp_path: Path) -> None:
    """A release made active is followed by the running service, and so is the rollback; every card records its
    release."""
    candidate = tmp_path / "candidate"
    subprocess.run(["cp", "-r", str(PROJECT_ROOT / "rules"), str(candidate)], check=True)
    rules = candidate / "knee-hip-v1.yaml"
    rules.write_text(rules.read_text().replace("  hyperextension_present:\n    value: 5",
                                               "  hyperextension_present:\n    value: 8")
                     .replace("  - id: D3-angle\n    version: 1", "  - id: D3-angle\n    version: 2"))
    manifest = candidate / "release.yaml"
    manifest.write_text(manifest.read_text().replace("changelog:\n", 'changelog:\n  - version: 1.1.0\n    date: '
                                                     '"2026-12-02"\n    approved_by: "Q"\n    changes: ["8°"]\n'))
    env = {"HIPFLEX_DATA_DIR": str(tmp_path / "var"), "HIPFLEX_AS_OF": "2026-11-24",
           "HIPFLEX_PATIENT_HASH_KEY": "k", "HIPFLEX_RELEASE_CHECK_SECONDS": "0.3"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "hipflex-cds"), *args], env=os.environ | env, capture_output=True,
                              text=True, timeout=300, check=False)

    with served_by_cli(env) as url:
        assert cards_of(url, "P12a-hyperextension-5deg.json") == ["hip-test"]
        assert cli("release", "publish", str(candidate)).returncode == 0
        assert cli("release", "activate", "1.1.0").returncode == 0
        assert eventually(lambda: cards_of(url, "P12a-hyperextension-5deg.json") == [])
        assert cards_of(url, "P01-classic-right.json") == ["hip-strengthening", "patellar-glide"]  # 8°: kept
        assert cli("release", "activate", "1.0.0").returncode == 0
        assert eventually(lambda: cards_of(url, "P12a-hyperextension-5deg.json") == ["hip-test"])
    scenarios = subprocess.run([str(BIN / "hipflex-cds"), "release", "scenarios", "1.1.0"], env=os.environ | env,
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert scenarios.returncode == 1  # the published 1.1.0 against today's scenarios: the 5° one pins 1.0.0
    assert "patellar glides" in scenarios.stdout or "hyperextension_of_5" in scenarios.stdout
    store = Store(f"sqlite:///{tmp_path / 'var' / 'hipflex.sqlite3'}", b"k")
    with store.engine.connect() as conn:
        versions = [r[0] for r in conn.exec_driver_sql("SELECT release_version FROM issued_cards")]
    store.close()
    assert set(versions) == {"1.0.0", "1.1.0"}


def test_a_changed_rule_that_kept_its_version_is_not_published(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate"
    subprocess.run(["cp", "-r", str(PROJECT_ROOT / "rules"), str(candidate)], check=True)
    rules = candidate / "knee-hip-v1.yaml"
    rules.write_text(rules.read_text().replace("  hyperextension_present:\n    value: 5",
                                               "  hyperextension_present:\n    value: 8"))
    manifest = candidate / "release.yaml"
    manifest.write_text(manifest.read_text().replace("changelog:\n", 'changelog:\n  - version: 1.1.0\n    date: '
                                                     '"2026-12-02"\n    approved_by: "Q"\n    changes: ["8°"]\n'))
    env = os.environ | {"HIPFLEX_DATA_DIR": str(tmp_path / "var"), "HIPFLEX_PATIENT_HASH_KEY": "k"}
    done = subprocess.run([str(BIN / "hipflex-cds"), "release", "publish", str(candidate)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "rule D3-angle changed (hyperextension present 5° → 8°) but kept version 1" in done.stdout
    assert "release 1.1.0 is not published" in done.stderr
