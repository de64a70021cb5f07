"""hipflex-cds: check and evaluate FHIR files, make a CDS Hooks request, list the rules, run the service.

Exit status: 0 fine, 1 the data have errors (validate, evaluate), 2 a file, option or content that cannot be
used, 3 a configuration problem, 4 a service that cannot be reached: one clear line on stderr, the traceback
only with --debug. Output is coloured on a terminal and plain when piped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from cds import __version__
from cds.clinical.context import Context
from cds.clinical.explanation import rule_label
from cds.clinical.fhirvalues import to_date
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.validate import SUPPORTED, bundle_resources
from cds.content.catalog import rule_pages, scenario_coverage
from cds.content.examples import Example, NoSuchExample, find_example, load_examples
from cds.content.files import ContentError
from cds.errors import HipflexError
from cds.hooks.auth import TrustedIssuer, load_issuers
from cds.hooks.call import NO_ORDER_SELECTED, Answer, HookCalls
from cds.hooks.discovery import service_id, services
from cds.hooks.errors import HookError
from cds.hooks.examplerequests import request_for
from cds.hooks.fhirclient import FhirReader
from cds.hooks.prefetch import prefetch_templates
from cds.hooks.request import HOOKS, parse_request
from cds.hooks.store import StoreUnavailable
from cds.jsonlimits import parse_json
from cds.population.bulkexport import ExportLimits
from cds.releasecommands import ReleaseUsage, add_release_arguments, add_replay_arguments, cmd_release, cmd_replay
from cds.settings import ConfigurationError, FhirReads, Settings, load_settings

ISSUES_KEY = "urn:hipflex-cds:data-issues"
FHIR_DATE = re.compile(r"\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?")
USER = "Practitioner/COREPRACTITIONER1"  # the CDS Hooks sandbox's practitioner, so CLI and sandbox calls match


class Output(Console):
    """Rich's console, except that a reader who stops reading (`| head`) is a normal end (exit 0), not rich's 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)


class UsageError(HipflexError):
    """The input file cannot be used at all; the message is the one line shown."""


def example_or_path(path: Path, examples: Path) -> tuple[Path, Example | None]:
    """A file that exists, else the packaged example named by it or a unique prefix of it (`P01`), with the
    context it is evaluated in; an ambiguous or unknown name is a UsageError listing what there is."""
    if path.exists() or path.parent != Path(".") or path.suffix == ".json":
        return path, None
    try:
        example = find_example(examples, path.name)
    except NoSuchExample as exc:
        raise UsageError(str(exc)) from None
    return example.path, example


def in_context(args: argparse.Namespace, settings: Settings) -> Settings:
    """Fill what the user did not give from the example's context: file, user, hook, date, ConceptMaps."""
    args.file, example = example_or_path(args.file, settings.content.examples_dir)
    if getattr(args, "user", "") is None:
        args.user = example.user if example and example.user else USER
    if getattr(args, "hook", "") is None:
        args.hook = example.hook if example and example.hook else "patient-view"
    if example is not None and getattr(args, "as_of", "") is None and example.as_of:
        args.as_of, args.as_of_from = example.as_of, "the example's date"
    if example is not None and example.concept_maps_dir and settings.content.concept_maps_dir is None:
        return settings.with_flat(concept_maps_dir=example.concept_maps_dir)
    return settings


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
        data = parse_json(text, "the file", characters_only=True)
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


CONTENT_VARIABLES = """environment:
  HIPFLEX_RULES_DIR, HIPFLEX_RULE_PATH   the content folder, or a rule file anywhere (default: the packaged rules)
  HIPFLEX_CONCEPT_MAPS_DIR               a site's ConceptMaps onto the project's codes
  HIPFLEX_INCLUDE_DRAFT_RULES            also run rules with status draft (true/false)
  HIPFLEX_LOOKBACK_DAYS                  older observations are not used (default 90)
  every setting: docs/configuration.md"""

