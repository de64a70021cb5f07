"""`hipflex-cds impact`: the rules over a whole Bulk FHIR export, on Dask, with an optional rule-file diff.

The export is read once, file by file, line by line, and each resource is appended to one of a few
bucket files by a hash of its patient, so every patient's resources meet in one bucket and no process
ever holds the export. Each bucket is one Dask task: a worker process builds its pipeline once
(durable_rules is not thread-safe: one engine per process, one thread per worker), evaluates every
patient of the bucket exactly as the service does (validation, engine, cards; patient-view, a
practitioner), writes its rows to a Parquet part and returns only counts. Patient ids leave the worker
only as keyed hashes, as in the store. Workers must see the export's folder (same machine or shared disk).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import from_json

from cds.clinical.context import Context
from cds.clinical.gctuning import settle_after_loading
from cds.clinical.pipeline import Decision, Pipeline
from cds.content.changes import compare
from cds.content.facts import ISSUE_MEANINGS, AgeFact, IssueCode
from cds.errors import HipflexError
from cds.hooks.store import patient_digest
from cds.population.bulkexport import PROBLEMS_FILE
from cds.population.ndjson import export_files, ndjson_lines, parse_line
from cds.population.summary import Change, PatientOutcome, Summary, Unreadable
from cds.settings import Settings

USER = "Practitioner/impact"
EXAMPLES = 5  # patient hashes kept per change, to inspect


@dataclass(frozen=True)
class Run:
    """What every task needs to know; plain data, so it travels to any Dask worker."""

    as_of: dt.date
    patient_key: bytes
    rules: str | None = None  # a rule file, or a content (release) folder; None: the configured content
    baseline: str | None = None  # the rule file or content folder to compare against, if any
    out: str = ""  # where Parquet parts go
    show_ids: bool = False  # examples by the export's own patient ids (the analyst holds the export), not hashes


@dataclass
class Tally:
    """Counts one bucket (or the whole run, once added up) produces."""

    patients: int = 0
    out_of_scope: int = 0
    orphans: int = 0  # resources of patients the export has no Patient for
    cards: Counter[str] = field(default_factory=Counter)
    baseline_cards: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    issues: Counter[str] = field(default_factory=Counter)
    ages_with_cards: Counter[str] = field(default_factory=Counter)
    changed: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        for name in ("patients", "out_of_scope", "orphans", "changed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("cards", "baseline_cards", "rules", "issues", "ages_with_cards", "changes"):
            getattr(self, name).update(getattr(other, name))
        for key, hashes in other.examples.items():
            self.examples.setdefault(key, []).extend(hashes[:EXAMPLES - len(self.examples.get(key, []))])


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient id a resource belongs to (its own id for a Patient, else subject/patient)."""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id"))
    for name in ("subject", "patient"):
        holder = resource.get(name)
        reference = holder.get("reference") if isinstance(holder, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return None


class Problems:
    """Lines and files that could not be read, counted by what was wrong, with the first few places named."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.where: dict[str, list[str]] = {}

    def add(self, what: str, place: str) -> None:
        self.counts[what] += 1
        if len(self.where.setdefault(what, [])) < EXAMPLES:
            self.where[what].append(place)

    def summary(self) -> list[Unreadable]:
        return [Unreadable(problem=what, count=n, first=self.where[what]) for what, n in sorted(self.counts.items())]


def bucket(export: Path, work: Path, buckets: int) -> tuple[list[Path], list[int], int, Problems]:
    """Spread the export over `buckets` files by patient; (bucket files, patients per bucket, unattributed,
    the lines and files that could not be read)."""
    work.mkdir(parents=True, exist_ok=True)
    paths = [work / f"bucket-{i:04d}.ndjson" for i in range(buckets)]
    handles = [p.open("w", encoding="utf-8") for p in paths]
    patients, unattributed, problems = [0] * buckets, 0, Problems()
    try:
        for path in export_files(export):
            number = 0
            try:
                for number, line in ndjson_lines(path):
                    if line is not None and not line.strip():
                        continue
                    resource, wrong = parse_line(line)
                    if resource is None or line is None:
                        problems.add(str(wrong), f"{path.name}:{number}")
                        continue
                    pid = patient_of(resource)
                    if pid is None:
                        unattributed += 1
                        continue
                    index = zlib.crc32(pid.encode()) % buckets
                    handles[index].write(line.decode("utf-8").rstrip("\r\n") + "\n")
                    patients[index] += resource.get("resourceType") == "Patient"
            except (OSError, EOFError, zlib.error):
                problems.add("a file that ends early or is not gzip (the rest of it was not read)",
                             f"{path.name}:{number + 1}")
    finally:
        for handle in handles:
            handle.close()
    return paths, patients, unattributed, problems


BUCKET_BYTES = 4_000_000  # NDJSON per bucket: what one task holds in memory, whatever the export's size


def buckets_for(export: Path, workers: int) -> int:
    """Enough buckets that each holds about BUCKET_BYTES (so a worker's memory does not grow with the export),
    and at least four per worker (so the work spreads); gzipped files count at eight times their size."""
    size = sum(p.stat().st_size * (8 if p.name.endswith(".gz") else 1) for p in export_files(export))
    return max(4 * workers, -(-size // BUCKET_BYTES))


_PIPELINES: dict[tuple[str | None, str | None], tuple[Pipeline, Pipeline | None]] = {}


def pipelines(run: Run) -> tuple[Pipeline, Pipeline | None]:
    """This process's pipelines for the run (built once per worker process, reused by every task)."""
    key = (run.rules, run.baseline)
    if key not in _PIPELINES:
        def build(content: str | None) -> Pipeline:
            if content is not None and Path(content).is_dir():
                return Pipeline(Settings(rules_dir=Path(content), decision_cache_size=0))
            return Pipeline(Settings(rule_path=Path(content) if content else None, decision_cache_size=0))
        _PIPELINES[key] = (build(run.rules), build(run.baseline) if run.baseline else None)
        settle_after_loading()  # the worker now holds its content for good
    return _PIPELINES[key]


def evaluate_bucket(path: str, run: Run, part: int) -> Tally:
    """One Dask task: every patient of one bucket file; rows to a Parquet part, counts back."""
    candidate, baseline = pipelines(run)
    groups: dict[str, list[dict[str, Any]]] = {}
    with open(path, "rb") as lines:
        for line in lines:
            resource = from_json(line, cache_strings="keys")  # every line was read and checked when bucketed
            groups.setdefault(str(patient_of(resource)), []).append(resource)
    tally, rows = Tally(), []
    for pid, resources in groups.items():
        if not any(r.get("resourceType") == "Patient" for r in resources):
            tally.orphans += len(resources)
            continue
        digest = patient_digest(run.patient_key, pid)
        now = outcome(candidate, resources, pid, run.as_of)
        row: dict[str, Any] = {"patient": digest, "age": now.age, "cards": now.cards, "rules": now.rules,
                               "issues": now.issues}
        tally.patients += 1
        tally.out_of_scope += not now.in_scope
        tally.cards.update(now.cards)
        tally.rules.update(now.rules)
        tally.issues.update(now.issues)
        if now.cards and now.age is not None:
            tally.ages_with_cards[f"{now.age // 10 * 10}s"] += 1
        if baseline is not None:
            before = outcome(baseline, resources, pid, run.as_of)
            tally.baseline_cards.update(before.cards)
            _diff(tally, row, before, now, pid if run.show_ids else digest)
        rows.append(row)
    _write_part(rows, Path(run.out) / "patients.parquet" / f"part-{part:05d}.parquet", baseline is not None)
    return tally


def outcome(pipeline: Pipeline, resources: list[dict[str, Any]], pid: str, as_of: dt.date) -> PatientOutcome:
    """What the service would show this patient: card kinds and sides, the rules behind them, data issues."""
    decision = pipeline.decide(resources, Context(today=as_of, patient_id=pid, user_id=USER,
                                                  lookback_days=pipeline.settings.lookback_days))
    explanations = [card.explanation for card in decision.cards]
    cards = sorted(f"{e.recommendation.card}:{e.recommendation.side or '-'}" for e in explanations)
    makers = {f"{e.recommendation.card}:{e.recommendation.side or '-'}": sorted(r.label for r in e.rules
                                                                                if r.recommends)
              for e in explanations}
    age = next((f.years for f in decision.validated.facts if isinstance(f, AgeFact)), None)
    return PatientOutcome(cards=cards, makers=makers, rules=sorted({r.label for e in explanations for r in e.rules}),
                          issues=sorted({i.code for i in decision.validated.issues}), age=age,
                          in_scope=in_scope(pipeline, decision))


def in_scope(pipeline: Pipeline, decision: Decision) -> bool:
    """Whether the rules' scope finding (its role in the rule file) was derived; without roles, everyone is."""
    roles = pipeline.ruleset.source.roles
    return roles is None or (roles.scope_finding, None) in decision.evaluation.finding_names()


def _diff(tally: Tally, row: dict[str, Any], before: PatientOutcome, now: PatientOutcome, digest: str) -> None:
    gained = sorted(set(now.cards) - set(before.cards))
    lost = sorted(set(before.cards) - set(now.cards))
    row |= {"baseline_cards": before.cards, "gained": gained, "lost": lost}
    if not gained and not lost:
        return
    tally.changed += 1
    for direction, cards, source in (("gained", gained, now), ("lost", lost, before)):
        for card in cards:
            key = f"{direction} {card} by {', '.join(source.makers.get(card, [])) or 'no rule'}"
            tally.changes[key] += 1
            if len(tally.examples.setdefault(key, [])) < EXAMPLES:
                tally.examples[key].append(digest)


def _write_part(rows: list[dict[str, Any]], path: Path, compared: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, Any] = {"patient": pa.string(), "age": pa.int32(), "cards": pa.list_(pa.string()),
                               "rules": pa.list_(pa.string()), "issues": pa.list_(pa.string())}
    if compared:
        columns |= {name: pa.list_(pa.string()) for name in ("baseline_cards", "gained", "lost")}
    schema = pa.schema(list(columns.items()))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def run_impact(export: Path, out: Path, run: Run, *, scheduler: str | None, workers: int) -> Summary:
    """Bucket the export, evaluate the buckets on Dask (a local cluster of processes, or `scheduler`), write
    summary.json (with its schema), patients.parquet/ and report.html under `out`; the summary."""
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    from cds.population.report import write_report

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    if next(export_files(export), None) is None:
        raise NothingToRead(f"{export}: no .ndjson or .ndjson.gz files")
    paths, per_bucket, unattributed, problems = bucket(export, out / "buckets", buckets_for(export, workers))
    total = sum(per_bucket)
    if not total and not unattributed:
        _remove(paths, out / "buckets")
        raise NothingToRead(f"{export}: not one readable FHIR resource in its NDJSON files "
                            f"({sum(problems.counts.values()):,} lines could not be read)")
    with dask.config.set(WORKER_CONFIG | {"distributed.nanny.pre-spawn-environ": worker_environment()}):
        cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                      dashboard_address=None)
    tally = Tally(orphans=unattributed)
    with Client(scheduler or cluster, timeout=10 if scheduler else 60) as client:
        futures = {client.submit(evaluate_bucket, str(p), run, i, pure=False): n
                   for i, (p, n) in enumerate(zip(paths, per_bucket, strict=True))}
        done = 0
        for future in as_completed(futures):
            tally.add(future.result())
            done += futures[future]
            rate = done / max(time.monotonic() - started, 1e-6)
            print(f"\r{done:,} of {total:,} patients, {rate:,.0f}/s, about {(total - done) / max(rate, 1e-6):.0f} s "
                  "left", end="", file=sys.stderr, flush=True)
        peaks = client.run(peak_rss_mb)
    print(file=sys.stderr)
    if cluster is not None:
        cluster.close()
    _remove(paths, out / "buckets")
    seconds = time.monotonic() - started
    summary = summarise(tally, run, seconds, total, rule_changes(run)).model_copy(update={
        "worker_peak_rss_mb": sorted(peaks.values()), "unreadable": problems.summary(),
        "download_problems": download_problems(export)})
    summary = summary.model_copy(update={"labels": labels(run, summary)})
    summary.write(out)
    write_report(summary, out / "report.html")
    return summary


WORKER_CONFIG = {"distributed.worker.profile.enabled": False}  # Dask's sampler walks the stack every 10 ms


def worker_environment() -> dict[str, Any]:
    """The environment Dask's nanny gives a local worker, less MALLOC_TRIM_THRESHOLD_ (65,536 by default).

    durable_rules allocates and frees each evaluation's session state; with that threshold glibc hands the
    freed pages back to the system at once and the next session faults them in again, which halved the
    patients per second (measured in one process: 800/s without it, 400/s with it). glibc's own threshold
    keeps a steady run's memory flat (`make bench` reports peak RSS at 10,000 and 100,000 patients).
    """
    import dask

    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environment


class NothingToRead(HipflexError):
    """The export holds nothing to evaluate; the message says what was found instead."""


def _remove(paths: list[Path], folder: Path) -> None:
    for path in paths:
        path.unlink()
    folder.rmdir()


def download_problems(export: Path) -> list[str]:
    """What `--from-server` could not fetch into this folder (bulkexport writes them beside the files)."""
    path = export / PROBLEMS_FILE
    try:
        problems = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    except (OSError, ValueError):
        return [f"{PROBLEMS_FILE}: unreadable"]
    return [str(p) for p in problems] if isinstance(problems, list) else [f"{PROBLEMS_FILE}: not a list"]


def peak_rss_mb() -> float:
    """This worker process's peak resident memory, in MB (it must not grow with the number of patients)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


SIDE_WORDS = {"left": "left knee", "right": "right knee", "bilateral": "both knees"}


def labels(run: Run, summary: Summary) -> dict[str, str]:
    """Every card, rule, data issue and change the summary names, in the words of the cards and rule pages."""
    candidate, baseline = pipelines(run)
    known = [p for p in (candidate, baseline) if p is not None]
    words: dict[str, str] = {}

    def card(key: str) -> str:
        kind, _, side = key.partition(":")
        texts = next((p.cards.texts.cards[kind] for p in known if kind in p.cards.texts.cards), None)
        title = texts.title if texts else kind
        return f"{title} ({SIDE_WORDS[side]})" if side in SIDE_WORDS else title

    def rule(label: str) -> str:
        rule_id, _, version = label.partition(" v")
        found = next((r for p in known for r in p.ruleset.source.rules if r.id == rule_id and str(r.version) ==
                      version), None)
        return f"{label}: {found.title}" if found else label

    for key in [*summary.cards, *(summary.baseline_cards or {})]:
        words[key] = card(key)
    for label in summary.rules_fired:
        words[label] = rule(label)
    for code in summary.data_issues:
        words[code] = ISSUE_MEANINGS.get(IssueCode(code), code) if code in set(IssueCode) else code
    for change in summary.changes or []:
        direction, _, rest = change.change.partition(" ")
        key, _, makers = rest.partition(" by ")
        words[change.change] = f"{direction.capitalize()}: {card(key)}, made by {makers}"
    return words


def rule_changes(run: Run) -> list[str] | None:
    """The thresholds and rules that differ from the baseline, in words (None without a baseline)."""
    candidate, baseline = pipelines(run)
    if baseline is None:
        return None
    changes = compare(baseline.ruleset, candidate.ruleset)
    return [str(p) for p in changes.parameters] + [str(r) for r in changes.rules]


def summarise(tally: Tally, run: Run, seconds: float, read: int, changed: list[str] | None = None) -> Summary:
    compared = run.baseline is not None
    return Summary(
        as_of=run.as_of.isoformat(), patients_read=read, patients_evaluated=tally.patients,
        out_of_scope=tally.out_of_scope, resources_without_a_patient=tally.orphans,
        cards=dict(sorted(tally.cards.items())), rules_fired=dict(sorted(tally.rules.items())),
        data_issues=dict(sorted(tally.issues.items())),
        ages_of_patients_with_cards=dict(sorted(tally.ages_with_cards.items())), seconds=round(seconds, 2),
        patients_per_second=round(tally.patients / seconds, 1) if seconds else None,
        rules=run.rules or "(configured)", baseline_rules=run.baseline,
        patients_whose_cards_change=tally.changed if compared else None, rule_changes=changed,
        baseline_cards=dict(sorted(tally.baseline_cards.items())) if compared else None,
        examples_are="export patient ids" if run.show_ids else "keyed patient hashes",
        changes=[Change(change=key, patients=count, examples=tally.examples.get(key, []))
                 for key, count in sorted(tally.changes.items())] if compared else None)
