"""Forward chaining with durable_rules: input facts -> findings -> recommendations.

durable_rules is fast but fragile inside a server; this adapter follows the pattern of
shared/engine/durable-rules-notes.md §8, and each workaround names the hazard it avoids:
no background threads (segfault on overlapping sessions), a leased pool of hash-distinct session
ids (1,024-session limit, 32-bit sid hashing), an opener fact per session (delete of an untouched
session can segfault), guarded actions that fail the evaluation closed (action errors are
swallowed by the engine), and, in `finally`, a session either emptied of every fact it stored and checked
empty (then reused: creating a session's state is a quarter of an evaluation) or deleted.
The rules run in durable_rules' C engine (`durable_rules_engine`), driven here with the calls its Python
host makes, in the same order, without that host's per-action objects (see `_Actions`): the host has no
dispatcher thread to start or to avoid.
Stages: rules of stage n wait for a `$stage` marker fact asserted after stage n-1 has settled;
the marker comes first in each join so that `not` conditions are checked only once the facts
they negate are complete (durable_rules does not retract a match when a negated fact arrives).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import durable_rules_engine as _rete
from pydantic_core import from_json, to_json

from cds.clinical.outcome import Collector, Evaluation, RuleRef
from cds.content.facts import InputFact
from cds.content.files import ContentError
from cds.content.rules import CompiledRule, Pattern, RuleSet
from cds.errors import HipflexError

log = logging.getLogger("hipflex_cds.engine")
_OPS = {"ge": "$gte", "le": "$lte", "gt": "$gt", "lt": "$lt"}
_OPENER = "$open"
_OPENER_RULE = "$opener"
_NOT_HANDLED, _OBSERVED, _QUEUED = 1, 2, 3  # durable_rules_engine.assert_fact's result codes (0: matched)


def _encode(fact: dict[str, Any]) -> str:
    """A fact as the JSON durable_rules parses: pydantic-core's encoder, a third of the json module's time for
    these small flat dicts (every input fact, finding and marker of every evaluation passes through here)."""
    return to_json(fact).decode()


class EngineError(HipflexError):
    """The rules could not be evaluated; no partial result is returned (fail closed)."""


class EngineBusy(EngineError):
    """Every engine session is in use; the caller should answer 503."""


def fnv1a32(text: str) -> int:
    """The hash durable_rules uses to identify sessions (sids must not collide under it)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _condition(pattern: Pattern) -> dict[str, Any]:
    terms: list[dict[str, Any]] = [{"type": pattern.type}, {"kind": pattern.kind}]
    if pattern.side is not None:
        terms.append({"side": pattern.side})
    for test in pattern.tests:
        if test.op == "eq":
            terms.append({test.prop: test.value})
        else:
            terms.append({_OPS[test.op]: {test.prop: test.value}})
    return {"$and": terms}


MARKER_SHARD = 200  # durable_rules links one alpha node to at most 256 joins (BETA_LIST_LENGTH, error 108)


def marker_shards(rules: Sequence[CompiledRule]) -> dict[str, int]:
    """The marker shard of each rule that has a `not`: rules of a stage share a marker fact in groups of
    MARKER_SHARD, so a stage may hold any number of rules (one marker node for all of them stops at 256)."""
    shard: dict[str, int] = {}
    for stage in {r.stage for r in rules}:
        for index, rule in enumerate(r for r in rules if r.stage == stage and r.negatives):
            shard[rule.key] = index // MARKER_SHARD
    return shard


def to_durable(rule: CompiledRule, shard: int | None) -> dict[str, Any]:
    """One compiled rule as durable_rules JSON: marker first, positives, then negations.

    Only a rule with a `not` waits for its stage marker: a rule of positive conditions alone may fire as
    soon as its facts exist (positive matches never go away), and joining it to a marker would cost every
    evaluation one activation per rule, matched or not.
    """
    terms: list[dict[str, Any]] = []
    if shard is not None:
        terms.append({"stage": {"$and": [{"type": "$stage"}, {"n": rule.stage}, {"shard": shard}]}})
    terms += [{f"p{i}": _condition(p)} for i, p in enumerate(rule.positives)]
    terms += [{f"n{i}$not": _condition(p)} for i, p in enumerate(rule.negatives)]
    return {"all": terms}  # its action is found by the rule's key


