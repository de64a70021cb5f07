"""hipflex-cds: check and evaluate FHIR files, make a CDS Hooks request, list the rules, run the service.

Exit status: 0 fine, 1 the data have errors (validate, evaluate), 2 the file or the content cannot be used
(one clear line on stderr, never a traceback). Output is coloured on a terminal and plain when piped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from cds import __version__
from cds.clinical.context import Context
from cds.clinical.explanation import Explanation, rule_label
from cds.clinical.fhirvalues import to_date
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.validate import SUPPORTED, bundle_resources
from cds.content.files import ContentError
from cds.hooks.call import Answer, HookCaller
from cds.hooks.discovery import service_id, services
from cds.hooks.errors import HookError
from cds.hooks.fhirclient import FetchLimits, FhirReader, parse_json
from cds.hooks.prefetch import prefetch_templates, request_for
from cds.hooks.request import HOOKS, parse_request
from cds.population.bulkexport import ExportLimits
from cds.settings import Settings

ISSUES_KEY = "urn:hipflex-cds:data-issues"
FHIR_DATE = re.compile(r"\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?")
USER = "Practitioner/COREPRACTITIONER1"  # the CDS Hooks sandbox's practitioner, so CLI and sandbox calls match


class UsageError(Exception):
    """The input file cannot be used at all; the message is the one line shown."""


def example_or_path(path: Path, examples: Path) -> Path:
    """A file that exists, else the packaged example whose name starts with it (`P01` -> P01-classic-right.json)."""
    if path.exists() or path.parent != Path("."):
        return path
    found = sorted(examples.glob(f"{path.name}*.json"))
    return found[0] if len(found) == 1 else path


def read_fhir_file(path: Path) -> tuple[list[Any], dt.date | None]:
    """A Bundle or one supported resource -> (resources, Bundle.timestamp date). Anything that cannot be
    evaluated at all is a UsageError saying what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is harmless: accept it
    except OSError as exc:
        raise UsageError(f"{path}: cannot read file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file (expected FHIR JSON)") from None
    try:
        data = parse_json(text, "the file")
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise UsageError(f"{path}: not a FHIR resource (no resourceType)")
    rtype = data["resourceType"]
    if rtype == "Bundle":
        entries = data.get("entry", [])
        if not isinstance(entries, list):
            raise UsageError(f"{path}: Bundle.entry must be a list of entries, not {type(entries).__name__}")
        resources = bundle_resources(data)
        _check_birth_dates(path, resources)
        return resources, _timestamp(path, data.get("timestamp"))
    if rtype in SUPPORTED:
        _check_birth_dates(path, [data])
        return [data], None
    raise UsageError(f"{path}: a {rtype} cannot be evaluated (expected a Bundle or one of {', '.join(SUPPORTED)})")


def _timestamp(path: Path, stamp: Any) -> dt.date | None:
    if stamp is None:
        return None
    day = to_date(stamp) if isinstance(stamp, str) and len(stamp) >= 10 else None
    if day is None:
        raise UsageError(f"{path}: Bundle.timestamp {str(stamp)[:40]!r} is not a date-time (e.g. 2026-11-24T09:00:00Z)")
    return day


def _check_birth_dates(path: Path, resources: list[Any]) -> None:
    for resource in resources:
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient" and "birthDate" in resource:
            born = resource["birthDate"]
            if not isinstance(born, str) or to_date(born) is None or not FHIR_DATE.fullmatch(born):
                raise UsageError(f"{path}: Patient/{resource.get('id')} birthDate {str(born)[:40]!r} is not a FHIR "
                                 "date (YYYY, YYYY-MM or YYYY-MM-DD)")


