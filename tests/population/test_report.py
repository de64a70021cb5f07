"""The analyst's report of a rule change, opened in a real browser: clinical words only, never an internal code,
a before/after table per card kind and side, and the thresholds that changed with their old and new values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from cds.content.facts import IssueCode
from cds.population.impact import Run, run_impact
from cds.population.synth import synthesise
from tests.support.paths import EXAMPLE_DATE, PROJECT_ROOT, RULES

SHOTS = PROJECT_ROOT / "test-artifacts" / "population"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    synthesise(300, 7, folder / "export", as_of=EXAMPLE_DATE)
    candidate = folder / "candidate"
    shutil.copytree(RULES, candidate)
    rules = candidate / "knee-hip-v1.yaml"
    rules.write_text(rules.read_text().replace("  hyperextension_present:\n    value: 5",
                                               "  hyperextension_present:\n    value: 8"))
    out = folder / "out"
    run_impact(folder / "export", out, Run(as_of=EXAMPLE_DATE, patient_key=b"k", rules=str(candidate),
                                           baseline=str(RULES), out=str(out), show_ids=True),
               scheduler=None, workers=1)
    return out / "report.html"


def test_the_report_speaks_clinical_words_only(report: Path, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(report.as_uri())
    text = page.inner_text("body")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "impact-report.png"), full_page=True)
    page.close()
    kinds = [line.split(":")[0].strip() for line in (RULES / "cards.yaml").read_text().splitlines()
             if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":")]
    assert "patellar-glide" in kinds
    codes = [code.value for code in IssueCode if "-" in code.value]
    shown = [word for word in [*kinds, *codes, ":-", ":left", ":right"] if word in text]
    assert shown == []
    assert "hyperextension present threshold 5° → 8°" in text
    assert "Lost: Inferior patellar glide (right knee), made by R4 v1" in text or \
           "Lost: Inferior patellar glide (left knee), made by R4 v1" in text
    assert "syn-0" in text  # --show-patient-ids: the export's own ids, which the analyst can look up


def test_the_before_after_table_counts_each_card_kind_and_side(report: Path, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(report.as_uri())
    rows = {r.locator("td").nth(0).inner_text(): [r.locator("td").nth(i).inner_text() for i in (1, 2, 3)]
            for r in page.locator("table.before-after tbody tr").all()}
    page.close()
    glides = [v for k, v in rows.items() if k.startswith("Inferior patellar glide")]
    assert glides
    for before, after, change in glides:
        assert int(after) <= int(before)  # a higher threshold only takes glides away
        assert int(change) == int(after) - int(before)
    assert any(int(change) < 0 for _, _, change in glides)
