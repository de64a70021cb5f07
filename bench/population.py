"""`make bench-long`, population part: patients per second with 1 and 2 Dask worker processes, and each worker's
peak memory for 10,000 and 100,000 synthetic patients (it must not grow with the number of patients)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cds.population.impact import Run, run_impact
from cds.population.synth import synthesise
from tests.support.paths import EXAMPLE_DATE, PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"


def figures(patients: int, workers: int, folder: Path) -> dict[str, Any]:
    export = folder / f"export-{patients}"
    if not export.exists():
        synthesise(patients, 11, export, as_of=EXAMPLE_DATE)
    out = folder / f"out-{patients}-{workers}"
    summary = run_impact(export, out, Run(as_of=EXAMPLE_DATE, patient_key=b"bench", out=str(out)), scheduler=None,
                         workers=workers)
    return {"patients": patients, "workers": workers, "patients_per_second": summary.patients_per_second,
            "worker_peak_rss_mb": summary.worker_peak_rss_mb}


def main(sizes: list[int]) -> None:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for patients in sizes:
            for workers in (1, 2):
                print(f"{patients:,} patients, {workers} worker(s)", file=sys.stderr, flush=True)
                started = time.monotonic()
                results.append(figures(patients, workers, Path(folder)) | {"wall_s": round(time.monotonic() -
                                                                                           started, 1)})
    for row in results:
        print(f"{row['patients']:>8,} patients  {row['workers']} worker(s)  {row['patients_per_second']:>7,.0f}/s  "
              f"peak RSS per worker {row['worker_peak_rss_mb']} MB")
    for patients in sizes:
        one, two = (next(r for r in results if r["patients"] == patients and r["workers"] == w) for w in (1, 2))
        print(f"{patients:,}: 2 workers x{two['patients_per_second'] / one['patients_per_second']:.2f} of one")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-population.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1:]] or [10_000, 100_000])