EPILOG = """examples:
  hipflex-cds evaluate P01                       a packaged example patient
  hipflex-cds evaluate bundle.json --as-of 2026-11-24 --hook order-select
  hipflex-cds evaluate bundle.json --json --with-issues > response.json
  hipflex-cds validate bundle.json               exit 1 when the data have errors
  hipflex-cds request P01 | curl -s -H 'Content-Type: application/json' -d @- \\
      http://127.0.0.1:8080/cds-services/hipflex-patient-view
  hipflex-cds rules --terminology

exit status: 0 fine, 1 the data have errors, 2 the file or the content cannot be used"""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number above zero, else a usage error naming the value."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be above 0")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipflex-cds", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (("validate", "check a FHIR file and list its data issues (exit 1 on errors)"),
                            ("evaluate", "show the findings and cards a FHIR file would produce")):
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("file", type=Path, help="a FHIR R4 Bundle (or one resource) as JSON, or the name of a "
                                                 "packaged example such as P01")
        cmd.add_argument("--json", action="store_true", help="machine-readable output (for evaluate: the exact "
                                                             "CDS Hooks response body)")
        cmd.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD",
                         help="evaluation date (default: the Bundle's timestamp, else today)")
        cmd.add_argument("--patient", default=None, metavar="ID",
                         help="patient id in context (default: the Patient in the file)")
        cmd.add_argument("--user", default=USER, metavar="TYPE/ID",
                         help="the user in context, e.g. Practitioner/1 or Patient/1 (default %(default)s)")
        if name == "evaluate":
            cmd.add_argument("--hook", choices=HOOKS, default="patient-view",
                             help="the CDS Hooks hook to answer (default %(default)s)")
            cmd.add_argument("--with-issues", action="store_true",
                             help="with --json: add the data issues under the response's extension "
                                  "'urn:hipflex-cds:data-issues' (the body stays a valid CDS Hooks response)")
    request = sub.add_parser("request", help="print a CDS Hooks request carrying a FHIR file as prefetch")
    request.add_argument("file", type=Path, help="a FHIR R4 Bundle with the Patient and their data, or an example "
                                                 "name such as P01")
    request.add_argument("--hook", choices=HOOKS, default="patient-view", help="the hook (default %(default)s)")
    request.add_argument("--user", default=USER, metavar="TYPE/ID", help="context.userId (default %(default)s)")
    request.add_argument("--encounter", default="encounter-1", metavar="ID",
                         help="context.encounterId for encounter-start and order-select (default %(default)s)")
    rules = sub.add_parser("rules", help="list the rule catalog (or, with --terminology, the codes it reads)")
    rules.add_argument("--json", action="store_true", help="machine-readable output")
    rules.add_argument("--terminology", action="store_true",
                       help="list the codes each input is read from, including a site's ConceptMaps "
                            "(HIPFLEX_CONCEPT_MAPS_DIR)")
    synth = sub.add_parser("synth", help="write a synthetic FHIR Bulk Data export (NDJSON), deterministic for a seed")
    synth.add_argument("--patients", type=int, default=1000, help="how many patients (default %(default)s)")
    synth.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same export")
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the NDJSON files")
    synth.add_argument("--as-of", type=_date, default=dt.date(2026, 11, 24), metavar="YYYY-MM-DD",
                       help="the day the data are dated back from (default %(default)s)")
    synth.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    impact = sub.add_parser("impact", help="run the rules over a Bulk FHIR export on Dask and report what they do")
    impact.add_argument("export", type=Path, metavar="EXPORT_DIR", help="folder of NDJSON (or .ndjson.gz) files")
    impact.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="where summary.json, patients.parquet/ and report.html go")
    impact.add_argument("--rules", type=Path, default=None, metavar="FILE", help="the rule file to run "
                        "(default: the configured one)")
    impact.add_argument("--baseline-rules", type=Path, default=None, metavar="FILE",
                        help="also run this rule file and report every patient whose cards change")
    impact.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD", help="evaluation date "
                        "(default today)")
    impact.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    impact.add_argument("--workers", type=int, default=2, help="local worker processes (default %(default)s)")
    impact.add_argument("--from-server", default=None, metavar="URL",
                        help="first download this FHIR server's Bulk Data $export into EXPORT_DIR")
    impact.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                        help="a file holding the bearer token for --from-server (never on the command line)")
    limits = ExportLimits()
    for option, default, what in (("--max-file-bytes", limits.max_file_bytes, "one file as sent"),
                                  ("--max-expanded-bytes", limits.max_expanded_bytes, "one file once decompressed"),
                                  ("--max-total-bytes", limits.max_total_bytes, "all files together")):
        impact.add_argument(option, type=_positive(int), default=default, metavar="BYTES",
                            help=f"--from-server: the cap on {what} (default %(default)s)")
    impact.add_argument("--min-poll-seconds", type=_positive(float), default=limits.min_poll_seconds,
                        metavar="S", help="--from-server: the shortest wait between status polls, whatever "
                                          "Retry-After says (default %(default)s)")
    impact.add_argument("--max-polls", type=_positive(int), default=limits.max_polls, metavar="N",
                        help="--from-server: give up after this many status polls (default %(default)s)")
    impact.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                        help="--from-server: another host output files may come from when the manifest needs no "
                             "token, even a private address (repeatable; otherwise only public addresses)")
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s; others need HIPFLEX_ISSUERS_FILE)")
    serve.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the store (default %(default)s; one per core is a good start)")
    return parser