EXIT_CODES = """exit status:
  0 fine; 1 the data have errors (validate, evaluate); 2 a file, option or content that cannot be used;
  3 a configuration problem (a HIPFLEX_* or DATABASE_URL value); 4 a service that cannot be reached
  (database, Dask scheduler, FHIR server); one line on stderr, the traceback only with --debug"""

EPILOG = f"""examples:
  hipflex-cds examples                           the packaged example patients, one line each
  hipflex-cds evaluate P01                       an example by (a unique prefix of) its name, in its context
  hipflex-cds evaluate bundle.json --as-of 2026-11-24 --hook order-select
  hipflex-cds evaluate bundle.json --json --with-issues > response.json
  hipflex-cds validate bundle.json               exit 1 when the data have errors
  hipflex-cds request P01 | curl -s -H 'Content-Type: application/json' -d @- \\
      http://127.0.0.1:8080/cds-services/hipflex-patient-view
  hipflex-cds rules --terminology
  hipflex-cds serve                              the service on 127.0.0.1:8080

{EXIT_CODES}"""

COMMANDS: dict[str, tuple[str, str, str]] = {  # name: (one line, examples, environment)
    "validate": ("check a FHIR file and list its data issues (exit 1 on errors)",
                 "  hipflex-cds validate P13\n  hipflex-cds validate bundle.json --json", CONTENT_VARIABLES),
    "evaluate": ("show the findings and cards a FHIR file would produce, through the service's own hook call",
                 "  hipflex-cds evaluate P01\n  hipflex-cds evaluate P15b       (its user, Patient/p15, comes with "
                 "it)\n  hipflex-cds evaluate bundle.json --hook order-select --json", CONTENT_VARIABLES),
    "request": ("print the CDS Hooks request an EHR would send for a FHIR file (its data as prefetch)",
                "  hipflex-cds request P01 > request.json\n  hipflex-cds request bundle.json --hook encounter-start",
                CONTENT_VARIABLES),
    "rules": ("list the rule catalog (or, with --terminology, every code the service reads)",
              "  hipflex-cds rules\n  hipflex-cds rules --terminology --json", CONTENT_VARIABLES),
    "examples": ("list the packaged example patients with what each shows", "  hipflex-cds examples", ""),
    "issuers": ("list the trusted JWT issuers, or print the registration sheet an EHR team fills in for one",
                "  hipflex-cds issuers\n  hipflex-cds issuers sheet https://fhir.example-hospital.org",
                "environment:\n  HIPFLEX_ISSUERS_FILE, HIPFLEX_PUBLIC_URL   the trusted issuers and the service's URL\n"
                "  HIPFLEX_CORS_ORIGINS, HIPFLEX_FHIR_SERVERS   browser origins; FHIR servers of issuers listing none"),
    "synth": ("write a synthetic FHIR Bulk Data export (NDJSON), the same for the same seed",
              "  hipflex-cds synth --patients 1000 --seed 7 --out export/", ""),
    "impact": ("run the rules over a Bulk FHIR export on Dask and report what they do (and what a rule change "
               "would change)",
               "  hipflex-cds impact export/ --out impact/\n  hipflex-cds impact export/ --out impact/ --rules "
               "candidate.yaml --baseline-rules rules/knee-hip-v1.yaml\n  hipflex-cds impact export/ --out impact/ "
               "--from-server https://ehr.example/fhir --token-file token.txt",
               "environment:\n  HIPFLEX_PATIENT_HASH_KEY               the key patient ids are hashed with (else "
               "HIPFLEX_DATA_DIR's key file)\n  HIPFLEX_RULES_DIR, HIPFLEX_RULE_PATH   the configured rules"),
    "release": ("check, publish, list, activate (or roll back) and shadow the releases of the content",
                "  hipflex-cds release check candidate/ --export export/\n  hipflex-cds release publish candidate/\n"
                "  hipflex-cds release shadow 1.1.0\n  hipflex-cds release activate 1.1.0 --at 2026-12-24T06:00\n"
                "  hipflex-cds release activate 1.0.0      (a rollback)\n  hipflex-cds release list",
                "environment:\n  DATABASE_URL, HIPFLEX_DATA_DIR          the store the releases live in"),
    "replay": ("decide an issued card again, under the release that made it and the active one",
               "  hipflex-cds replay 3f2c0e1a-9b7d-4c55-8e0f-2a61d4b7c9e3",
               "environment:\n  DATABASE_URL, HIPFLEX_DATA_DIR          the store"),
    "serve": ("run the CDS Hooks service (SQLite and authentication off by default: loopback only)",
              "  hipflex-cds serve\n  HIPFLEX_ISSUERS_FILE=issuers.yaml HIPFLEX_PUBLIC_URL=https://cds.example.org "
              "\\\n      hipflex-cds serve --host 0.0.0.0 --workers 2",
              "environment:\n  DATABASE_URL, HIPFLEX_DATA_DIR          the store (default: SQLite in var/)\n"
              "  HIPFLEX_ISSUERS_FILE, HIPFLEX_PUBLIC_URL   trusted JWT issuers and the URL tokens are addressed to\n"
              "  HIPFLEX_FHIR_SERVERS, HIPFLEX_ALLOWED_HOSTS   FHIR servers read without issuers; Host names "
              "answered\n  every setting: docs/configuration.md"),
}


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


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _output_folder(text: str) -> Path:
    """A folder that can be written: created now (so a mistake stops the command before any work)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".hipflex-write-check"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot be written ({exc.strerror})") from None
    return path


def _content(text: str) -> Path:
    """A rule file, or a folder of content (rules, terminology, card texts)."""
    path = Path(text)
    if not path.is_file() and not (path / "cards.yaml").is_file():
        raise argparse.ArgumentTypeError(f"{text}: neither a rule file nor a content folder (with cards.yaml)")
    return path


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _command(sub: Any, name: str) -> argparse.ArgumentParser:
    summary, examples, environment = COMMANDS[name]
    epilog = "\n\n".join(part for part in (f"examples:\n{examples}", environment, EXIT_CODES) if part)
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary, epilog=epilog,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipflex-cds", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure, not one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("validate", "evaluate"):
        cmd = _command(sub, name)
        cmd.add_argument("file", type=Path, help="a FHIR R4 Bundle (or one resource) as JSON, or an example's name "
                                                 "or its unique prefix, such as P01")
        cmd.add_argument("--json", action="store_true", help="machine-readable output (for evaluate: the exact "
                                                             "CDS Hooks response body)")
        cmd.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD",
                         help="evaluation date (default: the example's, else the Bundle's timestamp, else today)")
        cmd.add_argument("--patient", default=None, metavar="ID",
                         help="patient id in context (default: the Patient in the file)")
        cmd.add_argument("--user", default=None, metavar="TYPE/ID",
                         help=f"the user in context, e.g. Practitioner/1 or Patient/1 (default: the example's, "
                              f"else {USER})")
        if name == "evaluate":
            cmd.add_argument("--hook", choices=HOOKS, default=None,
                             help="the CDS Hooks hook to answer (default: the example's, else patient-view)")
            cmd.add_argument("--with-issues", action="store_true",
                             help="with --json: add the data issues under the response's extension "
                                  "'urn:hipflex-cds:data-issues' (the body stays a valid CDS Hooks response)")
    request = _command(sub, "request")
    request.add_argument("file", type=Path, help="a FHIR R4 Bundle with the Patient and their data, or an example "
                                                 "name such as P01")
    request.add_argument("--hook", choices=HOOKS, default=None, help="the hook (default: the example's, else "
                                                                     "patient-view)")
    request.add_argument("--user", default=None, metavar="TYPE/ID", help=f"context.userId (default: the "
                                                                         f"example's, else {USER})")
    request.add_argument("--encounter", default="encounter-1", metavar="ID",
                         help="context.encounterId for encounter-start and order-select (default %(default)s)")
    rules = _command(sub, "rules")
    rules.add_argument("--json", action="store_true", help="machine-readable output")
    rules.add_argument("--terminology", action="store_true",
                       help="list the codes each input is read from, including a site's ConceptMaps "
                            "(HIPFLEX_CONCEPT_MAPS_DIR)")
    _command(sub, "examples").add_argument("--json", action="store_true", help="machine-readable output")
    issuers = _command(sub, "issuers")
    issuers.add_argument("action", nargs="?", choices=["list", "sheet"], default="list",
                         help="list them (default), or the sheet of one")
    issuers.add_argument("issuer", nargs="?", default=None, metavar="ISS", help="the issuer's iss, for sheet")
    add_release_arguments(_command(sub, "release"))
    add_replay_arguments(_command(sub, "replay"))
    synth = _command(sub, "synth")
    synth.add_argument("--patients", type=_positive(int), default=1000, help="how many patients (default "
                                                                            "%(default)s)")
    synth.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same export")
    synth.add_argument("--out", type=_output_folder, required=True, metavar="DIR", help="folder for the NDJSON "
                                                                                        "files (created)")
    synth.add_argument("--as-of", type=_date, default=dt.date(2026, 11, 24), metavar="YYYY-MM-DD",
                       help="the day the data are dated back from (default %(default)s)")
    synth.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    _impact_options(_command(sub, "impact"))
    serve = _command(sub, "serve")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s; others need HIPFLEX_ISSUERS_FILE)")
    serve.add_argument("--port", type=_port, default=8080, help="port, 1-65535 (default %(default)s)")
    serve.add_argument("--workers", type=_positive(int), default=1,
                       help="worker processes sharing the store (default %(default)s; one per core is a good start)")
    return parser


def _impact_options(impact: argparse.ArgumentParser) -> None:
    impact.add_argument("export", type=Path, metavar="EXPORT_DIR", help="folder of NDJSON (or .ndjson.gz) files")
    impact.add_argument("--out", type=_output_folder, required=True, metavar="DIR",
                        help="where summary.json, patients.parquet/ and report.html go (created)")
    impact.add_argument("--rules", type=_content, default=None, metavar="FILE|DIR", help="the rule file, or a "
                        "content folder (a release candidate), to run (default: the configured content)")
    impact.add_argument("--baseline-rules", type=_content, default=None, metavar="FILE|DIR",
                        help="also run this rule file or content folder and report every patient whose cards change")
    impact.add_argument("--show-patient-ids", action="store_true",
                        help="name the example patients of each change by the export's own ids (you hold the export; "
                             "default: keyed hashes, as in patients.parquet)")
    impact.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD", help="evaluation date "
                        "(default today)")
    impact.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    impact.add_argument("--workers", type=_positive(int), default=2, help="local worker processes (default "
                                                                          "%(default)s)")
    impact.add_argument("--from-server", default=None, metavar="URL",
                        help="first download this FHIR server's Bulk Data $export into EXPORT_DIR")
    impact.add_argument("--token-file", type=_readable_file, default=None, metavar="FILE",
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


def _read(args: argparse.Namespace) -> tuple[list[Any], dt.date, str]:
    """The file's resources, the evaluation date and where that date came from."""
    resources, stamp = read_fhir_file(args.file)
    as_of = args.as_of or stamp or dt.date.today()
    given = getattr(args, "as_of_from", "--as-of")
    return resources, as_of, given if args.as_of else ("Bundle.timestamp" if stamp else "today")


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
        out = Output(highlight=False, soft_wrap=True)
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
                           patient_id=args.patient, terminology=pipeline.terminology)
    except ValueError as exc:
        raise UsageError(f"{args.file}: {exc} (or name one with --patient)") from None
    request = parse_request(json.dumps(body).encode(), args.hook)
    answer = HookCalls(pipeline, FhirReader(FhirReads())).call(service, request, today=as_of)  # prefetch only
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
    out = Output(highlight=False, soft_wrap=True)
    out.print(f"[bold]{escape(str(args.file))}[/]: {args.hook} as of {as_of} ({why})")
    if decision is None:
        out.print(f"[bold]{escape(NO_ORDER_SELECTED)}[/]")
        return 0
    texts = pipeline.cards.texts
    findings = [texts.words(f.name, f.side) for f in decision.evaluation.findings]
    out.print("[bold]Findings:[/] " + escape("; ".join(findings) or "none"))
    if not decision.cards:
        out.print(f"[bold]{escape(pipeline.cards.no_cards_reason(decision.evaluation))}[/]")
    else:
        out.print(f"[bold]Cards[/] ({len(decision.cards)}):")
    for card, explanation in ((c.card, c.explanation) for c in decision.cards):
        style = INDICATOR_STYLE[card.indicator.value]
        out.print(f"  [{style}]{card.indicator.value:<8}[/] [bold]{escape(card.summary)}[/]")
        for s in card.suggestions or []:
            out.print(f"           suggestion: {escape(s.label)}")
        out.print("           rules: " + escape(", ".join(explanation.rule_labels)))
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
    if args.json:  # the rule pages' model, as /rules gives it with Accept: application/json
        coverage = scenario_coverage(pipeline.settings.content.coverage_report)
        pages = rule_pages(pipeline.ruleset, pipeline.terminology, coverage)
        print(json.dumps([page.model_dump(mode="json") for page in pages], indent=2))
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
                           args.encounter, terminology=pipeline.terminology)
    except ValueError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    print(json.dumps(body, indent=2))
    return 0