ENGINE_BRANCH_LIMIT = 500  # durable_rules: one alpha node holds 512 children; past that, start-up never ends
ENGINE_RANGE_LIMIT = 60  # durable_rules: a fact may match at most 64 alpha children at once (error 303)


def check_engine_limits(ruleset: RuleSet) -> None:
    """Refuse a rule file durable_rules cannot run, instead of hanging or failing at the first patient:
    more than ~512 different first tests on one fact kind and side hang ruleset creation (measured: 520 do,
    500 do not), and a fact that satisfies more than 64 range tests at one node aborts evaluation."""
    def fail(rule_id: str, reason: str) -> ContentError:
        return ContentError(ruleset.path, ruleset.lines.get(rule_id), f"rule {rule_id}: {reason}")

    branches: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    ranges: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for rule in ruleset.compiled:
        for pattern in rule.patterns:
            node = (pattern.type, pattern.kind, str(pattern.side))
            test = pattern.tests[0] if pattern.tests else None
            child = (test.prop, test.op, repr(test.value)) if test else ("",)
            for parent, branch in (((pattern.type,), (pattern.kind,)), (node, child)):
                branches.setdefault(parent, set()).add(branch)
                if len(branches[parent]) > ENGINE_BRANCH_LIMIT:
                    raise fail(rule.rule_id, f"more than {ENGINE_BRANCH_LIMIT} different conditions on "
                               f"{' '.join(parent[:2])}: the engine cannot hold that many; use shared thresholds")
            if test is not None and test.op != "eq":
                ranges.setdefault(node, set()).add(child)
                if len(ranges[node]) > ENGINE_RANGE_LIMIT:
                    raise fail(rule.rule_id, f"more than {ENGINE_RANGE_LIMIT} different range conditions on "
                               f"{' '.join(node[:2])}: one value could meet them all, which the engine cannot "
                               "evaluate; use fewer thresholds (named parameters can be shared)")


class _Session:
    """One evaluation: its leased sid, the ruleset's engine handle, what its actions found, and every fact the
    engine kept (as asserted), so the session can be emptied for the next evaluation."""

    def __init__(self, facts: list[InputFact], sid: str, handle: int) -> None:
        self.collector = Collector(facts)
        self.sid, self.handle = sid, handle
        self.errors: list[str] = []
        self.kept: list[str] = []  # as asserted
        self.markers: list[str] = []

    def keep(self, encoded: str, code: int, *, marker: bool = False) -> None:
        """Note a fact the engine stored, to be retracted (one no rule reads, or a duplicate, is not stored)."""
        if code not in (_NOT_HANDLED, _OBSERVED):
            (self.markers if marker else self.kept).append(encoded)


class _Actions:
    """Each rule's action, called with the session and the matched facts as durable_rules' C engine hands them
    over. durable_rules' own Python host wraps every action in Closure, Content and Promise objects, reads the
    clock three times and builds an exception (with a JSON dump of the fact) for every fact that matches nothing:
    that glue, not the matcher, was most of an evaluation. The C calls are the same, in the same order."""

    def __init__(self, rules: dict[str, CompiledRule], read: frozenset[tuple[str, str]]) -> None:
        self._read = read
        self._run: dict[str, Callable[[_Session, dict[str, Any]], None]] = {
            key: self._action(rule) for key, rule in rules.items()}
        self._run[_OPENER_RULE] = lambda _session, _message: None

    def __call__(self, name: str, session: _Session, message: dict[str, Any]) -> None:
        self._run[name](session, message)

    def _action(self, rule: CompiledRule) -> Callable[[_Session, dict[str, Any]], None]:
        ref = RuleRef(id=rule.rule_id, version=rule.version)
        effects = [(e.verb, e.name, e.side) for e in rule.effects]
        aliases = [f"p{i}" for i in range(len(rule.positives))]
        read = self._read

        def act(session: _Session, message: dict[str, Any]) -> None:
            try:
                basis = [str(message[alias]["id"]) for alias in aliases]
                for fact in session.collector.apply(ref, effects, basis):
                    if (fact["type"], fact["kind"]) not in read:
                        continue  # a finding no rule uses as a condition is recorded but has nowhere to go
                    fact["sid"] = session.sid
                    encoded = _encode(fact)
                    outcome = _rete.assert_fact(session.handle, encoded)
                    session.keep(encoded, outcome[0])
                    if outcome[0] == _OBSERVED:
                        raise EngineError(f"duplicate fact {json.dumps(fact['id'])}")
            except Exception as exc:  # noqa: BLE001 -- an action's error is recorded: the evaluation fails closed
                session.errors.append(f"{rule.key}: {exc!r}")

        return act


