"""`hipflex-cds` command line: validate and evaluate FHIR files, make a hook request, list the rules, serve.

Exit status: 0 fine, 1 the data has errors (validate), 2 the file or the content cannot be used
(one clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cds.clinical.context import Context
from cds.clinical.explanation import Explanation, rule_label
from cds.clinical.pipeline import Decision, Pipeline
from cds.clinical.validate import SUPPORTED, bundle_resources
from cds.content.files import ContentError
from cds.hooks.call import Answer, HookCaller
from cds.hooks.discovery import service_id, services
from cds.hooks.errors import HookError
from cds.hooks.fhirclient import FetchLimits, FhirReader
from cds.hooks.prefetch import prefetch_templates, request_for
from cds.hooks.request import HOOKS, parse_request
from cds.settings import Settings

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
    """A Bundle or one supported resource -> (resources, Bundle.timestamp date)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (expected FHIR JSON)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise UsageError(f"{path}: not a FHIR resource (no resourceType)")
    rtype = data["resourceType"]
    if rtype == "Bundle":
        stamp = data.get("timestamp")
        as_of = dt.date.fromisoformat(stamp[:10]) if isinstance(stamp, str) and len(stamp) >= 10 else None
        return bundle_resources(data), as_of
    if rtype in SUPPORTED:
        return [data], None
    raise UsageError(f"{path}: a {rtype} cannot be evaluated (expected a Bundle or one of {', '.join(SUPPORTED)})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipflex-cds", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("validate", "check a FHIR file and list its data issues"),
                            ("evaluate", "show the cards a FHIR file would produce")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("file", type=Path, help="a FHIR R4 Bundle (or one resource) as JSON, or the name of a "
                                                 "packaged example such as P01")
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.add_argument("--as-of", type=dt.date.fromisoformat, default=None,
                         help="evaluation date (default: the Bundle's timestamp, else today)")
        cmd.add_argument("--patient", default=None, help="patient id in context (default: the Patient in the file)")
        cmd.add_argument("--user", default=USER, help="the user in context (default %(default)s)")
        if name == "evaluate":
            cmd.add_argument("--hook", choices=HOOKS, default="patient-view")
    request = sub.add_parser("request", help="print a CDS Hooks request carrying a FHIR file as prefetch")
    request.add_argument("file", type=Path, help="a FHIR R4 Bundle with the Patient and their data, or an example "
                                                 "name such as P01")
    request.add_argument("--hook", choices=HOOKS, default="patient-view")
    request.add_argument("--user", default=USER, help="context.userId (default %(default)s)")
    request.add_argument("--encounter", default="encounter-1", help="context.encounterId for encounter-start")
    rules = sub.add_parser("rules", help="list the rule catalog (or, with --terminology, the codes it reads)")
    rules.add_argument("--json", action="store_true", help="machine-readable output")
    rules.add_argument("--terminology", action="store_true",
                       help="list the codes each input is read from, including a site's ConceptMaps "
                            "(HIPFLEX_CONCEPT_MAPS_DIR)")
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s; others need HIPFLEX_ISSUERS_FILE)")
    serve.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the store (default %(default)s; one per core is a good start)")
    return parser


def _decide(pipeline: Pipeline, args: argparse.Namespace) -> tuple[Decision, dt.date, str]:
    resources, stamp = read_fhir_file(args.file)
    as_of = args.as_of or stamp or dt.date.today()
    why = "--as-of" if args.as_of else ("Bundle.timestamp" if stamp else "today")
    context = Context(today=as_of, patient_id=args.patient, user_id=args.user,
                      lookback_days=pipeline.settings.lookback_days)
    return pipeline.decide(resources, context), as_of, why


def _print_issues(decision: Decision) -> None:
    issues = decision.validated.issues
    print(f"Data issues ({len(issues)}):" if issues else "Data issues: none")
    for i in issues:
        print(f"  {i.severity:<11} {i.resource}  {i.path}: {i.message}")


def cmd_validate(pipeline: Pipeline, args: argparse.Namespace) -> int:
    decision, as_of, why = _decide(pipeline, args)
    validated = decision.validated
    if args.json:
        print(json.dumps({"asOf": as_of.isoformat(),
                          "issues": [i.model_dump() for i in validated.issues],
                          "facts": [f.model_dump(mode="json") for f in validated.facts]}, indent=2))
    else:
        print(f"{args.file}: as of {as_of} ({why}), {len(validated.facts)} facts")
        _print_issues(decision)
    return 1 if validated.has_errors else 0


def _answer(pipeline: Pipeline, args: argparse.Namespace) -> tuple[Answer, dt.date, str]:
    """The file sent through the same hook call as the service's (order-select included), nothing stored."""
    resources, stamp = read_fhir_file(args.file)
    as_of = args.as_of or stamp or dt.date.today()
    why = "--as-of" if args.as_of else ("Bundle.timestamp" if stamp else "today")
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
    if args.json:
        print(json.dumps(answer.response.dump(), indent=2, ensure_ascii=False))
        return 0
    print(f"{args.file}: {args.hook} as of {as_of} ({why})")
    decision = answer.decision
    if decision is None:
        print("Cards: none (order-select answers only for a selected physiotherapy order for the knee)")
        return 0
    findings = [f"{f.name}" + (f" ({f.side})" if f.side else "") for f in decision.evaluation.findings]
    print("Findings: " + (", ".join(findings) or "none"))
    print(f"Cards ({len(decision.cards)}):" if decision.cards else "Cards: none")
    for card in decision.cards:
        print(f"  [{card.indicator.value}] {card.summary}")
        for s in card.suggestions or []:
            print(f"      suggestion: {s.label}")
        print("      rules: " + ", ".join(Explanation.of(card).rule_labels))
    _print_issues(decision)
    return 0


def terminology_rows(pipeline: Pipeline) -> list[dict[str, str]]:
    """What the service reads, code by code: built-in bindings, then each site code and what it maps to."""
    t = pipeline.terminology
    rows = [{"input": b.kind, "system": s, "code": c, "via": "built-in"}
            for (s, c), b in t.observation_by_code.items() if (s, c) not in t.aliases]
    rows += [{"input": f"pain site {site.site}", "system": s, "code": c, "via": "built-in"}
             for (s, c), site in t.site_by_code.items() if (s, c) not in t.aliases]
    rows += [{"input": "(mapped)", "system": s, "code": c, "via": f"ConceptMap -> {target[1]}"}
             for (s, c), target in t.aliases.items()]
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


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from cds.web.app import serve  # the web stack is only imported when serving

    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    if getattr(args, "file", None) is not None:
        args.file = example_or_path(args.file, settings.examples_dir)
    try:
        if args.command == "serve":
            return cmd_serve(settings, args)
        pipeline = Pipeline(settings)
        handler = {"validate": cmd_validate, "evaluate": cmd_evaluate, "request": cmd_request,
                   "rules": cmd_rules}[args.command]
        return handler(pipeline, args)
    except (UsageError, ContentError, HookError) as exc:
        print(f"hipflex-cds: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