def cmd_synth(_settings: Settings, args: argparse.Namespace) -> int:
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
            if rule_file.is_dir():
                Pipeline.for_content(settings, rule_file.resolve())
            else:
                Pipeline(settings.with_flat(rule_path=rule_file.resolve()))
    run = Run(as_of=args.as_of or settings.as_of or dt.date.today(),
              patient_key=patient_key(settings.store.patient_hash_key, settings.store.key_file),
              rules=str(args.rules.resolve()) if args.rules else None,
              baseline=str(args.baseline_rules.resolve()) if args.baseline_rules else None, out=str(args.out),
              show_ids=args.show_patient_ids)
    try:
        summary = run_impact(args.export, args.out, run, scheduler=args.scheduler, workers=args.workers)
    except NothingToRead as exc:
        raise UsageError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        if args.scheduler is None:
            raise
        raise Unreachable(f"--scheduler {args.scheduler}: no Dask scheduler answers there ({type(exc).__name__})"
                          ) from None
    unreadable = sum(p.count for p in summary.unreadable) + len(summary.download_problems)
    if unreadable:
        print(f"{unreadable:,} lines or files could not be read: see 'unreadable' and 'download_problems' in "
              "summary.json", file=sys.stderr)
    print(f"{summary.patients_evaluated:,} patients in {summary.seconds} s; cards: "
          + (", ".join(f"{k} {v:,}" for k, v in summary.cards.items()) or "none")
          + (f"; {summary.patients_whose_cards_change or 0:,} patients' cards change" if args.baseline_rules else ""))
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


