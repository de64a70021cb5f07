"""The `release` and `replay` commands of `hipflex-cds` (their parsers and printing; the work is in
`cds.population.releasecheck`, `cds.hooks.releases` and `cds.hooks.replay`)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from cds.clinical.pipeline import Pipeline
from cds.content.changes import Changes
from cds.content.release import read_release
from cds.errors import HipflexError
from cds.hooks.releases import ReleaseRefused, listing, materialise, publish, switch
from cds.hooks.replay import Redecided, Replay, replay
from cds.hooks.store import Store, patient_key
from cds.population.releasecheck import Check, active_content, check_release, run_scenarios
from cds.settings import Settings

MARKS = {True: "✓", False: "✗", None: "·"}


class ReleaseUsage(HipflexError):
    """A release command asked for something that cannot be (exit 2)."""


def add_release_arguments(release: argparse.ArgumentParser) -> None:
    actions = release.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="check a candidate release folder (a copy of rules/ with its "
                                             "release.yaml) before publishing it")
    check.add_argument("folder", type=Path, help="the candidate's folder")
    check.add_argument("--export", type=Path, default=None, metavar="DIR",
                       help="a Bulk FHIR export: compare what the candidate and the active release decide for it")
    check.add_argument("--out", type=Path, default=Path("release-check"), metavar="DIR",
                       help="where reports go (default %(default)s)")
    check.add_argument("--no-scenarios", action="store_true", help="do not run the scenarios of features/")
    check.add_argument("--features", type=Path, default=None, metavar="DIR",
                       help="the scenarios to run (default features/): the candidate's, when it changes what some "
                            "expect")
    publish_cmd = actions.add_parser("publish", help="record a checked candidate in the store (as a draft)")
    publish_cmd.add_argument("folder", type=Path)
    actions.add_parser("list", help="the published releases with their status")
    scenarios = actions.add_parser("scenarios", help="run every scenario against a published release")
    scenarios.add_argument("version")
    scenarios.add_argument("--features", type=Path, default=None, metavar="DIR", help="the scenarios (default "
                                                                                       "features/)")
    activate = actions.add_parser("activate", help="make a published release the one the service decides with "
                                                   "(also a rollback)")
    activate.add_argument("version")
    activate.add_argument("--at", default=None, metavar="WHEN", help="from this moment (ISO date or date-time, "
                                                                     "UTC unless it says otherwise; default now)")
    shadow = actions.add_parser("shadow", help="decide every call also under this release, silently, and store "
                                               "where it differs ('off': no shadow)")
    shadow.add_argument("version")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", metavar="CARD_UUID", help="an issued card's uuid")


def _store(settings: Settings) -> Store:
    return Store(settings.store.url, patient_key(settings.store.patient_hash_key, settings.store.key_file))


def _moment(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReleaseUsage(f"--at {text!r} is not an ISO date or date-time (2026-12-24 or 2026-12-24T06:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def cmd_release(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    try:
        if args.action == "check":
            return _check(settings, store, args)
        if args.action == "publish":
            return _publish(settings, store, args.folder)
        if args.action == "scenarios":
            folder = materialise(store, args.version, settings)
            check = run_scenarios(folder, Path("release-check") / args.version, args.features)
            print(f"Scenarios against release {args.version}")
            _print_check(check)
            return 0 if check.passed else 1
        if args.action == "list":
            for r in listing(store):
                print(f"{r.version:<10} {r.status:<8} {r.published_at:%Y-%m-%d %H:%M}  {r.content_hash[:12]}  "
                      f"{r.approved_by}: {'; '.join(r.changes)}")
            return 0
        role = "active" if args.action == "activate" else "shadow"
        version = None if role == "shadow" and args.version == "off" else args.version
        when = switch(store, role, version, _moment(getattr(args, "at", None)))
        print(f"{version or 'no release'} is the {role} release from {when:%Y-%m-%d %H:%M} UTC; each worker "
              f"follows within {settings.releases.check_seconds:g} s")
        return 0
    except ReleaseRefused as exc:
        raise ReleaseUsage(str(exc)) from None
    finally:
        store.close()


def _check(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    def progress(step: str) -> None:
        print(f"· {step}…", file=sys.stderr, flush=True)

    key = patient_key(settings.store.patient_hash_key, settings.store.key_file)
    verdict = check_release(args.folder, settings, store, export=args.export, out=args.out,
                            scenarios=not args.no_scenarios, progress=progress, patient_key=key,
                            features=args.features)
    print(f"Release {verdict.candidate} against the active release {verdict.active}")
    for check in verdict.checks:
        _print_check(check)
    if verdict.changes is not None:
        _print_changes(verdict.changes)
    if verdict.population is not None and verdict.population.changes:
        print("What changes for the population:")
        for change in verdict.population.changes:
            print(f"  {change.patients:>6,}  {change.change}")
    print("READY to publish: hipflex-cds release publish " + str(args.folder) if verdict.passed else
          "NOT READY: fix what is marked ✗ and check again")
    return 0 if verdict.passed else 1


def _print_check(check: Check) -> None:
    print(f"  {MARKS[check.passed]} {check.name}")
    for line in check.details:
        print(f"      {line}")


def _print_changes(changes: Changes) -> None:
    if not changes.parameters and not changes.rules:
        print("  no threshold or rule changed")
        return
    print("What differs from the active release:")
    for item in [*changes.parameters, *changes.rules]:
        print(f"  - {item}")


def _publish(settings: Settings, store: Store, folder: Path) -> int:
    """Publish after the quick checks again (content, decision table, versions): a candidate changed since its
    `release check` is not published unchecked."""
    release = read_release(folder)
    verdict = check_release(folder, settings, store, export=None, out=Path("release-check"), scenarios=False,
                            progress=lambda _: None, patient_key=b"")
    failed = [c for c in verdict.checks if c.passed is False]
    if failed:
        for check in failed:
            _print_check(check)
        raise ReleaseUsage(f"release {release.version} is not published: run `hipflex-cds release check {folder}`")
    new = publish(store, release)
    print(f"{'published' if new else 'already published:'} {release.version} ({release.content_hash[:12]}), a "
          f"draft: make it active with `hipflex-cds release activate {release.version}`, or try it silently with "
          f"`hipflex-cds release shadow {release.version}`")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    try:
        active_dir, active_version = active_content(settings, store)
        active = Pipeline.for_content(settings, active_dir, cache=False)
        card = store.issued(args.card.lower())
        if card is None:
            raise ReleaseUsage(f"no issued card {args.card}")
        own = active if card.release_version in (None, active_version) else Pipeline.for_content(
            settings, materialise(store, card.release_version, settings), cache=False)
        result = replay(store, args.card, own, active)
    except (ReleaseRefused, HipflexError) as exc:
        raise ReleaseUsage(str(exc)) from None
    finally:
        store.close()
    _print_replay(result, current_active=active_version)
    return 0 if result.same_as_issued else 1


def _print_replay(result: Replay, current_active: str) -> None:
    card = result.card
    print(f"Card {card.card_uuid}: {result.key}, made by {', '.join(r.label for r in card.rules if r.recommends)} "
          f"under release {card.release_version or '(unreleased)'}, decided as of {result.as_of}")
    print(_redecided("its own release", result.own))
    print("  the same card again" if result.same_as_issued else
          "  DIFFERENT: the card's own release no longer gives this card (the snapshot or the engine changed)")
    print(_redecided(f"the active release {current_active}", result.active))
    gained = sorted(set(result.active.cards) - set(result.own.cards))
    lost = sorted(set(result.own.cards) - set(result.active.cards))
    print("  the same cards" if not gained and not lost else
          "  would differ: " + "; ".join([*(f"gains {g}" for g in gained), *(f"loses {x}" for x in lost)]))
    if result.changes is not None:
        _print_changes(result.changes)


def _redecided(label: str, decided: Redecided) -> str:
    cards = ", ".join(f"{c} (by {', '.join(decided.makers.get(c, []))})" for c in decided.cards) or "no cards"
    return f"Under {label}: {cards}"