def _read(args: argparse.Namespace) -> tuple[list[Any], dt.date, str]:
    """The file's resources, the evaluation date and where that date came from."""
    resources, stamp = read_fhir_file(args.file)
    as_of = args.as_of or stamp or dt.date.today()
    return resources, as_of, "--as-of" if args.as_of else ("Bundle.timestamp" if stamp else "today")


def _decide(pipeline: Pipeline, args: argparse.Namespace) -> tuple[Decision, dt.date, str]:
    resources, as_of, why = _read(args)
    context = Context(today=as_of, patient_id=args.patient, user_id=args.user,
                      lookback_days=pipeline.settings.lookback_days)
    return pipeline.decide(resources, context), as_of, why


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "information": "dim"}
INDICATOR_STYLE = {"info": "cyan", "warning": "bold yellow", "critical": "bold red"}


def _print_issues(out: Console, decision: Decision) -> None:
    issues = decision.validated.issues
    out.print(f"[bold]Data issues[/] ({len(issues)}):" if issues else "[bold]Data issues:[/] none")
    for i in issues:
        out.print(f"  [{SEVERITY_STYLE[i.severity]}]{i.severity:<11}[/] {escape(i.resource)}  {escape(i.path)}: "
                  f"{escape(i.message)}")


def cmd_validate(pipeline: Pipeline, args: argparse.Namespace) -> int:
    decision, as_of, why = _decide(pipeline, args)
    validated = decision.validated
    if args.json:
        print(json.dumps({"asOf": as_of.isoformat(),
                          "issues": [i.model_dump() for i in validated.issues],
                          "facts": [f.model_dump(mode="json") for f in validated.facts]}, indent=2))
    else:
        out = Console(highlight=False, soft_wrap=True)
        count = len(validated.facts)
        out.print(f"[bold]{escape(str(args.file))}[/]: as of {as_of} ({why}), {count} "
                  f"fact{'s' if count != 1 else ''} read")
        for fact in validated.facts:
            out.print(f"  {escape(fact.describe())}")
        _print_issues(out, decision)
    return 1 if validated.has_errors else 0


def _answer(pipeline: Pipeline, args: argparse.Namespace) -> tuple[Answer, dt.date, str]:
    """The file sent through the same hook call as the service's (order-select included), nothing stored."""
    resources, as_of, why = _read(args)
    service = {s.id: s for s in services(pipeline.terminology)}[service_id(args.hook)]
    try:
        body = request_for([r for r in resources if isinstance(r, dict)], args.hook, service.prefetch, args.user,
                           patient_id=args.patient)
    except ValueError as exc:
        raise UsageError(f"{args.file}: {exc} (or name one with --patient)") from None
    request = parse_request(json.dumps(body).encode(), args.hook)
    answer = HookCaller(pipeline, FhirReader(FetchLimits())).call(service, request, today=as_of)  # prefetch only
    return answer, as_of, why


