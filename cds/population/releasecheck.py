"""`hipflex-cds release check CANDIDATE_DIR`: everything a knowledge engineer needs before signing a release off,
in one run: the candidate loads with every start-up check (content, decision table, engine limits); it is a new
version whose changed rules got new versions; every scenario passes against it; and, given an export, what it
would change for that population compared with the active release.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cds.clinical.pipeline import Pipeline
from cds.content.changes import Changes, compare
from cds.content.release import Release, read_release, version_key
from cds.errors import HipflexError
from cds.hooks.liverelease import uses_packaged_content
from cds.hooks.releases import current, materialise
from cds.hooks.store import Store
from cds.population.impact import Run, run_impact
from cds.population.summary import Summary
from cds.settings import Settings


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not run (said why in `details`)
    details: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    candidate: str
    active: str
    checks: list[Check]
    changes: Changes | None = None
    population: Summary | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


def active_content(settings: Settings, store: Store | None) -> tuple[Path, str]:
    """The folder and version of what the service decides with now: the store's active release, else the
    configured (packaged) content."""
    active = current(store, "active") if store is not None and uses_packaged_content(settings) else None
    if store is not None and active is not None:
        return materialise(store, active, settings), active
    folder = settings.content.rules_dir
    release = read_release(folder) if (folder / "release.yaml").is_file() else None
    return folder, release.version if release else "(unreleased)"


def check_release(candidate_dir: Path, settings: Settings, store: Store | None, *, export: Path | None,
                  out: Path, scenarios: bool, progress: Callable[[str], None], patient_key: bytes,
                  features: Path | None = None) -> Verdict:
    progress("reading the candidate")
    candidate = read_release(candidate_dir)
    active_dir, active_version = active_content(settings, store)
    verdict = Verdict(candidate.version, active_version, [])
    progress("loading it with every start-up check")
    try:
        new = Pipeline.for_content(settings, candidate_dir, cache=False)
    except HipflexError as exc:
        verdict.checks.append(Check("content and decision-table checks", False, [str(exc)]))
        return verdict
    verdict.checks.append(Check("content and decision-table checks", True))
    old = Pipeline.for_content(settings, active_dir, cache=False)
    verdict.changes = compare(old.ruleset, new.ruleset)
    verdict.checks.append(_versions(candidate, active_version, verdict.changes))
    if scenarios:
        progress("running every scenario against the candidate")
        verdict.checks.append(run_scenarios(candidate_dir, out, features))
    else:
        verdict.checks.append(Check("scenarios", None, ["not run (--no-scenarios)"]))
    if export is not None:
        progress(f"deciding every patient of {export} under both releases")
        verdict.population = run_impact(export, out / "impact", Run(
            as_of=settings.as_of or dt.date.today(), patient_key=patient_key, rules=str(candidate_dir.resolve()),
            baseline=str(active_dir.resolve()), out=str(out / "impact")), scheduler=None, workers=2)
        verdict.checks.append(Check("population comparison", None, [
            f"{verdict.population.patients_whose_cards_change or 0:,} of {verdict.population.patients_evaluated:,} "
            f"patients' cards change; report: {out / 'impact' / 'report.html'}"]))
    else:
        verdict.checks.append(Check("population comparison", None, ["not run (give --export DIR)"]))
    return verdict


def _versions(candidate: Release, active: str, changes: Changes) -> Check:
    problems = []
    if active != "(unreleased)" and version_key(candidate.version) <= version_key(active):
        problems.append(f"version {candidate.version} is not above the active release {active}")
    problems += [f"rule {c.rule} changed ({'; '.join(c.what)}) but kept version {c.old_version}"
                 for c in changes.kept_version]
    return Check("versions and changelog", not problems, problems or [
        f"{candidate.version}, approved by {candidate.manifest.note.approved_by}: "
        + "; ".join(candidate.manifest.note.changes)])


SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors)")
SCENARIOS_ONLY = "not unknown_step and not example_scenario and not step_reference and not every_step_is_documented"


def run_scenarios(candidate_dir: Path, out: Path, features: Path | None = None) -> Check:
    """Every scenario of `features` (default: features/) against the candidate, through the project's step plugin
    (a source checkout: `make test` installs what it needs). A candidate that changes what a scenario expects
    comes with its scenarios changed too: give their folder."""
    root = Path.cwd()
    folder = (features or root / "features").resolve()
    if not folder.is_dir() or not (root / "tests" / "test_features.py").is_file():
        return Check("scenarios", None, [f"not run: no {folder} or no tests/ in {root} (run from a checkout)"])
    env = os.environ | {"HIPFLEX_RULES_DIR": str(candidate_dir.resolve()), "HIPFLEX_FEATURE_REPORTS": str(out),
                        "HIPFLEX_FEATURES_DIR": str(folder)}
    env.pop("HIPFLEX_RULE_PATH", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov",
                           "tests/test_features.py", "-k", SCENARIOS_ONLY],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800, check=False)
    counts = {kind: int(n) for n, kind in SUMMARY.findall(done.stdout.splitlines()[-1] if done.stdout else "")}
    failed = [line.removeprefix("FAILED ").split(" - ")[0] for line in done.stdout.splitlines()
              if line.startswith("FAILED ")]
    details = [f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed", *failed[:20]]
    return Check("scenarios", done.returncode == 0, details)