def cmd_examples(settings: Settings, args: argparse.Namespace) -> int:
    examples = load_examples(settings.content.examples_dir)
    if args.json:
        print(json.dumps([e.model_dump(mode="json", exclude={"path"}) for e in examples], indent=2))
        return 0
    width = max((len(e.name) for e in examples), default=0)
    for e in examples:
        context = ", ".join(part for part in (e.user and f"as {e.user}", e.hook,
                                              e.concept_maps and f"ConceptMaps in {e.concept_maps}/") if part)
        line = " ".join(e.description.split())
        print(f"{e.name:<{width}}  {line[:110]}{'…' if len(line) > 110 else ''}{f' [{context}]' if context else ''}")
    return 0


def cmd_issuers(pipeline: Pipeline, args: argparse.Namespace) -> int:
    settings = pipeline.settings
    if settings.auth.issuers_file is None:
        raise UsageError("HIPFLEX_ISSUERS_FILE is not set: there are no trusted issuers (authentication is off)")
    trusted = {i.iss: i for i in load_issuers(settings.auth.issuers_file)}
    if args.action == "list":
        for issuer in trusted.values():
            print(f"{issuer.iss}  hooks: {', '.join(issuer.profile.hooks or HOOKS)}")
        return 0
    if args.issuer not in trusted:
        raise UsageError(f"{args.issuer!r} is not a trusted issuer of {settings.auth.issuers_file} (it has "
                         f"{', '.join(trusted)})")
    print(registration_sheet(trusted[args.issuer], pipeline))
    return 0