def cmd_evaluate(pipeline: Pipeline, args: argparse.Namespace) -> int:
    answer, as_of, why = _answer(pipeline, args)
    decision = answer.decision
    errors = decision is not None and decision.validated.has_errors
    if args.json:
        body = answer.response.dump()
        if args.with_issues and decision is not None:
            body["extension"] = {ISSUES_KEY: [i.model_dump() for i in decision.validated.issues]}
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 1 if errors else 0
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"[bold]{escape(str(args.file))}[/]: {args.hook} as of {as_of} ({why})")
    if decision is None:
        out.print("[bold]No cards:[/] order-select answers only when a physiotherapy order for the knee is selected.")
        return 0
    texts = pipeline.cards.texts
    findings = [texts.words(f.name, f.side) for f in decision.evaluation.findings]
    out.print("[bold]Findings:[/] " + escape("; ".join(findings) or "none"))
    if not decision.cards:
        out.print(f"[bold]{escape(pipeline.cards.no_cards_reason(decision.evaluation))}[/]")
    else:
        out.print(f"[bold]Cards[/] ({len(decision.cards)}):")
    for card in decision.cards:
        style = INDICATOR_STYLE[card.indicator.value]
        out.print(f"  [{style}]{card.indicator.value:<8}[/] [bold]{escape(card.summary)}[/]")
        for s in card.suggestions or []:
            out.print(f"           suggestion: {escape(s.label)}")
        out.print("           rules: " + escape(", ".join(Explanation.of(card).rule_labels)))
    _print_issues(out, decision)
    return 1 if errors else 0


def terminology_rows(pipeline: Pipeline) -> list[dict[str, str]]:
    """What the service reads, code by code: built-in bindings, then each site code and what it maps to."""
    t = pipeline.terminology
    rows = [{"input": b.kind, "system": s, "code": c, "via": "built-in"}
            for (s, c), b in t.observation_by_code.items() if (s, c) not in t.aliases]
    rows += [{"input": f"pain site {site.site}", "system": s, "code": c, "via": "built-in"}
             for (s, c), site in t.site_by_code.items() if (s, c) not in t.aliases]
    rows += [{"input": "(mapped)", "system": s, "code": c, "via": f"ConceptMap -> {target[1]}"}
             for (s, c), target in t.aliases.items()]
    for code_set in t.sets.values():
        for include in code_set.includes:
            rows.append({"input": f"ValueSet {code_set.name}", "system": include.system,
                         "code": include.describe(t.system_name(include.system)),
                         "via": f"rules/valuesets/{code_set.file}: {code_set.title}"})
    return rows


def cmd_rules(pipeline: Pipeline, args: argparse.Namespace) -> int:
    if args.terminology:
        rows = terminology_rows(pipeline)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"  {row['input']:<28} {row['system']}|{row['code']}  ({row['via']})")
        return 0
    rules = pipeline.ruleset.source.rules
    if args.json:
        print(json.dumps([{"id": r.id, "version": r.version, "status": r.status, "title": r.title,
                           "evidence": r.evidence.model_dump()} for r in rules], indent=2))
        return 0
    print(f"{pipeline.ruleset.source.ruleset} {pipeline.ruleset.source.version} ({pipeline.ruleset.path})")
    for r in rules:
        print(f"  {rule_label(r.id, r.version):<18} {r.status:<7} {r.evidence.grade:<10} {r.title}")
    return 0