# Sessions in the pool. A service process decides ordinary calls on its event loop and at most one large call
# in a thread (HookCalls), so at most two evaluations overlap, plus the shadow release's own engine; the pool is
# the stock of session ids for those and of fresh ones that replace failed ones, not a concurrency guard.
POOL_SIZE = 4


class DurableEngine:
    """Evaluates a RuleSet with durable_rules; safe to call from many threads at once."""

    def __init__(self, ruleset: RuleSet, *, pool_size: int = POOL_SIZE, name: str = "knee_hip") -> None:
        check_engine_limits(ruleset)  # before durable_rules sees a ruleset it would hang on
        self.ruleset, self.name = ruleset, name
        self._rules = {r.key: r for r in ruleset.compiled}
        shards = marker_shards(ruleset.compiled)
        self._markers = sorted({(r.stage, shards[r.key]) for r in ruleset.compiled if r.key in shards})
        definition: dict[str, Any] = {r.key: to_durable(r, shards.get(r.key)) for r in ruleset.compiled}
        definition[_OPENER_RULE] = {"all": [{"m": {"type": _OPENER}}]}
        # What some rule's condition reads, by (type, kind): a fact of any other kind cannot match anything, so it
        # is not asserted (each unmatched assert costs the engine a JSON round trip and an exception).
        self._read = frozenset((p.type, p.kind) for r in ruleset.compiled for p in r.patterns)
        self._actions = _Actions(self._rules, self._read)
        self._handle: int = _rete.create_ruleset(name, json.dumps(definition, ensure_ascii=False))
        # last in, first out: one evaluation at a time keeps reusing one session (each live one holds about
        # 2.5 MB), and the others are created only when evaluations overlap
        self._sids: queue.LifoQueue[str] = queue.LifoQueue()
        self._hashes: set[int] = set()
        self._names = itertools.count()
        self._minting = threading.Lock()
        self.failed_sessions = 0  # session ids retired after a failure and replaced; read by /metrics
        self._open: set[str] = set()  # sessions emptied after an evaluation, their opener still in place
        for _ in range(pool_size):
            self._sids.put(self._new_sid())

    def _new_sid(self) -> str:
        """A session id whose FNV-1a hash no other id of this engine has (durable_rules keys sessions by it)."""
        with self._minting:
            while True:
                sid = f"s{next(self._names)}"
                if fnv1a32(sid) not in self._hashes:
                    self._hashes.add(fnv1a32(sid))
                    return sid

    def evaluate(self, facts: list[InputFact], *, timeout: float = 5.0) -> Evaluation:
        """Run all stages on `facts`; raises EngineError rather than return a partial result."""
        try:
            sid = self._sids.get(timeout=timeout)
        except queue.Empty:
            raise EngineBusy("all rule-engine sessions are busy") from None
        session = _Session(facts, sid, self._handle)
        healthy = False
        try:
            self._run(session, facts)
            healthy = True
        finally:
            self._sids.put(sid if self._release(session, healthy) else self._replace(sid))
        if session.errors:
            raise EngineError("; ".join(session.errors))
        return session.collector.result()

    def _run(self, session: _Session, facts: list[InputFact]) -> None:
        """The opener, each input fact, then each stage marker.

        One assert per fact, not one batch: a batch is cheaper (about 10 % of an evaluation) but durable_rules
        then runs the matched actions in its own order, and the findings' order (firing order, which the CLI,
        pages and explanations show) would change with it."""
        sid = session.sid
        if sid not in self._open:
            self._assert(session, {"sid": sid, "type": _OPENER})
        for fact in facts:
            if ("fact", fact.kind) in self._read:
                self._assert(session, {**fact.engine_fields(), "sid": sid})
        for stage, shard in self._markers:
            self._assert(session, {"sid": sid, "id": f"$stage{stage}.{shard}", "type": "$stage",
                                   "n": stage, "shard": shard})

    def _assert(self, session: _Session, fact: dict[str, Any]) -> None:
        """One fact, then the actions it makes ready, one after another, as durable_rules' host runs them: an
        action's own asserts only queue what they match, and `complete_and_start_action` hands over the next.
        What the engine stores is noted, to be retracted (the opener stays)."""
        try:
            encoded = _encode(fact)
            code, state = _rete.assert_fact(self._handle, encoded)
            if fact["type"] != _OPENER:
                session.keep(encoded, code, marker=fact["type"] == "$stage")
            if code == _NOT_HANDLED:
                return  # no rule looks at this fact: normal
            if code == _OBSERVED:
                session.errors.append(f"duplicate fact {json.dumps(fact.get('id'))}")
                return
            self._run_actions(session, 0 if code == _QUEUED else state)
        except Exception as exc:  # noqa: BLE001 -- the C engine's own limits (e.g. error 303): fail closed
            session.errors.append(f"engine refused fact {json.dumps(fact.get('id'))}: {exc}")

    def _run_actions(self, session: _Session, state: int) -> None:
        started = _rete.start_action_for_state(self._handle, state)
        if not started:
            return
        session_state, ready = started[0], from_json(started[1])
        while ready:
            name, message = next(iter(ready.items()))
            self._actions(name, session, message)
            _rete.update_state(self._handle, session_state)  # unchanged: no action writes the session state
            following = _rete.complete_and_start_action(self._handle, state)
            ready = from_json(following) if following else None

    def _release(self, session: _Session, healthy: bool) -> bool:
        """Empty the session for the next evaluation, or delete it; False when its id must be retired.

        Creating a session's state is most of what durable_rules spends outside matching (it zeroes the frame
        indexes of every join of the ruleset: 88 µs of a 380 µs evaluation, measured in a slow hour), so a session that
        evaluated cleanly is kept, and every fact it stored is retracted: stage markers first, so no rule with a
        `not` can complete while the others go, then the rest in one call. It is reused only if the engine then
        holds nothing but the opener and has no action ready; anything else (an error, a fact the engine did
        not have, an action made ready) deletes the session as before, and no fact of one evaluation can reach
        the next."""
        sid = session.sid
        if healthy and not session.errors and self._emptied(session):
            self._open.add(sid)
            return True
        self._open.discard(sid)
        return self._close(sid) and healthy

    def _emptied(self, session: _Session) -> bool:
        try:
            stored = session.markers + session.kept
            if stored:
                code, state = _rete.retract_facts(self._handle, "[" + ",".join(stored) + "]")
                if code != 0 or _rete.start_action_for_state(self._handle, state):
                    return False
            left = from_json(_rete.get_facts(self._handle, session.sid))
        except Exception:  # noqa: BLE001 -- whatever the C engine raises, the session is deleted instead
            return False
        return bool(left == [{"sid": session.sid, "type": _OPENER}])

    def _close(self, sid: str) -> bool:
        try:
            _rete.delete_state(self._handle, sid)
            return True
        except Exception as exc:  # noqa: BLE001 -- whatever the C engine raises, the id is retired, not reused
            log.warning("rule-engine session %s could not be deleted (%s); its id is retired", sid,
                        type(exc).__name__)
            return False

    def _replace(self, _retired: str) -> str:
        """A fresh id in place of one whose session may hold state, so the pool never shrinks."""
        self.failed_sessions += 1
        return self._new_sid()