def registration_sheet(issuer: TrustedIssuer, pipeline: Pipeline) -> str:
    """What an EHR's integration team enters on its side, from the same configuration the service runs on."""
    settings, profile = pipeline.settings, issuer.profile
    base = (settings.auth.public_url or "http://127.0.0.1:8080").rstrip("/")
    offered = [s for s in services(pipeline.terminology) if profile.offers(s.hook)]
    keys = issuer.jwks_url or (f"file {issuer.jwks_file.name} (exchanged out of band)" if issuer.jwks_file else
                               f"jku: {', '.join(issuer.jku)}")
    servers = issuer.fhir_servers or settings.fhir.servers
    lines = [f"Registration sheet: {issuer.iss}", "", "Services (discovery and each hook)",
             f"  discovery        {base}/cds-services"]
    lines += [f"  {s.hook:<16} {base}/cds-services/{s.id}" for s in offered]
    lines += ["", "Prefetch templates"]
    for s in offered:
        lines += [f"  {s.id}"] + [f"    {key}: {template}" for key, template in s.prefetch.items()]
    lines += ["", "Authentication (JWT bearer, CDS Hooks 2.0)", f"  iss              {issuer.iss}",
              f"  key set          {keys}",
              f"  algorithms       {', '.join(profile.algorithms or ['ES384', 'RS384', 'other ES/RS/PS'])}",
              f"  token lifetime   at most {profile.max_lifetime_seconds or settings.auth.jwt_max_lifetime_seconds} s",
              "  aud              the URL called, exactly (e.g. the patient-view URL above)",
              "", f"CORS origins       {', '.join(settings.auth.cors_origins) or 'none (server-to-server calls only)'}",
              f"FHIR servers read  {', '.join(servers) or 'none: everything must come as prefetch'}",
              "", "Cards", f"  detail           {profile.detail_chars or 'no limit'} characters at most",
              "  links            " + {"all": "all (absolute)", "none": "none",
                                       "registered": f"only to {', '.join(profile.link_hosts) or 'no host'}"}[
                                           profile.links],
              f"  error bodies     {'FHIR OperationOutcome' if profile.error_format != 'json' else 'JSON'}"]
    if issuer.public_signing_key:
        lines += ["", "WARNING: this issuer's private signing key is public; for development on loopback only."]
    return "\n".join(lines)


