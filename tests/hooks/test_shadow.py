"""A shadow release never changes the real answer and never fails it, even when it raises on purpose under load;
where a working one disagrees is stored with the patient hash and counted."""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path
from typing import Any, NoReturn

import httpx

from cds.clinical.pipeline import Pipeline
from cds.hooks.shadow import shadow_summaries
from cds.web.app import create_app
from tests.support.builders import hook_request
from tests.support.paths import RULES
from tests.support.servers import running, service_settings

PATIENT_VIEW = "/cds-services/hipflex-patient-view"


class RaisingPipeline(Pipeline):
    """A shadow release whose every decision fails."""

    def decide(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("a shadow release that fails on purpose")


def kinds(body: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


def test_a_failing_shadow_release_changes_no_answer_and_adds_no_5xx_under_load(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path))
    cds = app.state.cds
    with running(app) as url:
        expected = kinds(httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), timeout=30).json())
        cds.calls.live.shadow = RaisingPipeline(cds.settings)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), timeout=60),
                                      range(80)))
        assert [r.status_code for r in responses] == [200] * 80
        assert all(kinds(r.json()) == expected for r in responses)
        cds.calls.shadows.pool.shutdown(wait=True)
        metrics = httpx.get(f"{url}/metrics").text
    failed = next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('hipflex_shadow_skipped_total{reason="failed"}'))
    dropped = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('hipflex_shadow_skipped_total{reason="dropped"}'))
    assert failed + dropped == 80
    assert failed >= 1
    assert shadow_summaries(cds.store) == []  # nothing stored for a shadow that never decided


def test_a_working_shadow_release_stores_where_it_would_differ(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(RULES, candidate)
    rules = candidate / "knee-hip-v1.yaml"
    rules.write_text(rules.read_text().replace("  - id: R4\n    version: 1\n    status: active",
                                               "  - id: R4\n    version: 2\n    status: draft"))  # no glides
    app = create_app(service_settings(tmp_path))
    cds = app.state.cds
    cds.calls.live.shadow = Pipeline(cds.settings.with_flat(rules_dir=candidate))
    with running(app) as url:
        live = httpx.post(f"{url}{PATIENT_VIEW}", json=hook_request(), timeout=30).json()  # P01: 8°
        cds.calls.shadows.pool.shutdown(wait=True)
    assert kinds(live) == ["hip-strengthening", "patellar-glide"]  # the live answer, whatever the shadow says
    [summary] = shadow_summaries(cds.store)
    assert (summary.calls, summary.disagreements) == (1, 1)
    assert summary.by_rule == {"lost patellar-glide:right by R4 v1": 1}
    with cds.store.engine.connect() as conn:
        [stored] = conn.exec_driver_sql("SELECT patient_hash FROM shadow_results").scalars().all()
    assert stored == cds.store.patient_hash("p01")
