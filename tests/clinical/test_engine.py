"""The durable_rules engine agrees with the plain-Python reference, stays correct under
concurrency, and fails closed instead of returning partial results."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import durable_rules_engine
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import from_json, to_json

from cds.clinical.engine import DurableEngine, EngineBusy, EngineError, fnv1a32
from cds.clinical.outcome import Collector, Evaluation
from cds.clinical.reference_engine import evaluate_reference
from cds.content.facts import InputFact, PainScoreFact, RecordsCheckedFact
from cds.content.files import ContentError
from cds.content.rules import RuleSet, load_rules
from cds.content.terminology import Terminology
from tests.support.builders import GRADES, Facts, threshold_rules

F = Facts
SIDES = ("left", "right")


def summary(result: Evaluation) -> dict[str, Any]:
    """Everything an evaluation decides, independent of firing order."""
    def items(xs: list[Any]) -> set[tuple[Any, ...]]:
        return {(x.name, x.side, frozenset(r.id for r in x.rules), frozenset(x.basis)) for x in xs}
    return {"findings": items(result.findings), "cards": items(result.recommendations),
            "suppressed": items(result.suppressed)}


@st.composite
def patients(draw: st.DrawFn) -> list[InputFact]:
    out: list[InputFact] = []
    if draw(st.booleans()):
        out += F.adult(draw(st.integers(10, 70)), draw(st.sampled_from(["practitioner", "patient"])))
    for side in SIDES:
        if draw(st.booleans()):
            out.append(F.mmt(side, draw(st.sampled_from(GRADES))))
        if draw(st.booleans()):
            out.append(F.mmt(side, draw(st.sampled_from(GRADES)), standard=True))
        if draw(st.booleans()):
            out.append(F.hyperextension(side, draw(st.sampled_from([0, 4, 4.9, 5, 8, 10, 10.5, 20]))))
        if draw(st.booleans()):
            out.append(F.gait(side, draw(st.booleans())))
        if draw(st.booleans()):
            out.append(F.pain(side, draw(st.sampled_from(["peripatellar", "patella", "hip", "knee"]))))
        if draw(st.integers(0, 4)) == 0:
            out.append(F.pfp(side))
        if draw(st.integers(0, 3)) == 0:
            out.append(F.hhd(side, 100))
    if draw(st.booleans()):
        out.append(F.asymmetry(draw(st.sampled_from(SIDES)), draw(st.sampled_from([0, 2, 9.99, 10, 14.99, 15, 30]))))
    if draw(st.integers(0, 5)) == 0:
        out.append(F.red_flag())
    if draw(st.integers(0, 5)) == 0:
        out.append(F.referral())
    return out


@pytest.fixture(scope="module")
def engine(ruleset: RuleSet) -> DurableEngine:
    return DurableEngine(ruleset, name="test_engine")


@settings(max_examples=400, deadline=None)
@given(patients())
def test_durable_rules_agrees_with_reference(engine: DurableEngine, ruleset: RuleSet,
                                             facts: list[InputFact]) -> None:
    assert summary(engine.evaluate(facts)) == summary(evaluate_reference(ruleset, facts))


def test_concurrent_evaluations_match_single_threaded(engine: DurableEngine) -> None:
    """8 threads x 2,000 evaluations of mixed patients, each identical to its serial result."""
    rng = random.Random(7)
    cases = _mixed_cases(rng)
    serial = [summary(engine.evaluate(c)) for c in cases]
    jobs = [i % len(cases) for i in range(8 * 2000)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: summary(engine.evaluate(cases[i])), jobs))
    mismatches = [i for i, r in zip(jobs, results, strict=True) if r != serial[i]]
    assert mismatches == []


def _mixed_cases(rng: random.Random) -> list[list[InputFact]]:
    cases: list[list[InputFact]] = []
    for _ in range(40):
        side, other = rng.sample(SIDES, 2)
        case: list[InputFact] = [*F.adult(rng.choice([12, 30, 65]))]
        case.append(F.pain(rng.choice([side, other])))
        case.append(F.mmt(side, rng.choice(GRADES)))
        if rng.random() < 0.5:
            case.append(F.hyperextension(side, rng.choice([3, 6, 12])))
        if rng.random() < 0.3:
            case.append(F.asymmetry(rng.choice(SIDES), rng.choice([2, 12, 20])))
        if rng.random() < 0.15:
            case.append(F.red_flag())
        cases.append(case)
    assert len({repr(summary_key(c)) for c in cases}) > 10  # the mix is really mixed
    return cases


def summary_key(case: list[InputFact]) -> list[str]:
    return sorted(f.model_dump_json() for f in case)


def test_session_ids_do_not_collide_under_the_engine_hash() -> None:
    sids = [f"s{i}" for i in range(1000)]
    assert len({fnv1a32(s) for s in sids}) == 1000
    assert fnv1a32("a") == 0xE40C292C  # published FNV-1a 32 test vector


def test_many_sequential_sessions_do_not_leak(engine: DurableEngine) -> None:
    """durable_rules dies at 1,025 live sessions: every evaluation must delete its session."""
    facts = [*F.adult(), F.pain("right"), F.mmt("right", "4")]
    for _ in range(1500):
        assert [r.name for r in engine.evaluate(facts).recommendations] == ["hip-strengthening"]


def test_action_failure_fails_the_evaluation_closed(engine: DurableEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """durable_rules swallows exceptions raised in actions; the adapter must not."""
    def boom(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Collector, "apply", boom)
    with pytest.raises(EngineError, match="boom"):
        engine.evaluate([*F.adult(), F.pain("right"), F.mmt("right", "4")])
    monkeypatch.undo()
    assert [r.name for r in engine.evaluate([*F.adult(), F.pain("right"), F.mmt("right", "4")]).recommendations] \
        == ["hip-strengthening"]


def test_exhausted_session_pool_answers_busy(ruleset: RuleSet) -> None:
    engine = DurableEngine(ruleset, pool_size=1, name="test_busy")
    engine._sids.get()
    with pytest.raises(EngineBusy):
        engine.evaluate(F.adult(), timeout=0.05)


def test_a_stage_of_more_rules_than_one_marker_can_join_still_evaluates(tmp_path: Path,
                                                                         terminology: Terminology) -> None:
    """durable_rules joins one alpha node to at most 256 rules (error 108); markers are sharded per 200."""
    ruleset = load_rules(threshold_rules(tmp_path, 400), terminology)
    assert len(ruleset.compiled) == 800
    facts = [*Facts.adult(), Facts.hyperextension("left", 12.0), Facts.hyperextension("right", 3.0)]
    result = DurableEngine(ruleset, pool_size=2).evaluate(facts)
    assert result.finding_names() == evaluate_reference(ruleset, facts).finding_names()
    assert result.finding_names() == {("over-120", "left"), ("over-30", "right")}


@pytest.mark.parametrize(("count", "op", "message"), [
    (501, "equals", r"rule T500: more than 500 different conditions on fact knee-hyperextension"),
    (61, "at_least", r"rule T60: more than 60 different range conditions on fact knee-hyperextension"),
])
def test_more_conditions_on_one_input_than_the_engine_can_run_are_refused(
        tmp_path: Path, terminology: Terminology, count: int, op: str, message: str) -> None:
    """durable_rules hangs building 520 tests under one node, and fails a fact meeting more than 64 at once: the
    engine refuses such a rule file at start-up, naming the rule and its line."""
    path = threshold_rules(tmp_path, count, op)
    ruleset = load_rules(path, terminology)  # the content is valid; only this engine cannot run it
    with pytest.raises(ContentError, match=message) as caught:
        DurableEngine(ruleset)
    rule = message.split(":")[0].removeprefix("rule ")
    assert caught.value.line == ruleset.lines[rule]
    assert caught.value.path == str(path)


def test_facts_no_rule_reads_are_left_out_and_change_nothing(engine: DurableEngine, ruleset: RuleSet,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A fact of a kind no condition names cannot match; it is not asserted (a JSON round trip and an exception
    each), and the evaluation is the same as the reference's, which sees every fact."""
    unread: list[InputFact] = [PainScoreFact(id="pain-score:1", score=5),
                               RecordsCheckedFact(id="records-checked", records=3, display="3 conditions")]
    assert all(("fact", f.kind) not in engine._read for f in unread)
    facts: list[InputFact] = [*F.adult(), F.pain("right"), F.mmt("right", "3"), *unread]
    asserted: list[Any] = []
    real = engine._assert

    def recorded(session: Any, fact: dict[str, Any]) -> None:
        asserted.append(fact)
        real(session, fact)

    monkeypatch.setattr(engine, "_assert", recorded)
    result = engine.evaluate(facts)
    kinds = [fact.get("kind") for fact in asserted]
    assert "pain-score" not in kinds
    assert "records-checked" not in kinds
    assert "pain-site" in kinds
    assert summary(result) == summary(evaluate_reference(ruleset, facts))
    assert result.facts == facts  # still the evaluation's facts, for the cards and explanations