def cmd_request(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """A request body to try the service with (`curl -d @-`); the patient is the file's Patient."""
    resources, _ = read_fhir_file(args.file)
    templates = prefetch_templates(pipeline.terminology)
    try:
        body = request_for([r for r in resources if isinstance(r, dict)], args.hook, templates, args.user,
                           args.encounter)
    except ValueError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    print(json.dumps(body, indent=2))
    return 0


def cmd_synth(settings: Settings, args: argparse.Namespace) -> int:
    from cds.population.synth import synthesise

    counts = synthesise(args.patients, args.seed, args.out, as_of=args.as_of, compress=args.gzip)
    print(", ".join(f"{n:,} {rtype}" for rtype, n in counts.items()) + f" written to {args.out}")
    return 0


def cmd_impact(settings: Settings, args: argparse.Namespace) -> int:
    from cds.hooks.store import patient_key
    from cds.population.impact import NothingToRead, Run, run_impact

    if args.from_server:
        _download(args)
    if not args.export.is_dir():
        raise UsageError(f"{args.export}: not a folder of NDJSON files")
    for rule_file in (args.rules, args.baseline_rules):
        if rule_file is not None:  # a broken rule file stops the run here, naming file and line
            Pipeline(settings.model_copy(update={"rule_path": rule_file.resolve()}))
    run = Run(as_of=args.as_of or settings.as_of or dt.date.today(),
              patient_key=patient_key(settings.patient_hash_key, settings.key_file),
              rules=str(args.rules.resolve()) if args.rules else None,
              baseline=str(args.baseline_rules.resolve()) if args.baseline_rules else None, out=str(args.out))
    try:
        summary = run_impact(args.export, args.out, run, scheduler=args.scheduler, workers=args.workers)
    except NothingToRead as exc:
        raise UsageError(str(exc)) from None
    unreadable = sum(p["count"] for p in summary["unreadable"]) + len(summary["download_problems"])
    if unreadable:
        print(f"{unreadable:,} lines or files could not be read: see 'unreadable' and 'download_problems' in "
              "summary.json", file=sys.stderr)
    print(f"{summary['patients_evaluated']:,} patients in {summary['seconds']} s; cards: "
          + (", ".join(f"{k} {v:,}" for k, v in summary["cards"].items()) or "none")
          + (f"; {summary['patients_whose_cards_change']:,} patients' cards change" if args.baseline_rules else ""))
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'patients.parquet'}, {args.out / 'report.html'}")
    return 0


def _download(args: argparse.Namespace) -> None:
    from cds.population.bulkexport import ExportFailed, ExportLimits, download

    try:
        token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {args.token_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
                         ) from None
    limits = ExportLimits(max_file_bytes=args.max_file_bytes, max_expanded_bytes=args.max_expanded_bytes,
                          max_total_bytes=args.max_total_bytes, min_poll_seconds=args.min_poll_seconds,
                          max_polls=args.max_polls, allowed_hosts=tuple(h.lower() for h in args.allow_host))
    try:
        result = download(args.from_server, token, args.export, limits)
    except ExportFailed as exc:
        raise UsageError(str(exc)) from None
    print(f"downloaded {len(result.files)} files into {args.export}", file=sys.stderr)
    for problem in result.problems:
        print(f"not downloaded: {problem}", file=sys.stderr)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from cds.web.app import serve  # the web stack is only imported when serving

    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    if getattr(args, "file", None) is not None:
        args.file = example_or_path(args.file, settings.examples_dir)
    try:
        if args.command in ("serve", "synth", "impact"):
            return {"serve": cmd_serve, "synth": cmd_synth, "impact": cmd_impact}[args.command](settings, args)
        pipeline = Pipeline(settings)
        handler = {"validate": cmd_validate, "evaluate": cmd_evaluate, "request": cmd_request,
                   "rules": cmd_rules}[args.command]
        return handler(pipeline, args)
    except (UsageError, ContentError, HookError) as exc:
        print(f"hipflex-cds: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