class Unreachable(HipflexError):
    """A service the command needs does not answer (exit 4); the message names it."""


EXIT = ((ConfigurationError, 3), (Unreachable, 4), (UsageError, 2), (ContentError, 2), (HookError, 2),
        (ReleaseUsage, 2))
SETTINGS_COMMANDS = {"serve": cmd_serve, "synth": cmd_synth, "impact": cmd_impact, "examples": cmd_examples,
                     "release": cmd_release, "replay": cmd_replay}
PIPELINE_COMMANDS = {"validate": cmd_validate, "evaluate": cmd_evaluate, "request": cmd_request, "rules": cmd_rules,
                     "issuers": cmd_issuers}


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if getattr(args, "file", None) is not None:
        settings = in_context(args, settings)
    if args.command in SETTINGS_COMMANDS:
        return SETTINGS_COMMANDS[args.command](settings, args)
    return PIPELINE_COMMANDS[args.command](Pipeline(settings), args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except StoreUnavailable as exc:
        return _fail(str(exc), 4 if exc.unreachable else 3)
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say, and nothing more to flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code = next((code for kind, code in EXIT if isinstance(exc, kind)), None)
        if code is not None:
            return _fail(str(exc), code)
        if isinstance(exc, OSError):
            return _fail(f"{exc.filename or 'a file'}: {exc.strerror or exc}", 2)
        return _fail(f"internal error ({type(exc).__name__}); run again with --debug for the traceback", 70)


def _fail(message: str, code: int) -> int:
    print(f"hipflex-cds: {message}".splitlines()[0], file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