def test_a_session_is_emptied_and_reused_and_no_fact_reaches_the_next_evaluation(ruleset: RuleSet) -> None:
    """One session for 300 mixed patients in turn (its state created once): each evaluation is exactly what a
    new engine gives, order of findings included, and the engine holds only the opener between them."""
    engine = DurableEngine(ruleset, pool_size=1, name="test_reuse")
    fresh = DurableEngine(ruleset, pool_size=1, name="test_fresh")
    rng = random.Random(11)
    cases = _mixed_cases(rng)
    for case in [rng.choice(cases) for _ in range(300)]:
        result = engine.evaluate(case)
        assert result == in_a_new_session(fresh, case)
        (sid,) = engine._open
        assert from_json(durable_rules_engine.get_facts(engine._handle, sid)) == [{"sid": sid, "type": "$open"}]
    assert engine.failed_sessions == 0


def test_a_session_the_engine_cannot_empty_is_deleted(ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a fact is still there after the retraction, the session is deleted rather than reused."""
    engine = DurableEngine(ruleset, pool_size=1, name="test_not_emptied")
    facts = [*F.adult(), F.pain("right"), F.mmt("right", "4")]
    real = durable_rules_engine.retract_facts

    def all_but_one(handle: int, stored: str) -> Any:
        return real(handle, to_json(from_json(stored)[:-1]).decode())

    monkeypatch.setattr(durable_rules_engine, "retract_facts", all_but_one)
    first = engine.evaluate(facts)
    assert engine._open == set()  # deleted, not kept
    monkeypatch.undo()
    other = [*F.adult(), F.pain("left"), F.mmt("left", "3")]
    assert engine.evaluate(other) == in_a_new_session(DurableEngine(ruleset, pool_size=1, name="test_fresh2"), other)
    assert first.recommendations


def in_a_new_session(engine: DurableEngine, facts: list[InputFact]) -> Evaluation:
    """An evaluation whose session is then deleted, so the next one starts from a new state."""
    result = engine.evaluate(facts)
    for sid in engine._open:
        durable_rules_engine.delete_state(engine._handle, sid)
    engine._open.clear()
    return result


def test_a_failed_evaluation_deletes_its_session(ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = DurableEngine(ruleset, pool_size=1, name="test_failed_deleted")
    facts = [*F.adult(), F.pain("right"), F.mmt("right", "4")]
    engine.evaluate(facts)
    assert len(engine._open) == 1

    def boom(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Collector, "apply", boom)
    with pytest.raises(EngineError, match="boom"):
        engine.evaluate(facts)
    assert engine._open == set()
