"""`make bench`, in-process part: one `Pipeline.decide` on P01 with new Observation ids every call and the
decision cache off, its time and where it goes (cProfile, grouped into the parts of a decision).

Run as a script (`python bench/decide.py [calls]`) it prints one JSON object and imports `cds` from
PYTHONPATH, so bench/service.py runs it twice in one bench run: on this checkout, and on a pinned copy of the
code as it was before the performance work (`git archive` of BASELINE_COMMIT), which gives "today's" figure
on the same machine in the same minute. It uses only what both versions have: Pipeline, Settings, Context
and the tests' P01 request builder.
"""

from __future__ import annotations

import copy
import cProfile
import datetime as dt
import json
import pstats
import statistics
import sys
import time
from typing import Any

from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.settings import Settings
from tests.support.builders import hook_request

TODAY = dt.date(2026, 11, 24)
# The parts of a decision, by the cumulative time of the function that does each (file, function); a part
# listed with `minus` excludes the time of those parts, which run inside it. "other" is what is left.
PARTS: list[tuple[str, tuple[str, str], tuple[str, ...]]] = [
    ("fhir.resources structure checks", ("cds/clinical/structure.py", "structure_errors"), ()),
    ("profiles, values, assembly", ("cds/clinical/validate.py", "validate"), ("fhir.resources structure checks",)),
    ("durable_rules evaluation", ("cds/clinical/engine.py", "evaluate"), ()),
    ("Evaluation.explain", ("cds/clinical/outcome.py", "explain"), ()),
    ("building the cards", ("cds/clinical/cards.py", "build"), ("Evaluation.explain",)),
    ("encoding the response", ("cds/clinical/pipeline.py", "response"), ())]


def p01_resources() -> tuple[list[dict[str, Any]], str]:
    """P01's resources as a hook call gathers them from its prefetch (the patient plus each searchset, a resource
    two searchsets both hold taken once), and its patient id."""
    prefetch = hook_request()["prefetch"]
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for value in prefetch.values():
        for resource in [e["resource"] for e in value.get("entry", [])] if value.get("resourceType") == "Bundle" \
                else [value]:
            resources.setdefault((resource["resourceType"], resource["id"]), resource)
    return list(resources.values()), str(prefetch["patient"]["id"])


def with_new_ids(resources: list[dict[str, Any]], call: int) -> list[dict[str, Any]]:
    """The same chart with every Observation id changed, as the service benchmark's wrk script does."""
    out = copy.deepcopy(resources)
    for resource in out:
        if resource.get("resourceType") == "Observation":
            resource["id"] = f"{resource['id']}-{call}"
    return out


def pipeline() -> Pipeline:
    settings = Settings()
    if hasattr(settings, "with_flat"):
        return Pipeline(settings.with_flat(decision_cache_size=0))
    return Pipeline(Settings(decision_cache_size=0))  # the pinned copy's flat settings


def prepared(count: int) -> tuple[Pipeline, Context, list[list[dict[str, Any]]]]:
    """The pipeline, P01's context, and `count` copies of its chart with new Observation ids."""
    resources, patient = p01_resources()
    context = Context(today=TODAY, patient_id=patient, user_id="Practitioner/COREPRACTITIONER1")
    return pipeline(), context, [with_new_ids(resources, i) for i in range(count)]


def run(calls: int = 400, rounds: int = 5) -> dict[str, Any]:
    """Median over rounds of ms per decide (with its response encoded, as every call does), then one profiled
    round split into PARTS."""
    decider, context, bodies = prepared(calls * (rounds + 1))
    decider.decide(bodies[-1], context)  # warm
    samples = []
    for r in range(rounds):
        start = time.perf_counter()
        for body in bodies[r * calls:(r + 1) * calls]:
            decider.decide(body, context).response()
        samples.append((time.perf_counter() - start) / calls * 1000)
    profile = cProfile.Profile()
    profile.enable()
    for body in bodies[rounds * calls:]:
        decider.decide(body, context).response()
    profile.disable()
    cards = len(decider.decide(bodies[0], context).cards)
    return {"ms_per_decide": round(statistics.median(samples), 3), "cards": cards, "resources": len(bodies[0]),
            "breakdown": breakdown(profile)}


def breakdown(profile: cProfile.Profile) -> dict[str, float]:
    """Each part's share of the profiled time."""
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    cumulative = {name: sum(cum for (filename, _, function), (_, _, _, cum, _) in stats.stats.items()  # type: ignore[attr-defined]
                            if filename.endswith(where[0]) and function == where[1])
                  for name, where, _ in PARTS}
    own = {name: cumulative[name] - sum(cumulative[m] for m in minus) for name, _, minus in PARTS}
    return {name: round(seconds / total, 3) for name, seconds in own.items()} | {
        "other": round(1 - sum(own.values()) / total, 3)}


def loop(calls: int) -> None:
    """The start-up and warm-up of `run`, then `calls` decides and nothing else (bench/instructions.py counts
    this under callgrind with and without the calls)."""
    decider, context, bodies = prepared(calls + 20)
    for body in bodies:
        decider.decide(body, context).response()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loop"]:
        loop(int(sys.argv[2]))
    else:
        print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 400)))
